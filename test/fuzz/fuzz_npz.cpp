// libFuzzer target: the .npz (zip) reader of csrc/format/zip.h and the .npy
// header inside each member, on arbitrary bytes. Every member the directory
// accepts must lie inside the input, and reading it must give exactly its
// declared size or throw torchbridge::Error.

#include "format/io.h"
#include "format/npy.h"
#include "format/zip.h"

#include <cstdint>
#include <vector>

using namespace torchbridge::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MemorySource src(data, size, "fuzz.npz");
  std::vector<ZipMember> members;
  try {
    members = read_zip_directory(src);
  } catch (const torchbridge::Error&) {
    return 0;
  }
  std::vector<uint8_t> chunk(1 << 16);
  for (const ZipMember& m : members) {
    if (m.data_offset > size || m.compressed_size > size - m.data_offset) __builtin_trap();
    if (m.method == 0 && m.compressed_size != m.size) __builtin_trap();
    if (m.method == 8 && m.size > m.compressed_size * kMaxDeflateRatio + 64) __builtin_trap();
    // As npz::load reads a member: the .npy header, then the data.
    try {
      MemberStream in(src, m, "member");
      NpyHeader h = read_npy_header(in, "member", DataFit::kExactly);
      if (in.remaining() != h.nbytes) __builtin_trap();
      uint64_t left = h.nbytes;
      while (left > 0) {
        const size_t n = left < chunk.size() ? static_cast<size_t>(left) : chunk.size();
        in.read(chunk.data(), n, "data");
        left -= n;
      }
      in.finish();
    } catch (const torchbridge::Error&) {
    }
    // As npz::load(mmap = true) checks a member it makes a view of: the
    // CRC-32 over the bytes in place.
    try {
      MemberStream in(src, m, "member");
      in.skip(in.remaining(), "data");
      in.finish();
    } catch (const torchbridge::Error&) {
    }
    // And the raw member, whatever it holds, in odd-sized pieces.
    try {
      MemberStream in(src, m, "member");
      uint64_t got = 0;
      while (in.remaining() > 0) {
        const size_t n = in.remaining() < 4093 ? static_cast<size_t>(in.remaining()) : 4093;
        in.read(chunk.data(), n, "data");
        got += n;
      }
      in.finish();
      if (got != m.size) __builtin_trap();
    } catch (const torchbridge::Error&) {
    }
  }
  return 0;
}
