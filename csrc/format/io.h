#pragma once
// Byte sources, sinks and files for the .npy/.npz code. No LibTorch here:
// this folder is compiled into both front-ends and into the fuzzers.
//
// Every read is bounds-checked against the real size of what is read; a
// short read is a torchbridge::Error naming `where` and what was being read,
// never a partial buffer.

#include <torchbridge/error.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torchbridge::format {

// The public torchbridge::IoError (<torchbridge/error.h>): errno and path.
using torchbridge::IoError;

// Throws Error("<where>: <what>").
[[noreturn]] void fail(const std::string& where, const std::string& what);

// Throws IoError("<where>: <what>: <strerror(code)>") for `path`.
[[noreturn]] void fail_errno(const std::string& where, const std::string& path,
                             const std::string& what, int code);

// `s` in double quotes, with quotes, backslashes and control bytes escaped.
std::string quote(const std::string& s);

// `where` for messages: api("npy::load", path) == "npy::load(\"path\")".
std::string api(const char* fn, const std::string& path);

// a + b, or Error when the sum does not fit in 64 bits.
uint64_t checked_add(uint64_t a, uint64_t b, const std::string& where,
                     const char* what);

// Random-access bytes of known size (a file, a mapping, a buffer).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Copies [offset, offset + n) to `dst`; Error (naming `what`) when the
  // range is not inside the source.
  virtual void read(uint64_t offset, void* dst, size_t n,
                    const char* what) const = 0;
  // The bytes themselves when they are in memory, else nullptr.
  virtual const uint8_t* data() const { return nullptr; }
  const std::string& where() const { return where_; }

 protected:
  explicit ByteSource(std::string where) : where_(std::move(where)) {}
  // Throws the truncation error read() gives for a range past the end.
  void check_range(uint64_t offset, size_t n, const char* what) const;

 private:
  std::string where_;
};

// Bytes in memory, not owned.
class MemorySource final : public ByteSource {
 public:
  MemorySource(const void* data, size_t size, std::string where)
      : ByteSource(std::move(where)),
        data_(static_cast<const uint8_t*>(data)),
        size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, size_t n,
            const char* what) const override;
  const uint8_t* data() const override { return data_; }

 private:
  const uint8_t* data_;
  size_t size_;
};

// A regular file opened for reading (pread, so one FileSource may serve
// several readers). The path is opened once, with O_NONBLOCK so that a FIFO
// without a writer cannot block open(); anything but a regular file is then
// refused: a directory with IoError(EISDIR), a FIFO, socket or device with
// IoError(EINVAL) saying what it is and what to do instead. Other failures
// to open are IoError with the OS's errno.
class FileSource final : public ByteSource {
 public:
  FileSource(const std::string& path, std::string where);
  // Takes over `other`'s open file under a new `where` (once the caller
  // knows which entry point reads it: npy::load or npz::load).
  FileSource(FileSource&& other, std::string where);
  ~FileSource() override;
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, size_t n,
            const char* what) const override;
  int fd() const { return fd_; }
  // The path it was opened by (what IoError::path() reports).
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// A private (copy-on-write) mapping of a whole file: readable and writable,
// and writes never reach the file. Unmapped by the destructor.
class Mapping final : public ByteSource {
 public:
  // Maps `file`, which must not be empty.
  explicit Mapping(const FileSource& file);
  ~Mapping() override;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, size_t n,
            const char* what) const override;
  const uint8_t* data() const override { return base_; }
  uint8_t* mutable_data() const { return base_; }

 private:
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

// Sequential bytes: reads exactly what is asked or throws.
class Stream {
 public:
  virtual ~Stream() = default;
  // Fills `dst` with the next `n` bytes; Error naming `what` when fewer
  // remain.
  virtual void read(void* dst, size_t n, const char* what) = 0;
  // How many bytes are left (for a compressed zip member: as declared).
  virtual uint64_t remaining() const = 0;
  // Bytes consumed so far.
  virtual uint64_t position() const = 0;
};

// A Stream over a ByteSource from `offset` to its end.
class SourceStream final : public Stream {
 public:
  SourceStream(const ByteSource& source, uint64_t offset)
      : source_(source), pos_(offset), start_(offset) {}
  void read(void* dst, size_t n, const char* what) override;
  uint64_t remaining() const override;
  uint64_t position() const override { return pos_ - start_; }

 private:
  const ByteSource& source_;
  uint64_t pos_;
  uint64_t start_;
};

// Where written bytes go: a file or a buffer.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(const void* data, size_t n) = 0;
  // Overwrites bytes already written (to patch a header).
  virtual void write_at(uint64_t offset, const void* data, size_t n) = 0;
  // Bytes written so far.
  virtual uint64_t offset() const = 0;
};

class MemorySink final : public Sink {
 public:
  void write(const void* data, size_t n) override;
  void write_at(uint64_t offset, const void* data, size_t n) override;
  uint64_t offset() const override { return bytes.size(); }
  std::vector<uint8_t> bytes;
};

// Writes `path` safely. The rules, checked before anything is written:
// - symbolic links are followed to the final target (which may not exist
//   yet); the links stay, the target gets the new bytes;
// - an existing target must be a regular file: a directory is IoError
//   (EISDIR), a FIFO, socket or device IoError(EINVAL) (replacing it with a
//   regular file, as a rename would, is never what the caller meant);
// - an existing target we may not write (access(W_OK) fails, e.g. mode
//   0444 for a non-root user) is IoError(EACCES), as numpy.save's open()
//   gives.
// The bytes go to a temporary ".tbXXXXXX.tmp" in the target's directory
// (short, so any name the file system takes works), removed on any error.
// commit() then renames it over the target, keeping an existing file's
// permission bits (and owner, where allowed): readers, and tensors mapped
// from the old file with mmap = true, never see a partial or truncated file
// (truncating a file under a live mapping kills the process with SIGBUS).
// A target with several hard links is instead rewritten in place by
// commit(), as numpy.save does, so every link sees the new data: the
// temporary is filled first (a failure before commit leaves the target
// untouched), then copied over the target and the target truncated to the
// new size. That copy is not atomic, and a tensor mapped from a hard-linked
// file sees the new bytes (and SIGBUS past a shrunken end).
class AtomicFile final : public Sink {
 public:
  AtomicFile(const std::string& path, std::string where);
  ~AtomicFile() override;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n) override;
  void write_at(uint64_t offset, const void* data, size_t n) override;
  uint64_t offset() const override { return offset_; }
  // Flushes and moves the bytes into place (rename, or the in-place copy).
  void commit();
  // The file written: `path` with its symbolic links resolved.
  const std::string& target() const { return target_; }

 private:
  void flush();
  void copy_in_place();
  [[noreturn]] void fail_io(const std::string& what, int code) const;
  std::string where_;
  std::string path_;  // as given (IoError::path())
  std::string target_;
  std::string temp_;
  int fd_ = -1;          // the temporary
  int in_place_fd_ = -1; // a hard-linked target, rewritten by commit()
  uint64_t offset_ = 0;  // logical size, buffered bytes included
  std::vector<uint8_t> buffer_;
};

}  // namespace torchbridge::format
