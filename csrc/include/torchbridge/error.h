#pragma once
// torchbridge::Error and torchbridge::IoError, in a header of their own (no
// LibTorch) so that code without LibTorch (the .npy/.npz parsers of
// csrc/format/, their fuzzers) can throw them too.

#include <stdexcept>
#include <string>

namespace torchbridge {

// Thrown for faults outside the tensor rules (malformed files, I/O). Tensor
// rule violations throw c10::TypeError / c10::ValueError, which Python sees
// as TypeError / ValueError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file could not be opened, read, written or moved into place: the
// operating system refused (code() is its errno: ENOENT, EACCES, EISDIR,
// ENOSPC, ...), or the path names something torchbridge will not read or
// replace (a FIFO, socket or device: EINVAL). what() is
// "<function>(\"<path>\"): <what failed>: <strerror(code)>", e.g.
//   npy::load("/data/x.npy"): cannot open the file: No such file or directory
// path() is the path as the caller passed it. A file that opens but is
// malformed is a plain Error, never an IoError. Python sees IoError as the
// OSError subclass for code() (FileNotFoundError, PermissionError, ...).
//
//   try { auto t = torchbridge::npy::load(p); }
//   catch (const torchbridge::IoError& e) { if (e.code() == ENOENT) ... }
class IoError : public Error {
 public:
  IoError(const std::string& what, const std::string& path, int code)
      : Error(what), path_(path), code_(code) {}
  // The file the failed call was given.
  std::string path() const { return path_.what(); }
  // errno.
  int code() const noexcept { return code_; }

 private:
  // A runtime_error holds the path because its copy never throws (an
  // exception's copy must not); paths hold no NUL byte, so what() is whole.
  std::runtime_error path_;
  int code_;
};

}  // namespace torchbridge
