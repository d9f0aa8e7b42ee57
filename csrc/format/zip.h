#pragma once
// The zip subset .npz archives use (numpy.savez / savez_compressed), without
// LibTorch: stored and deflate members, zip64 sizes and offsets, checked
// against the real archive size before anything is allocated.
//
// read_zip_directory() trusts nothing: the end record and the zip64 end
// record must agree, the central directory must fill exactly the bytes
// before the end record, every local header must repeat its central entry
// (name, method, CRC and sizes), member data must lie before the central
// directory and no two members may overlap (the overlapping-file zip bomb).
// A deflate member may not declare more than 1032 bytes per compressed byte
// (deflate's own maximum), so allocations stay within 1032x the archive
// size; MemberStream then inflates exactly the declared size, refuses a
// stream that ends early or runs on, and checks the CRC-32.

#include "io.h"

#include <cstdint>
#include <string>
#include <vector>

typedef struct z_stream_s z_stream;

namespace torchbridge::format {

// Deflate's maximum compression ratio: a 258-byte match in two bits.
constexpr uint64_t kMaxDeflateRatio = 1032;

struct ZipMember {
  // e.g. "weights.npy", in UTF-8 (names without the UTF-8 flag are code
  // page 437, converted as Python's zipfile does)
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;  // uncompressed
  uint64_t local_offset = 0;
  uint64_t data_offset = 0;  // first byte of the (compressed) data
};

// The archive's members in central-directory order (the order numpy.savez
// wrote them). Throws Error naming source.where() and the fault; two
// members whose names are equal once decoded (CP437 or UTF-8) are a fault,
// since a loader keyed by name would drop one of them.
std::vector<ZipMember> read_zip_directory(const ByteSource& source);

// A member's uncompressed bytes, read in order. remaining() is what the
// member declares; reading past it, a stream that ends early and corrupt
// deflate data are Errors.
class MemberStream final : public Stream {
 public:
  MemberStream(const ByteSource& source, const ZipMember& member,
               std::string where);
  ~MemberStream() override;
  MemberStream(const MemberStream&) = delete;
  MemberStream& operator=(const MemberStream&) = delete;

  void read(void* dst, size_t n, const char* what) override;
  // Consumes the next `n` bytes without handing them out, still counting
  // them into the CRC-32 that finish() checks. A stored member of a source
  // in memory (a mapping) is checksummed in place: no copy, for members
  // that npz::load makes views of.
  void skip(uint64_t n, const char* what);
  uint64_t remaining() const override { return member_.size - produced_; }
  uint64_t position() const override { return produced_; }

  // After all remaining() bytes were read: checks that the deflate stream
  // ends there (no extra output: a member may not inflate past its declared
  // size) and that the CRC-32 matches.
  void finish();

 private:
  void refill();
  const ByteSource& source_;
  ZipMember member_;
  std::string where_;
  uint64_t produced_ = 0;
  uint32_t crc_ = 0;
  // deflate only
  z_stream* zs_ = nullptr;
  uint64_t consumed_ = 0;  // compressed bytes handed to zlib
  bool ended_ = false;
  std::vector<uint8_t> inbuf_;
};

// Writes a zip archive member by member. Stored members' data starts at a
// multiple of `align` bytes in the archive (padding goes in an extra field,
// as Android's zipalign does), so a .npy member, whose own header is padded
// to 64 bytes, can be memory-mapped in place. Entries carry a fixed
// timestamp (1980-01-01), so equal inputs give equal archives. zip64
// records are written where sizes, offsets or the entry count need them, or
// everywhere with `force_zip64` (for tests).
class ZipWriter {
 public:
  ZipWriter(Sink& out, std::string where, bool force_zip64 = false);
  ~ZipWriter();
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  // Starts a member holding exactly `size` uncompressed bytes.
  void begin_member(const std::string& name, uint64_t size, bool compress,
                    uint64_t align = 64);
  void write(const void* data, size_t n);
  void end_member();
  // The central directory and end records. No member may be open.
  void finish();

 private:
  struct Entry {
    std::string name;
    uint16_t method;
    uint32_t crc32;
    uint64_t compressed_size;
    uint64_t size;
    uint64_t local_offset;
    bool zip64_local;
  };
  void deflate_chunk(const uint8_t* data, size_t n, int flush);

  Sink& out_;
  std::string where_;
  bool force_zip64_;
  std::vector<Entry> entries_;
  bool open_ = false;
  Entry cur_{};
  uint64_t written_ = 0;
  uint64_t data_start_ = 0;
  z_stream* zs_ = nullptr;
  std::vector<uint8_t> outbuf_;
};

}  // namespace torchbridge::format
