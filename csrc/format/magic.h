#pragma once
// What a file's first bytes say it is: the one place .npy and zip magic are
// compared, so npy::load's "it is a zip archive" hint, the zip reader's "it
// is a .npy file" hint and load's choice of reader cannot disagree.

#include "npy.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace torchbridge::format {

enum class FileKind {
  kNpy,    // "\x93NUMPY"
  kZip,    // "PK\3\4" (a local header) or "PK\5\6" (an empty archive)
  kOther,  // anything else, or too short to tell
};

// Enough bytes for sniff() to decide.
constexpr size_t kSniffLen = kMagicLen;

// Classifies the first `n` bytes of a file (fewer than kSniffLen is fine: a
// file that short is kOther unless its 4 bytes are zip magic). numpy.savez
// archives start with a local header; a zip with no members is just its
// end record.
inline FileKind sniff(const uint8_t* head, size_t n) {
  if (n >= kMagicLen && std::memcmp(head, kMagic, kMagicLen) == 0) {
    return FileKind::kNpy;
  }
  if (n >= 4 && (std::memcmp(head, "PK\x03\x04", 4) == 0 ||
                 std::memcmp(head, "PK\x05\x06", 4) == 0)) {
    return FileKind::kZip;
  }
  return FileKind::kOther;
}

// sniff() of the first bytes of `source` (reads at most kSniffLen).
inline FileKind sniff(const ByteSource& source) {
  uint8_t head[kSniffLen];
  const size_t n = static_cast<size_t>(
      source.size() < kSniffLen ? source.size() : kSniffLen);
  if (n) source.read(0, head, n, "the magic");
  return sniff(head, n);
}

}  // namespace torchbridge::format
