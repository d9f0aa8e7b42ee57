#pragma once
// NumPy's .npy and .npz files for LibTorch programs, without Python.
//
//   at::Tensor t = torchbridge::npy::load("weights.npy");
//   at::Tensor m = torchbridge::npy::load("big.npy", {.mmap = true});
//   torchbridge::npy::save("out.npy", t);
//   for (auto& [name, tensor] : torchbridge::npz::load("arrays.npz")) ...
//   torchbridge::npz::save("out.npz", {{"x", x}, {"y", y}}, {.compress = true});
//   torchbridge::Loaded any = torchbridge::load("either.npy_or.npz");
//
// dtypes: bool, int8/16/32/64, uint8/16/32/64, float16/32/64 and
// complex64/128, in either byte order; C or Fortran order; format versions
// 1.0, 2.0 and 3.0; 0-d and zero-size arrays. A Fortran-order file loads as a
// tensor with column-major strides, as NumPy gives an F-ordered array.
//
// Errors: a missing, unreadable, malformed or hostile file throws
// torchbridge::Error naming the function, the file and the fault; I/O
// failures throw its subclass torchbridge::IoError (<torchbridge/error.h>),
// which carries the path and errno. Object (pickled) arrays are refused.
// Only regular files are read: a FIFO, socket or device is refused without
// blocking (see README.md, "File safety", for these rules and save's).
// Headers are parsed, never evaluated, and bounded to 10000 bytes like
// NumPy's max_header_size; shapes are checked for overflow against the real
// file size before anything is allocated; a .npz archive's directory is
// cross-checked and each member's size and CRC-32 verified.

#include <torchbridge/error.h>

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace torchbridge {
namespace npy {

struct LoadOptions {
  // Map the file instead of reading it: the tensor is a view of the mapping,
  // no bytes are copied and loading takes the same time whatever the file's
  // size; the mapping lives as long as the tensor's storage. The mapping is
  // private (copy-on-write): the tensor is writable and writes never reach
  // the file. (A read-only mapping would crash the process on the first
  // write through the tensor, so it is not used.) Like any mapping, it
  // shows later changes other programs make to the file in pages the tensor
  // has not written, and truncating the file under it kills the process
  // with SIGBUS on access; npy::save replaces files by rename, which is safe
  // (except for a file with several hard links, rewritten in place).
  //
  // A view needs the data in native byte order and aligned to its item size
  // within the file (numpy.save aligns to 64 bytes): otherwise load throws
  // Error saying why and that mmap = false loads a copy. Bool data is
  // scanned (read, not copied) and any byte other than 0/1 is set to 1 in the
  // private mapping, so the tensor never holds invalid bools.
  bool mmap = false;
  // Data stored in the other byte order ('>f4' on x86) is swapped to native
  // on load. false keeps the file's bytes as they are (the values are then
  // byte-swapped; with mmap = true such a file becomes a view).
  bool to_native_byte_order = true;
};

// Loads the array in a .npy file. Bytes after the array's data are ignored,
// as np.load does. A .npz file is refused with a pointer to npz::load.
at::Tensor load(const std::string& path, LoadOptions options = {});

// Writes `tensor` as numpy.save would: byte-identical files (version 1.0
// header, native byte order; a Fortran-contiguous tensor is written in
// Fortran order, any other layout in C order). Any tensor with a NumPy
// dtype is accepted: on a device, requiring grad, conj/neg views, sparse.
// dtypes NumPy lacks (bfloat16, float8, complex32, quantized, ...) throw
// c10::TypeError (Python: TypeError) saying which dtype to convert to; they
// are never widened silently, so a file's dtype is always the tensor's.
// The file is written to a temporary name and renamed over `path`, so
// readers (and tensors mapped from the old file) never see a partial file.
// Symbolic links are written through (the links stay); an existing FIFO,
// socket or device is refused, as is a file this user may not write
// (EACCES, like numpy.save); a file with several hard links is rewritten in
// place so every link sees the new data (not atomic: see README.md, "File
// safety").
void save(const std::string& path, const at::Tensor& tensor);

}  // namespace npy

namespace npz {

// Name -> tensor, in archive order (the order of numpy.savez's arguments).
// Names are the member names without ".npy".
using Arrays = std::vector<std::pair<std::string, at::Tensor>>;

// Loads every array of a .npz archive (numpy.savez or savez_compressed):
// stored or deflate members, zip64 included. Every member must be a .npy
// file named "<name>.npy". With options.mmap, the archive is mapped once and
// each stored member that can be a view (native byte order, aligned data:
// npz::save aligns them, numpy.savez does not) is a view of the mapping,
// which lives as long as any such tensor; other members are read (inflated)
// into memory. Every member's CRC-32 is verified, views included: over the
// mapped bytes in place, in one pass, without a copy (so unlike npy::load's
// mapping this reads the data once). Two members whose names are equal once
// decoded (code page 437 or UTF-8) are refused, since one would be lost.
Arrays load(const std::string& path, npy::LoadOptions options = {});

struct SaveOptions {
  // Deflate each member, like numpy.savez_compressed.
  bool compress = false;
};

// Writes an archive numpy.load reads, one "<name>.npy" member per array in
// the given order, each member as npy::save would write it (same dtype
// rules). Names must be unique and free of NUL bytes ("a/b" and "" are
// allowed, as in numpy.savez). Stored
// members' data is aligned to 64 bytes, so npz::load(mmap = true) maps them
// without a copy. Written atomically like npy::save.
void save(const std::string& path, const Arrays& arrays,
          SaveOptions options = {});

}  // namespace npz

// What load() returns: the tensor of a .npy file or the arrays of a .npz
// archive, exactly what npy::load or npz::load would have returned.
// A std::variant rather than a struct holding both: exactly one is ever
// set, and std::get / std::get_if / std::visit make the caller say which
// it expects (std::get<at::Tensor> of an archive throws
// std::bad_variant_access instead of handing out an undefined tensor).
using Loaded = std::variant<at::Tensor, npz::Arrays>;

// Loads a file that may be either kind, as Python's torchbridge.load does:
// the file is opened once, its first bytes decide (zip magic, "PK\3\4" or
// the "PK\5\6" of an empty archive: npz::load's rules; anything else:
// npy::load's), and the same open file is read. `options` mean what they
// mean for npy::load and npz::load.
//
// Errors: failing to open the file is IoError naming load("path"); after
// that, errors name npy::load("path") or npz::load("path") like those
// functions. A file that is neither kind is read as .npy, so the error is
// npy::load's, naming the path and the first bytes found:
//   npy::load("notes.txt"): not a .npy file: it starts with bytes
//   6E 6F 74 20 61 20, not the magic \x93NUMPY
// (under 10 bytes, it gives the file's size instead).
Loaded load(const std::string& path, npy::LoadOptions options = {});

}  // namespace torchbridge
