#pragma once
// The .npy format (NumPy's numpy/lib/format.py, versions 1.0, 2.0 and 3.0)
// without LibTorch: parses a header into dtype, shape, order and data offset,
// and writes headers byte-identical to numpy.save's.
//
//   \x93NUMPY <major> <minor> <header_len: u16 (1.0) or u32 (2.0, 3.0)>
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n
//   <data>
//
// The header is a Python dict literal. It is parsed by a strict grammar, not
// evaluated: only the three keys, each once; 'descr' a plain dtype string;
// 'fortran_order' True/False; 'shape' a tuple of non-negative ints. Its length
// is bounded like NumPy's max_header_size (10000 bytes), dims and sizes are
// checked for overflow, and the data must fit in what the file holds.

#include "dtypes.h"
#include "io.h"

#include <cstdint>
#include <string>
#include <vector>

namespace torchbridge::format {

size_t itemsize(DType t);
// "float32", as NumPy and torch name it.
const char* dtype_name(DType t);
// The header's descr for `t` in native byte order, as numpy.save writes it:
// "<f4" on little-endian machines, "|b1" for one-byte types.
std::string native_descr(DType t);

// NumPy limits the header length to 10000 bytes (max_header_size) because
// the header is evaluated; torchbridge keeps the same bound.
constexpr uint64_t kMaxHeaderLen = 10000;
// NumPy 2's maximum rank (NPY_MAXDIMS).
constexpr size_t kMaxRank = 64;
// "\x93NUMPY"
constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

struct NpyHeader {
  uint8_t major = 1;
  uint8_t minor = 0;
  DType dtype = DType::kFloat32;
  // The data is in the other byte order than this machine's (never true for
  // one-byte types).
  bool byteswapped = false;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  // Elements and data bytes; both fit in int64 (checked), as do the strides
  // of either order.
  int64_t numel = 1;
  uint64_t nbytes = 0;
  // Where the data starts, from the first byte of the magic.
  uint64_t data_offset = 0;
};

// How much data a header may promise relative to what the stream holds.
enum class DataFit {
  kAtLeast,  // a file: bytes after the data are ignored, as np.load does
  kExactly,  // a zip member: its size is declared, it must match
};

// Reads and validates the magic, version and header from `in`, leaving it at
// the first data byte, and checks that in.remaining() holds the data. Every
// fault throws Error naming `where` and the fault.
NpyHeader read_npy_header(Stream& in, const std::string& where,
                          DataFit fit = DataFit::kAtLeast);

// Parses the header text alone (after magic, version and length). Exposed
// for tests and the fuzzer; read_npy_header calls it.
void parse_header_text(const char* text, size_t len, NpyHeader& out,
                       const std::string& where);

// The bytes numpy.save writes before the data of an array with this dtype
// (native byte order), order and shape: magic, version 1.0 (2.0 when the
// header does not fit 1.0's 16-bit length), the dict with keys sorted, the
// 21-digit growth padding NumPy leaves on the growing axis, spaces to a
// multiple of 64 bytes, and '\n'.
std::string make_npy_header(DType dtype, bool fortran_order,
                            const std::vector<int64_t>& shape);

// Reverses the byte order of `count` items of `dtype` in place (each part of
// a complex number on its own).
void byteswap(void* data, uint64_t count, DType dtype);

// Reverses the bytes of each of `n` units of `unit` bytes in place (2, 4 or
// 8; one-byte units are left as they are). `data` may be misaligned.
void swap_units(void* data, uint64_t n, size_t unit);

// True when this machine is little-endian.
constexpr bool native_little_endian() {
  return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
}

}  // namespace torchbridge::format
