// libFuzzer target: the .npy header parser (csrc/format/npy.h) on arbitrary
// bytes. Built by scripts/fuzz.sh (-DTORCHBRIDGE_FUZZ=ON, clang, ASan +
// UBSan). Every input must either parse into a header whose data lies inside
// the input, or throw torchbridge::Error; anything else (a crash, a
// sanitizer report, a broken invariant) is a finding.

#include "format/io.h"
#include "format/npy.h"

#include <cstdint>
#include <cstring>
#include <vector>

using namespace torchbridge::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MemorySource src(data, size, "fuzz.npy");
  NpyHeader h;
  try {
    SourceStream in(src, 0);
    h = read_npy_header(in, src.where());
  } catch (const torchbridge::Error&) {
    return 0;
  }
  // Invariants of an accepted header.
  if (h.data_offset > size || h.nbytes > size - h.data_offset) __builtin_trap();
  if (h.shape.size() > kMaxRank) __builtin_trap();
  uint64_t numel = 1;
  for (int64_t d : h.shape) {
    if (d < 0) __builtin_trap();
    numel *= static_cast<uint64_t>(d);
  }
  if (numel != static_cast<uint64_t>(h.numel) ||
      h.nbytes != numel * itemsize(h.dtype)) {
    __builtin_trap();
  }
  // What load does next: copy the data and swap it.
  std::vector<uint8_t> buf(data + h.data_offset, data + h.data_offset + h.nbytes);
  if (h.byteswapped) byteswap(buf.data(), numel, h.dtype);
  // The writer's header for the same array parses back to the same array.
  const std::string header = make_npy_header(h.dtype, h.fortran_order, h.shape);
  const std::string again = header + std::string(buf.begin(), buf.end());
  MemorySource src2(again.data(), again.size(), "again.npy");
  SourceStream in2(src2, 0);
  const NpyHeader h2 = read_npy_header(in2, src2.where(), DataFit::kExactly);
  if (h2.shape != h.shape || h2.dtype != h.dtype ||
      h2.fortran_order != h.fortran_order || h2.byteswapped ||
      h2.data_offset != header.size() || header.size() % 64 != 0) {
    __builtin_trap();
  }
  return 0;
}
