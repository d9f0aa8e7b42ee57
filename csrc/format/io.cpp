#include "io.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
[[noreturn]] void fail_not_regular(const std::string& where, mode_t mode,
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
  throw IoError(where + ": is " + kind + ", not a regular file" + why, EINVAL);
}

}  // namespace

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

void fail_errno(const std::string& where, const std::string& what, int code) {
  throw IoError(where + ": " + what + ": " + std::strerror(code), code);
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
    : ByteSource(std::move(where)) {
  // Checked before opening too: opening some devices acts (a tape rewinds,
  // a watchdog arms). The fstat below is the check that counts.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) &&
      !S_ISDIR(st.st_mode)) {
    fail_not_regular(this->where(), st.st_mode, false);
  }
  // O_NONBLOCK: a FIFO without a writer would block open() forever.
  do {
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) fail_errno(this->where(), "cannot open the file", errno);
  // A throwing constructor runs no destructor: close before each throw.
  auto close_fd = [&] {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    return e;
  };
  if (::fstat(fd_, &st) != 0) {
    fail_errno(this->where(), "cannot stat the file", close_fd());
  }
  if (S_ISDIR(st.st_mode)) {
    close_fd();
    fail_errno(this->where(), "cannot open the file", EISDIR);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fail(this->where(), "is not a regular file (a pipe, socket or device "
                        "cannot be loaded: the loader needs the file's size)");
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

FileSource::FileSource(FileSource&& other, std::string where)
    : ByteSource(std::move(where)), fd_(other.fd_), size_(other.size_) {
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
      fail_errno(where(), "cannot read " + std::string(what), errno);
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
  if (p == MAP_FAILED) fail_errno(where(), "cannot map the file", errno);
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

void write_all(int fd, const uint8_t* p, size_t n, const std::string& where) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n < kMaxIo ? n : kMaxIo);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(where, "cannot write the file", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string resolve_target(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    // Replace the file the link names, as open(O_TRUNC) would, not the link.
    if (char* real = ::realpath(path.c_str(), nullptr)) {
      std::string out(real);
      std::free(real);
      return out;
    }
  }
  return path;
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path, std::string where)
    : where_(std::move(where)), target_(resolve_target(path)) {
  static std::atomic<unsigned> counter{0};
  struct stat st;
  const bool exists = ::stat(target_.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) {
    fail_errno(where_, "cannot create the file", EISDIR);
  }
  temp_ = target_ + ".tmp" + std::to_string(::getpid()) + "." +
          std::to_string(counter++);
  do {
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) {
    const int e = errno;
    temp_.clear();
    fail_errno(where_, "cannot create the file", e);
  }
  if (exists && S_ISREG(st.st_mode)) {
    // Best effort: a file we may not chmod keeps the default mode.
    (void)::fchmod(fd_, st.st_mode & 07777);
  }
  buffer_.reserve(kBufferSize);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::flush() {
  write_all(fd_, buffer_.data(), buffer_.size(), where_);
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
      write_all(fd_, p, n, where_);
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
      fail_errno(where_, "cannot write the file", errno);
    }
    p += w;
    offset += static_cast<uint64_t>(w);
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  flush();
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail_errno(where_, "cannot write the file", errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    fail_errno(where_, "cannot move the new file into place", errno);
  }
  temp_.clear();
}

}  // namespace torchbridge::format
