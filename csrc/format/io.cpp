#include "io.h"

#include "util.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <limits>

namespace torchbridge::format {
namespace {

// Linux moves at most 0x7ffff000 bytes per read/write call.
constexpr size_t kMaxIo = size_t{1} << 30;

const char* kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// EINVAL: Python has no OSError subclass for "wrong kind of file", and
// ESPIPE/ENODEV would each describe only some of the kinds.
[[noreturn]] void fail_not_regular(const std::string& where,
                                   const std::string& path, mode_t mode,
                                   bool writing) {
  const std::string kind = kind_of(mode);
  std::string why =
      writing
          ? "; torchbridge saves by writing a new regular file and renaming it "
            "over the old one, which would replace " + kind +
                " instead of writing into it: save to a regular file path "
                "(and copy that file there if you must)"
          : "; torchbridge loads only regular files, whose size it can take "
            "and which it can read at any offset or map: read the bytes "
            "yourself (e.g. numpy.load(io.BytesIO(data))) or copy it to a "
            "regular file first";
  throw IoError(where + ": is " + kind + ", not a regular file" + why, path,
                EINVAL);
}

}  // namespace

std::string quote(const std::string& s) { return escape(s, kQuoted); }

void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

void fail_errno(const std::string& where, const std::string& path,
                const std::string& what, int code) {
  throw IoError(where + ": " + what + ": " + std::strerror(code), path, code);
}

std::string api(const char* fn, const std::string& path) {
  return std::string(fn) + "(" + quote(path) + ")";
}

uint64_t checked_add(uint64_t a, uint64_t b, const std::string& where,
                     const char* what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    fail(where, std::string(what) + " overflows 64 bits (" + std::to_string(a) +
                    " + " + std::to_string(b) + "); the file is corrupt");
  }
  return r;
}

void ByteSource::check_range(uint64_t offset, size_t n, const char* what) const {
  if (offset > size() || n > size() - offset) {
    fail(where_, "truncated file: " + std::string(what) + " needs " +
                     std::to_string(n) + " bytes at offset " +
                     std::to_string(offset) + ", but the file has only " +
                     std::to_string(size()) + " bytes");
  }
}

void MemorySource::read(uint64_t offset, void* dst, size_t n,
                        const char* what) const {
  check_range(offset, n, what);
  if (n) std::memcpy(dst, data_ + offset, n);
}

FileSource::FileSource(const std::string& path, std::string where)
    : ByteSource(std::move(where)), path_(path) {
  // Checked before opening too: opening some devices acts (a tape rewinds,
  // a watchdog arms). The fstat below is the check that counts.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) &&
      !S_ISDIR(st.st_mode)) {
    fail_not_regular(this->where(), path, st.st_mode, false);
  }
  // O_NONBLOCK: a FIFO without a writer would block open() forever.
  do {
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) fail_errno(this->where(), path, "cannot open the file", errno);
  // A throwing constructor runs no destructor: close before each throw.
  auto close_fd = [&] {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    return e;
  };
  if (::fstat(fd_, &st) != 0) {
    fail_errno(this->where(), path, "cannot stat the file", close_fd());
  }
  if (S_ISDIR(st.st_mode)) {
    close_fd();
    fail_errno(this->where(), path, "cannot open the file", EISDIR);
  }
  if (!S_ISREG(st.st_mode)) {
    close_fd();
    fail_not_regular(this->where(), path, st.st_mode, false);
  }
  // Back to blocking reads (no effect on a regular file today, but reads
  // must never see EAGAIN).
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    fail_errno(this->where(), path, "cannot set up the file", close_fd());
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

FileSource::FileSource(FileSource&& other, std::string where)
    : ByteSource(std::move(where)),
      path_(std::move(other.path_)),
      fd_(other.fd_),
      size_(other.size_) {
  other.fd_ = -1;
}

FileSource::~FileSource() {
  if (fd_ >= 0) ::close(fd_);
}

void FileSource::read(uint64_t offset, void* dst, size_t n,
                      const char* what) const {
  check_range(offset, n, what);
  auto* out = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t got =
        ::pread(fd_, out, n < kMaxIo ? n : kMaxIo, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail_errno(where(), path_, "cannot read " + std::string(what), errno);
    }
    if (got == 0) {
      fail(where(), "the file shrank while " + std::string(what) +
                        " was being read (another program truncated it)");
    }
    out += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
}

Mapping::Mapping(const FileSource& file) : ByteSource(file.where()) {
  if (file.size() == 0) fail(where(), "cannot map an empty file");
  if (file.size() > std::numeric_limits<size_t>::max()) {
    fail(where(), "the file is too large to map on this system");
  }
  size_ = static_cast<size_t>(file.size());
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE,
                   file.fd(), 0);
  if (p == MAP_FAILED) fail_errno(where(), file.path(), "cannot map the file", errno);
  base_ = static_cast<uint8_t*>(p);
}

Mapping::~Mapping() {
  if (base_) ::munmap(base_, size_);
}

void Mapping::read(uint64_t offset, void* dst, size_t n,
                   const char* what) const {
  check_range(offset, n, what);
  if (n) std::memcpy(dst, base_ + offset, n);
}

void SourceStream::read(void* dst, size_t n, const char* what) {
  source_.read(pos_, dst, n, what);
  pos_ += n;
}

uint64_t SourceStream::remaining() const {
  return pos_ < source_.size() ? source_.size() - pos_ : 0;
}

void MemorySink::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  bytes.insert(bytes.end(), p, p + n);
}

void MemorySink::write_at(uint64_t offset, const void* data, size_t n) {
  if (offset > bytes.size() || n > bytes.size() - offset) {
    throw Error("MemorySink::write_at: range past the end");
  }
  std::memcpy(bytes.data() + offset, data, n);
}

namespace {

constexpr size_t kBufferSize = size_t{1} << 20;

void write_all(int fd, const uint8_t* p, size_t n, const std::string& where,
               const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n < kMaxIo ? n : kMaxIo);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(where, path, "cannot write the file", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// `path` with symbolic links followed to the final name, which may not
// exist (a dangling link is written through, as open(O_CREAT) does). A
// relative link is resolved against the link's own directory.
std::string resolve_links(const std::string& path, const std::string& where) {
  std::string p = path;
  for (int hops = 0;; ++hops) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    if (hops == 40) {  // the kernel's own limit (MAXSYMLINKS)
      fail_errno(where, path, "cannot follow the symbolic links of the path", ELOOP);
    }
    std::vector<char> buf(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 1);
    ssize_t n;
    while ((n = ::readlink(p.c_str(), buf.data(), buf.size())) >= 0 &&
           static_cast<size_t>(n) == buf.size()) {
      buf.resize(buf.size() * 2);  // the link grew since lstat
    }
    if (n < 0) fail_errno(where, path, "cannot read the symbolic link " + quote(p), errno);
    const std::string link(buf.data(), static_cast<size_t>(n));
    p = !link.empty() && link[0] == '/' ? link : dir_of(p) + "/" + link;
  }
}

// ".tb" + 6 random characters + ".tmp" in `dir`: 13 bytes whatever the
// target's name, so any name the file system takes can be saved.
std::string temp_name(const std::string& dir) {
  static const char kChars[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  static std::atomic<uint64_t> counter{0};
  uint8_t r[6];
  if (::getrandom(r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r)) {
    // No entropy yet: O_EXCL and the retries keep it correct anyway.
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = static_cast<uint64_t>(ts.tv_nsec) ^
                 (static_cast<uint64_t>(::getpid()) << 32) ^
                 (counter++ * 0x9E3779B97F4A7C15ull);
    for (auto& b : r) {
      b = static_cast<uint8_t>(x);
      x = (x >> 8) | (x << 56);
    }
  }
  std::string name = dir + "/.tb";
  for (uint8_t b : r) name += kChars[b % 62];
  return name + ".tmp";
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path, std::string where)
    : where_(std::move(where)),
      path_(path),
      target_(resolve_links(path, where_)) {
  struct stat st;
  const bool exists = ::lstat(target_.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    fail_io("cannot create the file", errno);
  }
  if (exists) {
    if (S_ISDIR(st.st_mode)) fail_io("cannot create the file", EISDIR);
    if (!S_ISREG(st.st_mode)) fail_not_regular(where_, path_, st.st_mode, true);
    // As numpy.save's open() would refuse it (root passes, as there).
    if (::faccessat(AT_FDCWD, target_.c_str(), W_OK, AT_EACCESS) != 0) {
      const int e = errno;
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      fail_io(std::string("the file exists and is not writable by this user "
                          "(mode ") + mode + ", owner uid " +
                  std::to_string(st.st_uid) +
                  "); make it writable (chmod u+w) or save to another path",
              e);
    }
    if (st.st_nlink > 1) {
      do {
        in_place_fd_ = ::open(target_.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
      } while (in_place_fd_ < 0 && errno == EINTR);
      if (in_place_fd_ < 0) fail_io("cannot open the file", errno);
    }
  }
  const std::string dir = dir_of(target_);
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_ = temp_name(dir);
    // A new file gets 0666 less the umask, as numpy.save's open() gives it;
    // a replacement starts private and gets the old file's bits below, so
    // nobody may open it who could not read the old file.
    fd_ = ::open(temp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                 exists ? 0600 : 0666);
    if (fd_ < 0 && (errno == EINTR || (errno == EEXIST && attempt < 100))) continue;
    if (fd_ < 0) {
      const int e = errno;
      temp_.clear();
      if (in_place_fd_ >= 0) ::close(in_place_fd_);
      in_place_fd_ = -1;
      fail_io(exists ? "cannot create a temporary file in " + quote(dir) +
                           " (the new file is written there and then moved "
                           "into place, so a failed save never leaves a "
                           "partial file)"
                     : std::string("cannot create the file"),
              e);
    }
  }
  if (exists && in_place_fd_ < 0) {
    // The replacement keeps the old file's owner (only root may give a file
    // away; otherwise it is ours) and permission bits, set-id bits only
    // when the owner was kept.
    mode_t mode = st.st_mode & 07777;
    if (::fchown(fd_, st.st_uid, st.st_gid) != 0) mode &= ~(S_ISUID | S_ISGID);
    (void)::fchmod(fd_, mode);
  }
  buffer_.reserve(kBufferSize);
}

void AtomicFile::fail_io(const std::string& what, int code) const {
  fail_errno(where_, path_, what, code);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (in_place_fd_ >= 0) ::close(in_place_fd_);
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::flush() {
  write_all(fd_, buffer_.data(), buffer_.size(), where_, path_);
  buffer_.clear();
}

void AtomicFile::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (buffer_.size() + n <= kBufferSize) {
    buffer_.insert(buffer_.end(), p, p + n);
  } else {
    flush();
    if (n < kBufferSize) {
      buffer_.insert(buffer_.end(), p, p + n);
    } else {
      write_all(fd_, p, n, where_, path_);
    }
  }
  offset_ += n;
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t n) {
  flush();
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_io("cannot write the file", errno);
    }
    p += w;
    offset += static_cast<uint64_t>(w);
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::copy_in_place() {
  // Over the old bytes from the start, then cut to the new size: the file
  // never shrinks below its new size on the way.
  if (::lseek(fd_, 0, SEEK_SET) != 0) {
    fail_io("cannot read back the temporary file", errno);
  }
  std::vector<uint8_t> chunk(kBufferSize);
  uint64_t done = 0;
  while (done < offset_) {
    const ssize_t got = ::read(fd_, chunk.data(), chunk.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      fail_io("cannot read back the temporary file", errno);
    }
    if (got == 0) fail(where_, "the temporary file shrank while being copied");
    const uint8_t* p = chunk.data();
    size_t n = static_cast<size_t>(got);
    while (n > 0) {
      const ssize_t w = ::pwrite(in_place_fd_, p, n, static_cast<off_t>(done));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail_io("cannot write the file (it may now be partly rewritten: it "
                "has several hard links, so it is written in place)",
                errno);
      }
      p += w;
      n -= static_cast<size_t>(w);
      done += static_cast<uint64_t>(w);
    }
  }
  if (::ftruncate(in_place_fd_, static_cast<off_t>(offset_)) != 0) {
    fail_io("cannot truncate the file to its new size", errno);
  }
}

void AtomicFile::commit() {
  flush();
  if (in_place_fd_ >= 0) {
    copy_in_place();
    const int fd = in_place_fd_;
    in_place_fd_ = -1;
    if (::close(fd) != 0) fail_io("cannot write the file", errno);
    return;  // the destructor removes the temporary
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail_io("cannot write the file", errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    fail_io("cannot move the new file into place", errno);
  }
  temp_.clear();
}

}  // namespace torchbridge::format
