#include "zip.h"

#include "magic.h"
#include "util.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <unordered_map>

namespace torchbridge::format {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50;        // PK\3\4
constexpr uint32_t kCentralSig = 0x02014b50;      // PK\1\2
constexpr uint32_t kEndSig = 0x06054b50;          // PK\5\6
constexpr uint32_t kEnd64Sig = 0x06064b50;        // PK\6\6
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;  // PK\6\7
constexpr size_t kLocalLen = 30;
constexpr size_t kCentralLen = 46;
constexpr size_t kEndLen = 22;
constexpr size_t kEnd64Len = 56;
constexpr size_t kEnd64LocatorLen = 20;
constexpr uint32_t k32 = 0xFFFFFFFF;
constexpr uint16_t k16 = 0xFFFF;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kAlignExtraId = 0xD935;  // Android zipalign's
constexpr uint16_t kFlagEncrypted = 0x0001;
constexpr uint16_t kFlagDescriptor = 0x0008;
constexpr uint16_t kFlagStrongEncryption = 0x0040;
constexpr uint16_t kFlagUtf8 = 0x0800;
constexpr uint16_t kFlagMaskedHeaders = 0x2000;
// 1980-01-01 00:00:00, the DOS epoch.
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;
constexpr uint16_t kDosTime = 0;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) {
  return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32);
}

void put16(std::string& s, uint16_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>(v >> 8);
}
void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

// A member name's raw bytes, for messages.
std::string printable(const std::string& s) { return escape(s, kRawName); }

std::string method_name(uint16_t m) {
  switch (m) {
    case 1: return "shrink";
    case 6: return "implode";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    case 99: return "AES encryption";
    default: return "unknown";
  }
}

// The sizes a zip64 extra field holds: only those whose 32-bit field is the
// 0xFFFFFFFF sentinel, in this order (APPNOTE 4.5.3).
struct Zip64Fields {
  uint64_t* size;
  uint64_t* compressed_size;
  uint64_t* local_offset;  // may be null (local headers have none)
};

void parse_extra(const uint8_t* p, size_t len, Zip64Fields f,
                 const std::string& where, const std::string& entry) {
  const bool need_size = *f.size == k32;
  const bool need_csize = *f.compressed_size == k32;
  const bool need_offset = f.local_offset && *f.local_offset == k32;
  bool found = false;
  size_t off = 0;
  while (off + 4 <= len) {
    const uint16_t id = rd16(p + off);
    const uint16_t n = rd16(p + off + 2);
    if (off + 4 + n > len) {
      fail(where, entry + ": malformed extra field (a record of " +
                      std::to_string(n) + " bytes runs past the field's end)");
    }
    if (id == kZip64ExtraId && !found) {
      found = true;
      const uint8_t* q = p + off + 4;
      const size_t want = 8 * (need_size + need_csize + need_offset);
      if (n < want) {
        fail(where, entry + ": the zip64 extra field has " + std::to_string(n) +
                        " bytes, too few for the " + std::to_string(want) +
                        " its sentinel fields need");
      }
      if (need_size) { *f.size = rd64(q); q += 8; }
      if (need_csize) { *f.compressed_size = rd64(q); q += 8; }
      if (need_offset) { *f.local_offset = rd64(q); q += 8; }
    }
    off += 4 + n;
  }
  if (off != len) {
    fail(where, entry + ": malformed extra field (" + std::to_string(len - off) +
                    " stray bytes at its end)");
  }
  if (!found && (need_size || need_csize || need_offset)) {
    fail(where, entry + ": a size or offset is 0xFFFFFFFF, which means it is "
                        "in a zip64 extra field, but there is none");
  }
}

// Code page 437 above 0x7F, as Unicode: the encoding of names without the
// UTF-8 flag (APPNOTE appendix D; Python's zipfile decodes them the same).
constexpr uint16_t kCp437[128] = {
    0x00C7, 0x00FC, 0x00E9, 0x00E2, 0x00E4, 0x00E0, 0x00E5, 0x00E7,
    0x00EA, 0x00EB, 0x00E8, 0x00EF, 0x00EE, 0x00EC, 0x00C4, 0x00C5,
    0x00C9, 0x00E6, 0x00C6, 0x00F4, 0x00F6, 0x00F2, 0x00FB, 0x00F9,
    0x00FF, 0x00D6, 0x00DC, 0x00A2, 0x00A3, 0x00A5, 0x20A7, 0x0192,
    0x00E1, 0x00ED, 0x00F3, 0x00FA, 0x00F1, 0x00D1, 0x00AA, 0x00BA,
    0x00BF, 0x2310, 0x00AC, 0x00BD, 0x00BC, 0x00A1, 0x00AB, 0x00BB,
    0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556,
    0x2555, 0x2563, 0x2551, 0x2557, 0x255D, 0x255C, 0x255B, 0x2510,
    0x2514, 0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x255E, 0x255F,
    0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256C, 0x2567,
    0x2568, 0x2564, 0x2565, 0x2559, 0x2558, 0x2552, 0x2553, 0x256B,
    0x256A, 0x2518, 0x250C, 0x2588, 0x2584, 0x258C, 0x2590, 0x2580,
    0x03B1, 0x00DF, 0x0393, 0x03C0, 0x03A3, 0x03C3, 0x00B5, 0x03C4,
    0x03A6, 0x0398, 0x03A9, 0x03B4, 0x221E, 0x03C6, 0x03B5, 0x2229,
    0x2261, 0x00B1, 0x2265, 0x2264, 0x2320, 0x2321, 0x00F7, 0x2248,
    0x00B0, 0x2219, 0x00B7, 0x221A, 0x207F, 0x00B2, 0x25A0, 0x00A0,
};

std::string cp437_to_utf8(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    const uint32_t u = c < 0x80 ? c : kCp437[c - 0x80];
    if (u < 0x80) {
      out += static_cast<char>(u);
    } else if (u < 0x800) {
      out += static_cast<char>(0xC0 | (u >> 6));
      out += static_cast<char>(0x80 | (u & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (u >> 12));
      out += static_cast<char>(0x80 | ((u >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (u & 0x3F));
    }
  }
  return out;
}

std::string entry_name(const std::string& name) {
  return "member " + printable(name);
}

// Where the central directory is and how many entries it holds, as the end
// records say (zip64's values once read_zip64_end has run).
struct EndRecord {
  uint64_t end_pos = 0;  // offset of the end-of-central-directory record
  uint64_t disk = 0;
  uint64_t cd_disk = 0;
  uint64_t n_disk = 0;   // entries on this disk
  uint64_t n_total = 0;  // entries in all
  uint64_t cd_size = 0;
  uint64_t cd_off = 0;
  uint64_t cd_limit = 0;  // where the central directory must end
};

// A .npy file handed to the zip reader gets pointed at npy::load rather
// than only hearing "not a zip archive".
std::string npy_hint(const ByteSource& src) {
  return sniff(src) == FileKind::kNpy
             ? " (it is a .npy file: load it with npy::load)"
             : "";
}

// A zip is entered from its end: the end record sits in the last 22 + 65535
// (comment) bytes; the last signature whose comment fits is taken.
EndRecord read_end_record(const ByteSource& src) {
  const std::string& where = src.where();
  const uint64_t size = src.size();
  if (size < kEndLen) {
    fail(where, "not a zip archive: it has " + std::to_string(size) +
                    " bytes, fewer than the 22 of an empty archive" +
                    npy_hint(src));
  }
  const size_t tail_len = static_cast<size_t>(std::min<uint64_t>(size, kEndLen + 0xFFFF));
  std::vector<uint8_t> tail(tail_len);
  src.read(size - tail_len, tail.data(), tail_len, "the end of the archive");
  size_t at = SIZE_MAX;
  for (size_t i = tail_len - kEndLen + 1; i-- > 0;) {
    if (rd32(&tail[i]) == kEndSig && i + kEndLen + rd16(&tail[i + 20]) <= tail_len) {
      at = i;
      break;
    }
  }
  if (at == SIZE_MAX) {
    fail(where, "not a zip archive: no end-of-central-directory record" +
                    npy_hint(src));
  }
  const uint8_t* e = &tail[at];
  EndRecord end;
  end.end_pos = size - tail_len + at;
  end.disk = rd16(e + 4);
  end.cd_disk = rd16(e + 6);
  end.n_disk = rd16(e + 8);
  end.n_total = rd16(e + 10);
  end.cd_size = rd32(e + 12);
  end.cd_off = rd32(e + 16);
  end.cd_limit = end.end_pos;
  return end;
}

// Archives of 65535+ members or past 4 GiB keep the true counts and offsets
// in a zip64 end record, found through the locator just before the end
// record. Both must agree wherever the 32-bit field is not the sentinel, and
// the zip64 record must end exactly where the locator starts.
void read_zip64_end(const ByteSource& src, EndRecord& end) {
  const std::string& where = src.where();
  if (end.end_pos < kEnd64LocatorLen) return;
  uint8_t loc[kEnd64LocatorLen];
  const uint64_t loc_pos = end.end_pos - kEnd64LocatorLen;
  src.read(loc_pos, loc, sizeof loc, "the zip64 end locator");
  if (rd32(loc) != kEnd64LocatorSig) return;
  const uint64_t z_disk = rd32(loc + 4), z_off = rd64(loc + 8);
  const uint64_t disks = rd32(loc + 16);
  if (z_disk != 0 || disks > 1) {
    fail(where, "multi-disk (spanned) zip archives are not supported");
  }
  if (z_off > loc_pos || loc_pos - z_off < kEnd64Len) {
    fail(where, "bad zip64 end locator: it points at offset " +
                    std::to_string(z_off) + ", where no zip64 end record fits");
  }
  uint8_t z[kEnd64Len];
  src.read(z_off, z, sizeof z, "the zip64 end record");
  const uint64_t rec_size = rd64(z + 4);
  if (rd32(z) != kEnd64Sig) {
    fail(where, "bad zip64 end record: wrong signature " + hex32(rd32(z)) +
                    " at offset " + std::to_string(z_off));
  }
  if (rec_size < kEnd64Len - 12 || rec_size != loc_pos - z_off - 12) {
    fail(where, "bad zip64 end record: its size field (" +
                    std::to_string(rec_size) +
                    ") disagrees with where the locator follows it");
  }
  const uint64_t z_disk2 = rd32(z + 16), z_cd_disk = rd32(z + 20);
  const uint64_t z_n_disk = rd64(z + 24), z_n_total = rd64(z + 32);
  const uint64_t z_cd_size = rd64(z + 40), z_cd_off = rd64(z + 48);
  auto agree = [&](uint64_t v32, uint64_t sentinel, uint64_t v64, const char* what) {
    if (v32 != sentinel && v32 != v64) {
      fail(where, std::string("the zip64 end record disagrees with the end "
                              "record on the ") + what + " (" +
                      std::to_string(v64) + " vs " + std::to_string(v32) + ")");
    }
  };
  agree(end.n_total, k16, z_n_total, "entry count");
  agree(end.n_disk, k16, z_n_disk, "entry count");
  agree(end.cd_size, k32, z_cd_size, "central directory size");
  agree(end.cd_off, k32, z_cd_off, "central directory offset");
  end.disk = z_disk2;
  end.cd_disk = z_cd_disk;
  end.n_disk = z_n_disk;
  end.n_total = z_n_total;
  end.cd_size = z_cd_size;
  end.cd_off = z_cd_off;
  end.cd_limit = z_off;
}

// The central directory must fill exactly the bytes before the end records
// and hold at least 46 bytes per claimed entry, so neither its size nor the
// entry count can size a buffer beyond what the file holds.
void check_directory_extent(const std::string& where, const EndRecord& end) {
  if (end.disk != 0 || end.cd_disk != 0 || end.n_disk != end.n_total) {
    fail(where, "multi-disk (spanned) zip archives are not supported");
  }
  if (checked_add(end.cd_off, end.cd_size, where, "the central directory's end") !=
      end.cd_limit) {
    fail(where, "bad central directory: it is said to span bytes " +
                    std::to_string(end.cd_off) + ".." +
                    std::to_string(end.cd_off + end.cd_size) +
                    ", but the end record is at " + std::to_string(end.cd_limit));
  }
  if (end.n_total > end.cd_size / kCentralLen) {
    fail(where, "bad central directory: the end record claims " +
                    std::to_string(end.n_total) + " entries, more than its " +
                    std::to_string(end.cd_size) + " bytes can hold");
  }
}

// Entry `i` of the central directory at cd[pos], its zip64 sizes and offset
// resolved; advances `pos` past it. Refuses an entry that runs past the
// directory, a name that is empty or holds NUL, and a member on another disk.
ZipMember parse_central_entry(const std::vector<uint8_t>& cd, size_t& pos,
                              uint64_t i, const std::string& where) {
  const std::string nth = "central directory entry " + std::to_string(i);
  if (cd.size() - pos < kCentralLen) {
    fail(where, "bad central directory: " + nth + " is truncated");
  }
  const uint8_t* c = &cd[pos];
  if (rd32(c) != kCentralSig) {
    fail(where, "bad central directory: " + nth + " has signature " +
                    hex32(rd32(c)) + ", not PK\\1\\2");
  }
  ZipMember m;
  m.flags = rd16(c + 8);
  m.method = rd16(c + 10);
  m.crc32 = rd32(c + 16);
  m.compressed_size = rd32(c + 20);
  m.size = rd32(c + 24);
  const size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
  uint64_t start_disk = rd16(c + 34);
  m.local_offset = rd32(c + 42);
  if (cd.size() - pos - kCentralLen < nlen + xlen + clen) {
    fail(where, "bad central directory: " + nth + " runs past the directory's end");
  }
  m.name.assign(reinterpret_cast<const char*>(c + kCentralLen), nlen);
  parse_extra(c + kCentralLen + nlen, xlen,
              {&m.size, &m.compressed_size, &m.local_offset}, where,
              entry_name(m.name));
  if (start_disk == k16) {
    // Would be in the zip64 field; any such archive is multi-disk.
    start_disk = 1;
  }
  pos += kCentralLen + nlen + xlen + clen;

  if (m.name.empty() || m.name.find('\0') != std::string::npos) {
    fail(where, nth + " has an empty name or one with a NUL byte");
  }
  if (start_disk != 0) fail(where, "multi-disk (spanned) zip archives are not supported");
  return m;
}

// What torchbridge can read: no encryption, stored or deflate only, stored
// sizes equal, and no deflate member declaring more than deflate's 1032:1
// (so inflated sizes stay within 1032x the archive).
void check_member_kind(const ZipMember& m, const std::string& where) {
  const std::string entry = entry_name(m.name);
  if (m.flags & (kFlagEncrypted | kFlagStrongEncryption | kFlagMaskedHeaders)) {
    fail(where, entry + " is encrypted; .npz archives are never encrypted");
  }
  if (m.method != 0 && m.method != 8) {
    fail(where, entry + " uses compression method " + std::to_string(m.method) +
                    " (" + method_name(m.method) + "); torchbridge reads stored "
                    "(0) and deflate (8) members, which numpy.savez and "
                    "savez_compressed write");
  }
  if (m.method == 0 && m.compressed_size != m.size) {
    fail(where, entry + " is stored (not compressed) but its sizes differ (" +
                    std::to_string(m.compressed_size) + " stored, " +
                    std::to_string(m.size) + " declared)");
  }
  if (m.method == 8) {
    uint64_t bound;
    if (!__builtin_mul_overflow(m.compressed_size, kMaxDeflateRatio, &bound) &&
        m.size > bound + 64) {
      fail(where, entry + " declares " + std::to_string(m.size) +
                      " bytes from " + std::to_string(m.compressed_size) +
                      " compressed ones, over deflate's maximum ratio of "
                      "1032:1 (a zip bomb or a corrupt archive)");
    }
  }
}

// Every entry of the central directory (which check_directory_extent has
// bounded), parsed and checked; the entries must fill it exactly, so a
// wrong entry count in the end record is caught.
std::vector<ZipMember> read_central_directory(const ByteSource& src,
                                              const EndRecord& end) {
  const std::string& where = src.where();
  std::vector<uint8_t> cd(static_cast<size_t>(end.cd_size));
  src.read(end.cd_off, cd.data(), cd.size(), "the central directory");
  std::vector<ZipMember> members;
  members.reserve(static_cast<size_t>(end.n_total));
  size_t pos = 0;
  for (uint64_t i = 0; i < end.n_total; ++i) {
    ZipMember m = parse_central_entry(cd, pos, i, where);
    check_member_kind(m, where);
    members.push_back(std::move(m));
  }
  if (pos != cd.size()) {
    fail(where, "bad central directory: " + std::to_string(cd.size() - pos) +
                    " bytes follow its " + std::to_string(end.n_total) +
                    " entries (the end record's entry count is wrong)");
  }
  return members;
}

// Readers that trust local headers (streaming unzip tools) and readers that
// trust the central directory must see the same member: the local header
// must repeat the entry's name, method, encryption flag, CRC and sizes, and
// header and data must lie before the central directory. Sets data_offset.
void check_local_header(const ByteSource& src, ZipMember& m, uint64_t cd_off) {
  const std::string& where = src.where();
  const std::string entry = entry_name(m.name);
  if (m.local_offset > cd_off || cd_off - m.local_offset < kLocalLen) {
    fail(where, entry + ": its local header offset " +
                    std::to_string(m.local_offset) +
                    " is not before the central directory");
  }
  uint8_t l[kLocalLen];
  src.read(m.local_offset, l, kLocalLen, "a local header");
  if (rd32(l) != kLocalSig) {
    fail(where, entry + ": no local header at offset " +
                    std::to_string(m.local_offset) + " (signature " +
                    hex32(rd32(l)) + ")");
  }
  const uint16_t lflags = rd16(l + 6), lmethod = rd16(l + 8);
  const uint32_t lcrc = rd32(l + 14);
  uint64_t lcsize = rd32(l + 18), lsize = rd32(l + 22);
  const size_t lnlen = rd16(l + 26), lxlen = rd16(l + 28);
  const uint64_t var_end = m.local_offset + kLocalLen + lnlen + lxlen;
  if (var_end > cd_off) {
    fail(where, entry + ": its local header runs into the central directory");
  }
  std::vector<uint8_t> var(lnlen + lxlen);
  src.read(m.local_offset + kLocalLen, var.data(), var.size(), "a local header");
  const std::string lname(reinterpret_cast<const char*>(var.data()), lnlen);
  if (lname != m.name) {
    fail(where, entry + ": the local header names it " + printable(lname) +
                    "; the central directory and local header disagree");
  }
  if (lmethod != m.method ||
      (lflags & kFlagEncrypted) != (m.flags & kFlagEncrypted)) {
    fail(where, entry + ": the local header's method or flags (" +
                    std::to_string(lmethod) + ", " + std::to_string(lflags) +
                    ") disagree with the central directory's (" +
                    std::to_string(m.method) + ", " + std::to_string(m.flags) + ")");
  }
  if (!(m.flags & kFlagDescriptor) && !(lflags & kFlagDescriptor)) {
    parse_extra(var.data() + lnlen, lxlen, {&lsize, &lcsize, nullptr}, where,
                entry + " (local header)");
    if (lcrc != m.crc32 || lcsize != m.compressed_size || lsize != m.size) {
      fail(where, entry + ": the local header's CRC and sizes (" + hex32(lcrc) +
                      ", " + std::to_string(lcsize) + ", " + std::to_string(lsize) +
                      ") disagree with the central directory's (" +
                      hex32(m.crc32) + ", " + std::to_string(m.compressed_size) +
                      ", " + std::to_string(m.size) + ")");
    }
  }
  m.data_offset = var_end;
  if (m.compressed_size > cd_off - m.data_offset) {
    fail(where, entry + ": its " + std::to_string(m.compressed_size) +
                    " bytes of data run past the start of the central "
                    "directory (truncated or corrupt archive)");
  }
}

// The overlapping-member zip bomb: entries sharing bytes make one small
// archive inflate the same data many times. Each member (header and data)
// must end before the next one, by offset, starts.
void check_no_overlap(const std::string& where,
                      const std::vector<ZipMember>& members) {
  std::vector<const ZipMember*> by_offset;
  by_offset.reserve(members.size());
  for (const auto& m : members) by_offset.push_back(&m);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipMember* a, const ZipMember* b) {
              return a->local_offset < b->local_offset;
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipMember& a = *by_offset[i - 1];
    const ZipMember& b = *by_offset[i];
    if (b.local_offset < a.data_offset + a.compressed_size) {
      fail(where, entry_name(a.name) + " and " + entry_name(b.name) +
                      " overlap in the archive (an overlapping-member zip "
                      "bomb or a corrupt archive)");
    }
  }
}

// Names to UTF-8 (code page 437 without the UTF-8 flag, as Python's zipfile
// decodes them), unique by the decoded name, which is what callers key on:
// "\x82.npy" without the flag and "\xc3\xa9.npy" with it both decode to the
// same name, and one of the two would be lost.
void decode_names(const std::string& where, std::vector<ZipMember>& members) {
  std::vector<std::string> raw(members.size());
  std::unordered_map<std::string, size_t> seen;
  seen.reserve(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    ZipMember& m = members[i];
    raw[i] = m.name;
    if (!(m.flags & kFlagUtf8)) m.name = cp437_to_utf8(m.name);
    const auto [it, fresh] = seen.emplace(m.name, i);
    if (fresh) continue;
    const size_t j = it->second;
    auto form = [&](size_t k) {
      return printable(raw[k]) + ((members[k].flags & kFlagUtf8)
                                      ? " (UTF-8)"
                                      : " (code page 437, no UTF-8 flag)");
    };
    const std::string how =
        raw[i] == raw[j] ? "" : " once decoded, from " + form(j) + " and " + form(i);
    fail(where, "the archive holds two members named " + quote(m.name) + how +
                    "; loading it would drop one of them. Names in an "
                    "archive must be unique: rewrite it with distinct names");
  }
}

}  // namespace

std::vector<ZipMember> read_zip_directory(const ByteSource& src) {
  EndRecord end = read_end_record(src);
  read_zip64_end(src, end);
  check_directory_extent(src.where(), end);
  std::vector<ZipMember> members = read_central_directory(src, end);
  for (auto& m : members) check_local_header(src, m, end.cd_off);
  check_no_overlap(src.where(), members);
  decode_names(src.where(), members);
  return members;
}

// ---------------------------------------------------------------------------

MemberStream::MemberStream(const ByteSource& source, const ZipMember& member,
                           std::string where)
    : source_(source), member_(member), where_(std::move(where)) {
  if (member_.method == 8) {
    zs_ = new z_stream{};
    if (inflateInit2(zs_, -MAX_WBITS) != Z_OK) {
      delete zs_;
      zs_ = nullptr;
      fail(where_, "cannot initialise zlib's inflate (out of memory?)");
    }
  }
}

MemberStream::~MemberStream() {
  if (zs_) {
    inflateEnd(zs_);
    delete zs_;
  }
}

void MemberStream::refill() {
  const uint64_t left = member_.compressed_size - consumed_;
  if (const uint8_t* base = source_.data()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, UINT_MAX));
    zs_->next_in = const_cast<Bytef*>(base + member_.data_offset + consumed_);
    zs_->avail_in = static_cast<uInt>(n);
    consumed_ += n;
    return;
  }
  const size_t n = static_cast<size_t>(std::min<uint64_t>(left, 1 << 18));
  inbuf_.resize(n);
  source_.read(member_.data_offset + consumed_, inbuf_.data(), n,
               "compressed member data");
  zs_->next_in = inbuf_.data();
  zs_->avail_in = static_cast<uInt>(n);
  consumed_ += n;
}

void MemberStream::read(void* dst, size_t n, const char* what) {
  if (n > remaining()) {
    fail(where_, "truncated member: " + std::string(what) + " needs " +
                     std::to_string(n) + " bytes, but the member has " +
                     std::to_string(remaining()) + " left of " +
                     std::to_string(member_.size));
  }
  auto* out = static_cast<uint8_t*>(dst);
  if (!zs_) {
    source_.read(member_.data_offset + produced_, out, n, what);
    // crc32_z takes size_t lengths.
    crc_ = static_cast<uint32_t>(crc32_z(crc_, out, n));
    produced_ += n;
    return;
  }
  while (n > 0) {
    if (ended_) {
      fail(where_, "the compressed data ends after " + std::to_string(produced_) +
                       " bytes, but the member declares " +
                       std::to_string(member_.size));
    }
    if (zs_->avail_in == 0 && consumed_ < member_.compressed_size) refill();
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, UINT_MAX));
    zs_->next_out = out;
    zs_->avail_out = chunk;
    const uInt in_before = zs_->avail_in;
    const int r = inflate(zs_, Z_NO_FLUSH);
    const size_t got = chunk - zs_->avail_out;
    crc_ = static_cast<uint32_t>(crc32_z(crc_, out, got));
    out += got;
    n -= got;
    produced_ += got;
    if (r == Z_STREAM_END) {
      ended_ = true;
      continue;
    }
    if (r == Z_NEED_DICT || r == Z_DATA_ERROR || r == Z_STREAM_ERROR) {
      fail(where_, std::string("corrupt compressed data (zlib: ") +
                       (zs_->msg ? zs_->msg : "invalid deflate stream") + ")");
    }
    if (r == Z_MEM_ERROR) fail(where_, "out of memory while inflating");
    if (got == 0 && zs_->avail_in == in_before &&
        consumed_ == member_.compressed_size) {
      fail(where_, "truncated compressed data: the deflate stream stops after " +
                       std::to_string(produced_) + " of the " +
                       std::to_string(member_.size) + " bytes declared");
    }
  }
}

void MemberStream::skip(uint64_t n, const char* what) {
  if (n > remaining()) {
    fail(where_, "truncated member: " + std::string(what) + " needs " +
                     std::to_string(n) + " bytes, but the member has " +
                     std::to_string(remaining()) + " left of " +
                     std::to_string(member_.size));
  }
  const uint8_t* base = source_.data();
  if (!zs_ && base) {
    // In place: the range is inside the source (read_zip_directory checked
    // the member against the source's size).
    crc_ = static_cast<uint32_t>(
        crc32_z(crc_, base + member_.data_offset + produced_, static_cast<size_t>(n)));
    produced_ += n;
    return;
  }
  std::vector<uint8_t> chunk(static_cast<size_t>(std::min<uint64_t>(n, 1 << 20)));
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, chunk.size()));
    read(chunk.data(), k, what);
    n -= k;
  }
}

void MemberStream::finish() {
  if (produced_ != member_.size) {
    fail(where_, "internal error: finish() before the member was read");
  }
  if (zs_) {
    // The stream must end here: any further output means the member
    // inflates past its declared size.
    uint8_t probe[64];
    while (!ended_) {
      if (zs_->avail_in == 0 && consumed_ < member_.compressed_size) refill();
      zs_->next_out = probe;
      zs_->avail_out = sizeof probe;
      const uInt in_before = zs_->avail_in;
      const int r = inflate(zs_, Z_NO_FLUSH);
      if (zs_->avail_out != sizeof probe) {
        fail(where_, "the compressed data inflates to more than the " +
                         std::to_string(member_.size) +
                         " bytes the member declares (a zip bomb or a corrupt "
                         "archive)");
      }
      if (r == Z_STREAM_END) {
        ended_ = true;
      } else if (r != Z_OK && r != Z_BUF_ERROR) {
        fail(where_, std::string("corrupt compressed data (zlib: ") +
                         (zs_->msg ? zs_->msg : "invalid deflate stream") + ")");
      } else if (zs_->avail_in == in_before &&
                 consumed_ == member_.compressed_size) {
        fail(where_, "truncated compressed data: the deflate stream has no end");
      }
    }
  }
  if (crc_ != member_.crc32) {
    fail(where_, "CRC-32 mismatch: the archive records " + hex32(member_.crc32) +
                     ", the data has " + hex32(crc_) + "; the member is corrupt");
  }
}

// ---------------------------------------------------------------------------

ZipWriter::ZipWriter(Sink& out, std::string where, bool force_zip64)
    : out_(out), where_(std::move(where)), force_zip64_(force_zip64) {}

ZipWriter::~ZipWriter() {
  if (zs_) {
    deflateEnd(zs_);
    delete zs_;
  }
}

void ZipWriter::begin_member(const std::string& name, uint64_t size,
                             bool compress, uint64_t align) {
  if (open_) fail(where_, "internal error: a member is already open");
  if (name.empty() || name.size() > 0xFFFF || name.find('\0') != std::string::npos) {
    fail(where_, "the name " + printable(name) +
                     " cannot be stored in a zip archive (it must be 1 to "
                     "65535 bytes without NUL)");
  }
  cur_ = Entry{name, static_cast<uint16_t>(compress ? 8 : 0), 0, 0, size,
               out_.offset(), false};
  // Deflate may expand incompressible data by a few bytes per 16 KiB block.
  const uint64_t worst = compress ? size + size / 8 + 1024 : size;
  cur_.zip64_local = force_zip64_ || worst >= k32;
  bool utf8 = false;
  for (unsigned char ch : name) utf8 |= ch >= 0x80;

  std::string extra;
  if (cur_.zip64_local) {
    put16(extra, kZip64ExtraId);
    put16(extra, 16);
    put64(extra, size);
    put64(extra, 0);  // compressed size, patched by end_member
  }
  if (!compress && align > 1) {
    const uint64_t base = cur_.local_offset + kLocalLen + name.size() + extra.size();
    if (base % align != 0) {
      // id, length, the alignment (u16), then zeros.
      uint64_t len = 6;
      len += (align - (base + len) % align) % align;
      put16(extra, kAlignExtraId);
      put16(extra, static_cast<uint16_t>(len - 4));
      put16(extra, static_cast<uint16_t>(align));
      extra.append(len - 6, '\0');
    }
  }
  std::string h;
  put32(h, kLocalSig);
  put16(h, cur_.zip64_local ? 45 : 20);
  put16(h, utf8 ? kFlagUtf8 : 0);
  put16(h, cur_.method);
  put16(h, kDosTime);
  put16(h, kDosDate);
  put32(h, 0);  // CRC-32, patched
  put32(h, cur_.zip64_local ? k32 : 0);
  put32(h, cur_.zip64_local ? k32 : 0);
  put16(h, static_cast<uint16_t>(name.size()));
  put16(h, static_cast<uint16_t>(extra.size()));
  h += name;
  h += extra;
  out_.write(h.data(), h.size());
  data_start_ = out_.offset();
  written_ = 0;
  if (compress) {
    zs_ = new z_stream{};
    if (deflateInit2(zs_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      delete zs_;
      zs_ = nullptr;
      fail(where_, "cannot initialise zlib's deflate (out of memory?)");
    }
    outbuf_.resize(1 << 18);
  }
  open_ = true;
}

void ZipWriter::deflate_chunk(const uint8_t* data, size_t n, int flush) {
  zs_->next_in = const_cast<Bytef*>(data);
  zs_->avail_in = static_cast<uInt>(n);
  int r;
  do {
    zs_->next_out = outbuf_.data();
    zs_->avail_out = static_cast<uInt>(outbuf_.size());
    r = deflate(zs_, flush);
    if (r == Z_STREAM_ERROR) fail(where_, "zlib's deflate failed");
    out_.write(outbuf_.data(), outbuf_.size() - zs_->avail_out);
  } while (zs_->avail_out == 0 || (flush == Z_FINISH && r != Z_STREAM_END));
}

void ZipWriter::write(const void* data, size_t n) {
  if (!open_ || n > cur_.size - written_) {
    fail(where_, "internal error: more bytes written than the member declared");
  }
  const auto* p = static_cast<const uint8_t*>(data);
  cur_.crc32 = static_cast<uint32_t>(crc32_z(cur_.crc32, p, n));
  written_ += n;
  if (!zs_) {
    out_.write(p, n);
    return;
  }
  while (n > 0) {
    const size_t chunk = std::min<size_t>(n, 1u << 30);
    deflate_chunk(p, chunk, Z_NO_FLUSH);
    p += chunk;
    n -= chunk;
  }
}

void ZipWriter::end_member() {
  if (!open_ || written_ != cur_.size) {
    fail(where_, "internal error: a member ended before all its bytes were written");
  }
  if (zs_) {
    deflate_chunk(nullptr, 0, Z_FINISH);
    deflateEnd(zs_);
    delete zs_;
    zs_ = nullptr;
  }
  cur_.compressed_size = out_.offset() - data_start_;
  if (!cur_.zip64_local && cur_.compressed_size >= k32) {
    fail(where_, "internal error: compressed member outgrew its zip32 header");
  }
  std::string patch;
  put32(patch, cur_.crc32);
  out_.write_at(cur_.local_offset + 14, patch.data(), 4);
  if (cur_.zip64_local) {
    patch.clear();
    put64(patch, cur_.compressed_size);
    out_.write_at(cur_.local_offset + kLocalLen + cur_.name.size() + 12,
                  patch.data(), 8);
  } else {
    patch.clear();
    put32(patch, static_cast<uint32_t>(cur_.compressed_size));
    put32(patch, static_cast<uint32_t>(cur_.size));
    out_.write_at(cur_.local_offset + 18, patch.data(), 8);
  }
  entries_.push_back(cur_);
  open_ = false;
}

void ZipWriter::finish() {
  if (open_) fail(where_, "internal error: finish() with a member open");
  const uint64_t cd_off = out_.offset();
  for (const auto& e : entries_) {
    const bool big_size = force_zip64_ || e.size >= k32;
    const bool big_csize = force_zip64_ || e.compressed_size >= k32;
    const bool big_off = force_zip64_ || e.local_offset >= k32;
    std::string extra;
    if (big_size || big_csize || big_off) {
      put16(extra, kZip64ExtraId);
      put16(extra, static_cast<uint16_t>(8 * (big_size + big_csize + big_off)));
      if (big_size) put64(extra, e.size);
      if (big_csize) put64(extra, e.compressed_size);
      if (big_off) put64(extra, e.local_offset);
    }
    const uint16_t version = (e.zip64_local || !extra.empty()) ? 45 : 20;
    bool utf8 = false;
    for (unsigned char ch : e.name) utf8 |= ch >= 0x80;
    std::string c;
    put32(c, kCentralSig);
    put16(c, static_cast<uint16_t>(0x0300 | version));  // made by: Unix
    put16(c, version);
    put16(c, utf8 ? kFlagUtf8 : 0);
    put16(c, e.method);
    put16(c, kDosTime);
    put16(c, kDosDate);
    put32(c, e.crc32);
    put32(c, big_csize ? k32 : static_cast<uint32_t>(e.compressed_size));
    put32(c, big_size ? k32 : static_cast<uint32_t>(e.size));
    put16(c, static_cast<uint16_t>(e.name.size()));
    put16(c, static_cast<uint16_t>(extra.size()));
    put16(c, 0);  // comment
    put16(c, 0);  // disk
    put16(c, 0);  // internal attributes
    put32(c, 0100644u << 16);  // a regular file, rw-r--r--
    put32(c, big_off ? k32 : static_cast<uint32_t>(e.local_offset));
    c += e.name;
    c += extra;
    out_.write(c.data(), c.size());
  }
  const uint64_t cd_size = out_.offset() - cd_off;
  const uint64_t n = entries_.size();
  const bool zip64 = force_zip64_ || n >= k16 || cd_off >= k32 || cd_size >= k32;
  std::string t;
  if (zip64) {
    const uint64_t z_off = out_.offset();
    put32(t, kEnd64Sig);
    put64(t, kEnd64Len - 12);
    put16(t, 0x0300 | 45);
    put16(t, 45);
    put32(t, 0);
    put32(t, 0);
    put64(t, n);
    put64(t, n);
    put64(t, cd_size);
    put64(t, cd_off);
    put32(t, kEnd64LocatorSig);
    put32(t, 0);
    put64(t, z_off);
    put32(t, 1);
  }
  put32(t, kEndSig);
  put16(t, 0);
  put16(t, 0);
  const uint16_t n16 = (force_zip64_ || n >= k16) ? k16 : static_cast<uint16_t>(n);
  put16(t, n16);
  put16(t, n16);
  put32(t, (force_zip64_ || cd_size >= k32) ? k32 : static_cast<uint32_t>(cd_size));
  put32(t, (force_zip64_ || cd_off >= k32) ? k32 : static_cast<uint32_t>(cd_off));
  put16(t, 0);
  out_.write(t.data(), t.size());
}

}  // namespace torchbridge::format
