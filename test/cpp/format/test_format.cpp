// csrc/format alone, without LibTorch: the .npy header grammar, the zip
// reader and writer, and the hostile-file corpus as hand-made bytes. Runs
// under ASan + UBSan in the sanitizer build, so an out-of-bounds read or an
// overflow here fails the test even when the error message is right.

#include "format/io.h"
#include "format/magic.h"
#include "format/npy.h"
#include "format/zip.h"

#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

using namespace torchbridge::format;
using namespace std::string_literals;

// Expects `stmt` to throw torchbridge::Error whose message has `substring`.
#define EXPECT_ERROR(stmt, substring)                                        \
  do {                                                                       \
    try {                                                                    \
      (void)(stmt);                                                          \
      ADD_FAILURE() << "expected torchbridge::Error from: " #stmt;           \
    } catch (const torchbridge::Error& e) {                                  \
      const std::string what_ = e.what();                                    \
      EXPECT_NE(what_.find(substring), std::string::npos)                    \
          << "message lacks \"" << (substring) << "\": " << what_;           \
    }                                                                        \
  } while (0)

namespace {

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// A .npy file: magic, version, header length, `dict` padded like NumPy
// (unless `pad` is false), then `data`.
std::string npy(const std::string& dict, const std::string& data = "",
                int version = 1, bool pad = true) {
  const size_t len_size = version == 1 ? 2 : 4;
  std::string header = dict;
  if (pad) {
    header.append((64 - (kMagicLen + 2 + len_size + dict.size() + 1) % 64) % 64, ' ');
    header += '\n';
  }
  return std::string(kMagic, kMagicLen) + static_cast<char>(version) + '\0' +
         le(header.size(), static_cast<int>(len_size)) + header + data;
}

NpyHeader parse(const std::string& bytes, DataFit fit = DataFit::kAtLeast) {
  MemorySource src(bytes.data(), bytes.size(), "npy::load(\"t.npy\")");
  SourceStream in(src, 0);
  return read_npy_header(in, src.where(), fit);
}

const std::string kF4_34 = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
const std::string k48 = std::string(48, '\0');

}  // namespace

// ---------------------------------------------------------------- headers

TEST(NpyHeader, ParsesWhatNumpySaveWrites) {
  const NpyHeader h = parse(npy(kF4_34, k48));
  EXPECT_EQ(h.major, 1);
  EXPECT_EQ(h.dtype, DType::kFloat32);
  EXPECT_FALSE(h.fortran_order);
  EXPECT_FALSE(h.byteswapped);
  EXPECT_EQ(h.shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(h.numel, 12);
  EXPECT_EQ(h.nbytes, 48u);
  EXPECT_EQ(h.data_offset, 128u);
}

TEST(NpyHeader, MakeHeaderRoundTripsEveryDtypeOrderAndShape) {
  for (int d = 0; d <= static_cast<int>(DType::kComplex128); ++d) {
    const auto dt = static_cast<DType>(d);
    for (bool fortran : {false, true}) {
      for (const auto& shape : std::vector<std::vector<int64_t>>{
               {}, {0}, {5}, {3, 4}, {2, 0, 3}, {1, 1, 1, 7}}) {
        const std::string header = make_npy_header(dt, fortran, shape);
        EXPECT_EQ(header.size() % 64, 0u);
        EXPECT_EQ(header.back(), '\n');
        const NpyHeader h = parse(header + std::string(
            [&] { uint64_t n = itemsize(dt); for (auto s : shape) n *= s; return n; }(), 'x'));
        EXPECT_EQ(h.dtype, dt);
        EXPECT_EQ(h.fortran_order, fortran);
        EXPECT_EQ(h.shape, shape);
        EXPECT_EQ(h.data_offset, header.size());
      }
    }
  }
}

TEST(NpyHeader, MakeHeaderMatchesNumpySave) {
  // numpy.save's bytes (NumPy 1.26 and 2.x): sorted keys, 21 - digits spaces
  // of growth room after the dict, spaces to 64 bytes, then '\n'.
  auto expect = [](const std::string& dict, size_t total) {
    std::string s = std::string(kMagic, kMagicLen) + '\x01' + '\0' +
                    le(total - 10, 2) + dict;
    s.append(total - 1 - s.size(), ' ');
    return s + "\n";
  };
  EXPECT_EQ(make_npy_header(DType::kFloat32, false, {3, 4}), expect(kF4_34, 128));
  EXPECT_EQ(make_npy_header(DType::kBool, false, {}),
            expect("{'descr': '|b1', 'fortran_order': False, 'shape': (), }", 128));
  EXPECT_EQ(make_npy_header(DType::kInt64, true, {2, 3}),
            expect("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }", 128));
  EXPECT_EQ(make_npy_header(DType::kComplex128, false, {0}),
            expect("{'descr': '<c16', 'fortran_order': False, 'shape': (0,), }", 128));
  EXPECT_EQ(make_npy_header(DType::kUInt16, false, {1000, 33}),
            expect("{'descr': '<u2', 'fortran_order': False, 'shape': (1000, 33), }", 128));
  EXPECT_EQ(make_npy_header(DType::kInt8, false, std::vector<int64_t>(20, 2)),
            expect("{'descr': '|i1', 'fortran_order': False, 'shape': (2, 2, 2, 2, 2, "
                   "2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2), }", 192));
}

TEST(NpyHeader, AcceptsWhatNumpyAccepts) {
  // Key order, quotes, whitespace, trailing commas: literal_eval accepts all.
  for (const std::string& dict : {
           std::string("{\"shape\": (3, 4), \"fortran_order\": False, \"descr\": \"<f4\"}"),
           std::string("{'descr':'<f4','fortran_order':False,'shape':(3,4)}"),
           std::string("  {\n 'descr' : '<f4' ,\n 'fortran_order' : False ,\n"
                       " 'shape' : ( 3 , 4 , ) , }  \n\t"),
           std::string("{'descr': '=f4', 'fortran_order': False, 'shape': (3, 4)}"),
           std::string("{'descr': '|f4', 'fortran_order': False, 'shape': (3, 4)}"),
       }) {
    const NpyHeader h = parse(npy(dict, k48));
    EXPECT_EQ(h.dtype, DType::kFloat32) << dict;
    EXPECT_EQ(h.shape, (std::vector<int64_t>{3, 4})) << dict;
    EXPECT_FALSE(h.byteswapped) << dict;
  }
  // Python 2's long literals, in 1.0 and 2.0 headers (not 3.0).
  const std::string py2 = "{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), }";
  EXPECT_EQ(parse(npy(py2, k48, 1)).shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(parse(npy(py2, k48, 2)).shape, (std::vector<int64_t>{3, 4}));
  EXPECT_ERROR(parse(npy(py2, k48, 3)), "malformed integer");
  // One-byte types with any order mark; 'b1' under '<'.
  EXPECT_EQ(parse(npy("{'descr': '>u1', 'fortran_order': False, 'shape': (2,)}", "ab")).byteswapped,
            false);
  EXPECT_EQ(parse(npy("{'descr': '<b1', 'fortran_order': False, 'shape': (2,)}", "ab")).dtype,
            DType::kBool);
}

TEST(NpyHeader, VersionsAndOffsets) {
  for (int v : {1, 2, 3}) {
    const NpyHeader h = parse(npy(kF4_34, k48, v));
    EXPECT_EQ(h.major, v);
    EXPECT_EQ(h.data_offset % 64, 0u);
    EXPECT_GE(h.data_offset, 64u + 10);
  }
  // Unpadded headers are legal: the data starts right after.
  const NpyHeader h = parse(npy(kF4_34, k48, 1, false));
  EXPECT_EQ(h.data_offset, 10 + kF4_34.size());
}

TEST(NpyHeader, OtherByteOrderIsFlagged) {
  const std::string big = "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }";
  const NpyHeader h = parse(npy(big, std::string(48, '\0')));
  EXPECT_EQ(h.byteswapped, native_little_endian());
  EXPECT_TRUE(h.fortran_order);
  EXPECT_EQ(h.dtype, DType::kFloat64);
}

TEST(NpyHeader, DataFitAllowsTrailingBytesInFilesOnly) {
  const std::string bytes = npy(kF4_34, k48 + "extra");
  EXPECT_EQ(parse(bytes).nbytes, 48u);
  EXPECT_ERROR(parse(bytes, DataFit::kExactly), "wrong data size");
  EXPECT_EQ(parse(npy(kF4_34, k48), DataFit::kExactly).nbytes, 48u);
}

TEST(NpyHeader, ZeroSizeAndScalarShapes) {
  EXPECT_EQ(parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", "abcd")).numel, 1);
  const NpyHeader z = parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0, 5)}"));
  EXPECT_EQ(z.numel, 0);
  EXPECT_EQ(z.nbytes, 0u);
}

// The hostile-file corpus: every malformed header names the fault.
struct Hostile {
  const char* name;
  std::string bytes;
  const char* message;
};

std::vector<Hostile> hostile_npy() {
  auto dict = [](const std::string& descr, const std::string& shape,
                 const std::string& order = "False") {
    return "{'descr': " + descr + ", 'fortran_order': " + order +
           ", 'shape': " + shape + ", }";
  };
  std::string rank1000 = "(";
  for (int i = 0; i < 1000; ++i) rank1000 += "1, ";
  rank1000 += ")";
  return {
      {"empty", "", "fewer than the 10 bytes"},
      {"nine bytes", std::string(kMagic, 6) + "\x01\x00\x10"s, "fewer than the 10 bytes"},
      {"bad magic", "\x93NUMPZ\x01\x00\x10\x00{}              "s, "not a .npy file"},
      {"zip instead", "PK\x03\x04" + std::string(60, '\0'), "npz::load"},
      {"version 4.0", std::string(kMagic, 6) + "\x04\x00\x10\x00"s + std::string(16, ' '),
       "unsupported .npy format version 4.0"},
      {"version 1.1", std::string(kMagic, 6) + "\x01\x01\x10\x00"s + std::string(16, ' '),
       "version 1.1"},
      {"truncated header length", std::string(kMagic, 6) + "\x02\x00\x10\x00"s,
       "truncated file: the header length"},
      {"header past EOF", std::string(kMagic, 6) + "\x01\x00\x76\x00{'descr'"s,
       "header length field says 118 bytes, but only 8 follow"},
      {"v2 header_len 0xFFFFFFF0", std::string(kMagic, 6) + "\x02\x00\xF0\xFF\xFF\xFF"s,
       "header length field says 4294967280 bytes"},
      {"header over 10000 bytes",
       std::string(kMagic, 6) + "\x02\x00"s + le(20000, 4) + std::string(20000, ' '),
       "over the limit of 10000"},
      {"not a dict", npy("[('descr', '<f4')]"), "must be a dict"},
      {"missing colon", npy("{'descr' '<f4', 'fortran_order': False, 'shape': (3,)}"),
       "expected ':'"},
      {"missing comma", npy("{'descr': '<f4' 'fortran_order': False, 'shape': (3,)}"),
       "expected ',' or '}'"},
      {"unterminated dict", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)"),
       "expected ',' or '}'"},
      {"unterminated string", npy("{'descr: '<f4'}"), "expected ':'"},
      {"unterminated string at end", npy("{'descr", "", 1, false), "unterminated string"},
      {"text after the dict", npy(dict("'<f4'", "(3,)") + " 1"), "unexpected text after"},
      {"escape in string", npy(dict("'<f\\x34'", "(3,)")), "escape sequences"},
      {"NUL in header", npy(dict("'<f4'", "(3,)") + std::string(1, '\0')),
       "unexpected text after"},
      {"control byte in string", npy(dict("'<f\x01'", "(3,)")), "non-printable"},
      {"missing shape", npy("{'descr': '<f4', 'fortran_order': False}"), "lacks 'shape'"},
      {"missing all", npy("{}"), "lacks 'descr', 'fortran_order', 'shape'"},
      {"duplicate key", npy("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, "
                            "'shape': (3,)}"),
       "'descr' appears twice"},
      {"extra key", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}"),
       "unexpected key 'x'"},
      {"object", npy(dict("'|O'", "(3,)")), "object array"},
      {"object 8", npy(dict("'<O8'", "(3,)")), "never unpickles"},
      {"datetime", npy(dict("'<M8[ns]'", "(3,)")), "datetime64"},
      {"timedelta", npy(dict("'<m8[s]'", "(3,)")), "timedelta64"},
      {"unicode", npy(dict("'<U3'", "(3,)")), "string dtype"},
      {"bytes", npy(dict("'|S3'", "(3,)")), "string dtype"},
      {"void", npy(dict("'|V2'", "(3,)")), "raw void bytes"},
      {"long double", npy(dict("'<f16'", "(3,)")), "long double"},
      {"clongdouble", npy(dict("'<c32'", "(3,)")), "long double"},
      {"odd size", npy(dict("'<f3'", "(3,)")), "unsupported dtype '<f3'"},
      {"no size", npy(dict("'<f'", "(3,)")), "unsupported dtype '<f'"},
      {"numeric descr", npy(dict("4", "(3,)")), "expected the descr string"},
      {"empty descr", npy(dict("''", "(3,)")), "empty string"},
      {"structured", npy(dict("[('a', '<f4')]", "(3,)")), "structured"},
      {"subarray", npy(dict("('<f4', (2,))", "(3,)")), "structured or sub-array"},
      {"order as int", npy(dict("'<f4'", "(3,)", "1")), "True or False"},
      {"order as string", npy(dict("'<f4'", "(3,)", "'False'")), "True or False"},
      {"order prefix", npy(dict("'<f4'", "(3,)", "Falsey")), "True or False"},
      {"shape is an int", npy(dict("'<f4'", "(3)")), "not a tuple"},
      {"shape is a list", npy(dict("'<f4'", "[3]")), "must be a tuple"},
      {"shape of floats", npy(dict("'<f4'", "(3.0,)")), "malformed integer"},
      {"shape of bools", npy(dict("'<f4'", "(True,)")), "non-negative integer"},
      {"shape unclosed", npy(dict("'<f4'", "(3, 4")), "in the shape"},
      {"negative dimension", npy(dict("'<f4'", "(-1,)")), "negative dimension -1"},
      {"dimension over 64 bits", npy(dict("'<f4'", "(99999999999999999999,)")),
       "does not fit in 64 bits"},
      {"shape product overflow", npy(dict("'<f4'", "(1099511627776, 1099511627776)")),
       "overflows 64 bits"},
      {"bytes overflow", npy(dict("'<c16'", "(1152921504606846976,)")), "overflows 64 bits"},
      {"zero-size overflowing strides",
       npy(dict("'<f4'", "(0, 4611686018427387904, 4611686018427387904)")),
       "overflows 64 bits"},
      {"rank 1000", npy(dict("'<f4'", rank1000)), "more than 64 dimensions"},
      {"data shorter than shape", npy(dict("'<f4'", "(3, 4)"), std::string(47, '\0')),
       "truncated data: the shape (3, 4) of float32 needs 48 bytes"},
      {"huge shape, tiny file", npy(dict("'<f8'", "(1000000000, 1000)")), "truncated data"},
      {"latin-1 byte", npy(dict("'<f4'", "(3,)") + "\xe9"), "unexpected text after"},
  };
}

TEST(NpyHeader, HostileHeadersGiveClearErrors) {
  for (const auto& c : hostile_npy()) {
    SCOPED_TRACE(c.name);
    EXPECT_ERROR(parse(c.bytes), c.message);
    EXPECT_ERROR(parse(c.bytes), "npy::load(\"t.npy\"): ");
  }
}

TEST(NpyHeader, RankLimitIsNumpys) {
  std::string shape = "(";
  for (size_t i = 0; i < kMaxRank; ++i) shape += "1, ";
  const NpyHeader h = parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': " +
                                shape + ")}", "abcd"));
  EXPECT_EQ(h.shape.size(), kMaxRank);
}

TEST(NpyHeader, Byteswap) {
  uint8_t b[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  byteswap(b, 2, DType::kInt32);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 8), (std::vector<uint8_t>{4, 3, 2, 1, 8, 7, 6, 5}));
  uint8_t c[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  byteswap(c, 1, DType::kComplex128);  // each 8-byte part on its own
  EXPECT_EQ(std::vector<uint8_t>(c, c + 16),
            (std::vector<uint8_t>{8, 7, 6, 5, 4, 3, 2, 1, 16, 15, 14, 13, 12, 11, 10, 9}));
  uint8_t h[4] = {1, 2, 3, 4};
  byteswap(h, 2, DType::kFloat16);
  EXPECT_EQ(std::vector<uint8_t>(h, h + 4), (std::vector<uint8_t>{2, 1, 4, 3}));
  byteswap(h, 4, DType::kUInt8);
  EXPECT_EQ(std::vector<uint8_t>(h, h + 4), (std::vector<uint8_t>{2, 1, 4, 3}));
}

// ---------------------------------------------------------------- zip

namespace {

struct Member {
  std::string name;
  std::string data;
  bool compress;
};

std::vector<uint8_t> make_zip(const std::vector<Member>& members, bool force_zip64 = false) {
  MemorySink sink;
  ZipWriter zip(sink, "test", force_zip64);
  for (const auto& m : members) {
    zip.begin_member(m.name, m.data.size(), m.compress);
    zip.write(m.data.data(), m.data.size());
    zip.end_member();
  }
  zip.finish();
  return sink.bytes;
}

std::vector<ZipMember> directory(const std::vector<uint8_t>& z) {
  MemorySource src(z.data(), z.size(), "npz::load(\"t.npz\")");
  return read_zip_directory(src);
}

std::string read_member(const std::vector<uint8_t>& z, const ZipMember& m,
                        size_t chunk = 7) {
  MemorySource src(z.data(), z.size(), "npz::load(\"t.npz\")");
  MemberStream in(src, m, "npz::load(\"t.npz\"), member");
  std::string out(m.size, '\0');
  for (size_t pos = 0; pos < out.size(); pos += chunk) {
    in.read(&out[pos], std::min(chunk, out.size() - pos), "data");
  }
  in.finish();
  return out;
}

std::string read_all(const std::vector<uint8_t>& z) {
  std::string all;
  for (const auto& m : directory(z)) all += m.name + "=" + read_member(z, m) + ";";
  return all;
}

uint32_t get32(const std::vector<uint8_t>& z, size_t at) {
  return z[at] | (z[at + 1] << 8) | (z[at + 2] << 16) | (static_cast<uint32_t>(z[at + 3]) << 24);
}
void put(std::vector<uint8_t>& z, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) z[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
// Offsets in an archive without comment and without zip64 end records.
size_t eocd(const std::vector<uint8_t>& z) { return z.size() - 22; }
size_t central(const std::vector<uint8_t>& z) { return get32(z, eocd(z) + 16); }

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + i / 7) & 0xFF);
  return s;
}

}  // namespace

TEST(Zip, WriterAndReaderRoundTripStoredAndDeflate) {
  const std::vector<Member> in = {{"a.npy", pattern(1000), false},
                                  {"b.npy", std::string(100000, 'z'), true},
                                  {"empty.npy", "", false},
                                  {"empty_z.npy", "", true},
                                  {"dir/c.npy", pattern(70000), true},
                                  {"\xc3\xa9.npy", "x", false}};
  for (bool z64 : {false, true}) {
    const auto z = make_zip(in, z64);
    const auto dir = directory(z);
    ASSERT_EQ(dir.size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      EXPECT_EQ(dir[i].name, in[i].name);
      EXPECT_EQ(dir[i].method, in[i].compress ? 8 : 0);
      EXPECT_EQ(dir[i].size, in[i].data.size());
      for (size_t chunk : {size_t{1}, size_t{7}, size_t{1} << 20}) {
        EXPECT_EQ(read_member(z, dir[i], chunk), in[i].data) << in[i].name;
      }
    }
  }
  // Same input, same bytes (fixed timestamps).
  EXPECT_EQ(make_zip(in), make_zip(in));
}

TEST(Zip, NamesWithoutTheUtf8FlagAreCodePage437) {
  auto z = make_zip({{"\x82t\x82.npy", "x", false}});
  EXPECT_EQ(directory(z)[0].name, "\x82t\x82.npy");  // flagged UTF-8: as is
  put(z, central(z) + 8, 0, 2);                         // clear the flag
  EXPECT_EQ(directory(z)[0].name, "\xc3\xa9t\xc3\xa9.npy");  // "été.npy"
}

TEST(Zip, StoredMemberDataIsAlignedTo64Bytes) {
  std::vector<Member> in;
  for (int i = 0; i < 20; ++i) {
    in.push_back({std::string(static_cast<size_t>(i + 1), 'n') + ".npy", pattern(static_cast<size_t>(i * 13)), false});
  }
  for (const auto& m : directory(make_zip(in))) EXPECT_EQ(m.data_offset % 64, 0u) << m.name;
}

TEST(Zip, Zip64EndRecordsForManyMembers) {
  std::vector<Member> in;
  for (int i = 0; i < 70000; ++i) in.push_back({"m" + std::to_string(i), std::to_string(i), false});
  const auto z = make_zip(in);
  // The 32-bit count is the 0xFFFF sentinel; the zip64 record holds 70000.
  EXPECT_EQ(z[eocd(z) + 10] | (z[eocd(z) + 11] << 8), 0xFFFF);
  const auto dir = directory(z);
  ASSERT_EQ(dir.size(), 70000u);
  EXPECT_EQ(read_member(z, dir[69999]), "69999");
}

TEST(Zip, InflateAtTheMaximumRatioIsAccepted) {
  // zlib compresses zeros at close to deflate's 1032:1 limit.
  const auto z = make_zip({{"zeros.npy", std::string(50 << 20, '\0'), true}});
  const auto dir = directory(z);
  EXPECT_GT(dir[0].size / dir[0].compressed_size, 1000u);
  EXPECT_EQ(read_member(z, dir[0], 1 << 20), std::string(50 << 20, '\0'));
}

namespace {

struct ZipCase {
  const char* name;
  std::function<void(std::vector<uint8_t>&)> corrupt;
  const char* message;
  bool at_read = false;  // the directory is fine; reading the member fails
};

const std::string kData = pattern(3000);

std::vector<ZipCase> hostile_zip() {
  // One stored member "a.npy" (data kData), local header at 0.
  return {
      {"truncated to nothing", [](auto& z) { z.resize(10); }, "fewer than the 22"},
      {"no end record", [](auto& z) { put(z, eocd(z), 0, 4); }, "no end-of-central-directory"},
      {"cut in the middle", [](auto& z) { z.erase(z.begin() + 1000, z.begin() + 2000); },
       "bad central directory"},
      {"multi-disk", [](auto& z) { put(z, eocd(z) + 4, 1, 2); }, "multi-disk"},
      {"count over directory size", [](auto& z) { put(z, eocd(z) + 8, 500, 2); put(z, eocd(z) + 10, 500, 2); },
       "claims 500 entries"},
      {"count under directory", [](auto& z) { put(z, eocd(z) + 8, 0, 2); put(z, eocd(z) + 10, 0, 2); },
       "bytes follow its 0 entries"},
      {"directory offset past EOF", [](auto& z) { put(z, eocd(z) + 16, 0xFFFFFFF0, 4); },
       "bad central directory: it is said to span"},
      {"directory size wrong", [](auto& z) { put(z, eocd(z) + 12, 10, 4); },
       "bad central directory"},
      {"bad directory signature", [](auto& z) { put(z, central(z), 0x12345678, 4); },
       "has signature 0x12345678"},
      {"name runs past directory", [](auto& z) { put(z, central(z) + 28, 5000, 2); },
       "runs past the directory's end"},
      {"local header missing", [](auto& z) { put(z, 0, 0, 4); }, "no local header at offset 0"},
      {"local offset past directory", [](auto& z) { put(z, central(z) + 42, 0x7FFFFFFF, 4); },
       "is not before the central directory"},
      {"local header names another file", [](auto& z) { z[30] = 'b'; },
       "the local header names it 'b.npy'"},
      {"local CRC disagrees", [](auto& z) { put(z, 14, 0xDEADBEEF, 4); },
       "disagree with the central directory's"},
      {"local method disagrees", [](auto& z) { put(z, 8, 8, 2); }, "method or flags"},
      {"stored sizes differ", [](auto& z) { put(z, central(z) + 20, 2000, 4); },
       "sizes differ"},
      {"compressed size past directory",
       [](auto& z) { put(z, central(z) + 20, 900000, 4); put(z, central(z) + 24, 900000, 4);
                     put(z, 18, 900000, 4); put(z, 22, 900000, 4); },
       "run past the start of the central directory"},
      {"encrypted", [](auto& z) { put(z, central(z) + 8, 1, 2); put(z, 6, 1, 2); }, "encrypted"},
      {"bzip2", [](auto& z) { put(z, central(z) + 10, 12, 2); put(z, 8, 12, 2); },
       "compression method 12 (bzip2)"},
      {"zip64 sentinel without extra", [](auto& z) { put(z, central(z) + 24, 0xFFFFFFFF, 4); },
       "but there is none"},
      {"malformed extra field",
       [](auto& z) {
         // Name "a.", then 3 bytes "npy" as an extra field: no record fits.
         put(z, central(z) + 28, 2, 2);
         put(z, central(z) + 30, 3, 2);
       },
       "malformed extra field"},
      {"empty name", [](auto& z) { put(z, central(z) + 28, 0, 2); }, "empty name"},
      {"CRC mismatch", [](auto& z) { z[64 + 100] ^= 0xFF; }, "CRC-32 mismatch", true},
  };
}

}  // namespace

TEST(Zip, HostileArchivesGiveClearErrors) {
  for (const auto& c : hostile_zip()) {
    SCOPED_TRACE(c.name);
    auto z = make_zip({{"a.npy", kData, false}});
    ASSERT_EQ(read_all(z), "a.npy=" + kData + ";");
    c.corrupt(z);
    if (c.at_read) {
      const auto dir = directory(z);
      EXPECT_ERROR(read_member(z, dir[0]), c.message);
    } else {
      EXPECT_ERROR(directory(z), c.message);
      EXPECT_ERROR(directory(z), "npz::load(\"t.npz\"): ");
    }
  }
}

TEST(Zip, DuplicateNamesAreRefused) {
  auto z = make_zip({{"a.npy", "1", false}, {"b.npy", "2", false}});
  // Rename b.npy to a.npy in both headers.
  const size_t second_local = get32(z, central(z) + 46 + 5 + 42);
  z[second_local + 30] = 'a';
  z[central(z) + 46 + 5 + 46] = 'a';
  EXPECT_ERROR(directory(z), "two members named \"a.npy\"; loading it would drop one");
}

TEST(Zip, NamesThatCollideOnceDecodedAreRefused) {
  // "\x82.npy" without the UTF-8 flag is code page 437 for "\u00e9.npy", the
  // UTF-8-flagged second name: keyed by name, one member would vanish.
  auto z = make_zip({{"X.npy", "1", false}, {"\xc3\xa9.npy", "2", false}});
  ASSERT_EQ(z[30], 'X');
  ASSERT_EQ(z[central(z) + 46], 'X');
  z[30] = 0x82;
  z[central(z) + 46] = 0x82;
  EXPECT_ERROR(directory(z),
               "two members named \"\xc3\xa9.npy\" once decoded, from '\\x82.npy' "
               "(code page 437, no UTF-8 flag) and '\\xc3\\xa9.npy' (UTF-8)");
}

TEST(Zip, SkipChecksTheCrcInPlaceOrByReading) {
  for (bool compress : {false, true}) {
    SCOPED_TRACE(compress);
    auto z = make_zip({{"a.npy", pattern(5000), compress}});
    const ZipMember m = directory(z)[0];
    auto skip_all = [&] {
      MemorySource src(z.data(), z.size(), "npz::load(\"t.npz\")");
      MemberStream in(src, m, "npz::load(\"t.npz\"), member");
      std::string head(10, '\0');
      in.read(&head[0], head.size(), "header");
      in.skip(in.remaining(), "data");
      EXPECT_EQ(in.remaining(), 0u);
      in.finish();
    };
    skip_all();
    {
      MemorySource src(z.data(), z.size(), "t");
      MemberStream in(src, m, "t");
      EXPECT_ERROR(in.skip(m.size + 1, "data"), "truncated member");
    }
    if (!compress) {
      z[m.data_offset + m.size - 1] ^= 0x55;  // the last byte
      EXPECT_ERROR(skip_all(), "CRC-32 mismatch");
    }
  }
}

TEST(Zip, OverlappingMembersAreRefused) {
  // The overlapping-member zip bomb: two entries sharing one local header
  // region (here: the second entry points at the first one's header).
  auto z = make_zip({{"a.npy", kData, false}, {"b.npy", kData, false}});
  const size_t second_entry = central(z) + 46 + 5;
  put(z, second_entry + 42, 0, 4);  // local offset -> the first member
  EXPECT_ERROR(directory(z), "the local header names it 'a.npy'");
  // A local header inside the previous member's data.
  auto y = make_zip({{"a.npy", kData, false}, {"b.npy", kData, false}});
  const size_t b_local = get32(y, central(y) + 46 + 5 + 42);
  // Move b's local header 100 bytes into a's data by copying it there.
  const size_t new_local = b_local - 100;
  std::copy(y.begin() + static_cast<long>(b_local), y.begin() + static_cast<long>(b_local + 30 + 5 + 64),
            y.begin() + static_cast<long>(new_local));
  put(y, central(y) + 46 + 5 + 42, new_local, 4);
  EXPECT_ERROR(directory(y), "overlap");
}

TEST(Zip, DeflateLiesAreCaught) {
  const std::string data = pattern(5000);
  // Declared size larger than deflate can produce from the compressed bytes.
  {
    auto z = make_zip({{"a.npy", std::string(10000, 'q'), true}});
    const uint64_t csize = get32(z, central(z) + 20);
    const uint64_t lie = csize * 1032 + 1000;
    put(z, central(z) + 24, lie, 4);
    put(z, 22, lie, 4);
    EXPECT_ERROR(directory(z), "over deflate's maximum ratio of 1032:1");
  }
  // Declared size smaller than the stream inflates to: a zip bomb that lies.
  {
    auto z = make_zip({{"a.npy", data, true}});
    put(z, central(z) + 24, 4000, 4);
    put(z, 22, 4000, 4);
    const auto dir = directory(z);
    EXPECT_ERROR(read_member(z, dir[0]), "inflates to more than the 4000 bytes");
  }
  // Declared size larger than the stream holds.
  {
    auto z = make_zip({{"a.npy", data, true}});
    put(z, central(z) + 24, 6000, 4);
    put(z, 22, 6000, 4);
    const auto dir = directory(z);
    EXPECT_ERROR(read_member(z, dir[0]), "ends after 5000 bytes, but the member declares 6000");
  }
  // Compressed size smaller than the stream: it stops early.
  {
    auto z = make_zip({{"a.npy", data, true}});
    const uint32_t csize = get32(z, central(z) + 20);
    put(z, central(z) + 20, csize / 2, 4);
    put(z, 18, csize / 2, 4);
    const auto dir = directory(z);
    EXPECT_ERROR(read_member(z, dir[0]), "truncated compressed data");
  }
  // Garbage instead of deflate data.
  {
    auto z = make_zip({{"a.npy", data, true}});
    const auto dir = directory(z);
    for (size_t i = 0; i < 16; ++i) z[dir[0].data_offset + i] = 0xFF;
    EXPECT_ERROR(read_member(z, dir[0]), "corrupt compressed data");
  }
  // Reading more than the member declares.
  {
    auto z = make_zip({{"a.npy", data, false}});
    const auto dir = directory(z);
    MemorySource src(z.data(), z.size(), "t");
    MemberStream in(src, dir[0], "t");
    std::string buf(6000, '\0');
    EXPECT_ERROR(in.read(buf.data(), buf.size(), "data"), "truncated member");
  }
}

TEST(Zip, Zip64RecordsMustAgree) {
  const auto good = make_zip({{"a.npy", kData, false}}, /*force_zip64=*/true);
  ASSERT_EQ(read_all(good), "a.npy=" + kData + ";");
  const size_t end = good.size() - 22;
  const size_t locator = end - 20;
  const uint64_t z64 = get32(good, locator + 8);
  {
    auto z = good;
    put(z, z64 + 48, 12345, 8);  // zip64 central directory offset
    EXPECT_ERROR(directory(z), "bad central directory");
  }
  {
    auto z = good;
    put(z, end + 16, 12345, 4);  // a 32-bit offset that is not the sentinel
    EXPECT_ERROR(directory(z), "disagrees with the end record");
  }
  {
    auto z = good;
    put(z, locator + 8, z64 - 3, 8);
    EXPECT_ERROR(directory(z), "bad zip64 end record: wrong signature");
  }
  {
    auto z = good;
    put(z, locator + 8, 0xFFFFFFFFFFFF, 8);
    EXPECT_ERROR(directory(z), "bad zip64 end locator");
  }
  {
    auto z = good;
    put(z, z64 + 4, 1000, 8);  // record size
    EXPECT_ERROR(directory(z), "its size field");
  }
  {
    auto z = good;
    put(z, z64 + 24, 7, 8);  // entry counts
    put(z, z64 + 32, 7, 8);
    EXPECT_ERROR(directory(z), "claims 7 entries");
  }
  {
    auto z = good;
    put(z, locator + 16, 2, 4);  // total disks
    EXPECT_ERROR(directory(z), "multi-disk");
  }
  {
    // The central entry's zip64 extra is too short for its sentinels.
    auto z = good;
    const size_t cd = get32(good, z64 + 48);
    put(z, cd + 46 + 5 + 2, 8, 2);  // zip64 extra size: 8 of 24 bytes
    EXPECT_ERROR(directory(z), "too few for the 24");
  }
  {
    // The local zip64 extra disagrees with the central directory.
    auto z = good;
    put(z, 30 + 5 + 4, 1, 8);  // local zip64 uncompressed size
    EXPECT_ERROR(directory(z), "disagree with the central directory");
  }
}

TEST(Zip, NotAZip) {
  const std::string n = npy(kF4_34, k48);
  const std::vector<uint8_t> z(n.begin(), n.end());
  EXPECT_ERROR(directory(z), "it is a .npy file: load it with npy::load");
}

TEST(Zip, WriterRefusesBadNames) {
  MemorySink sink;
  ZipWriter zip(sink, "npz::save(\"t\")");
  EXPECT_ERROR(zip.begin_member("", 0, false), "cannot be stored");
  EXPECT_ERROR(zip.begin_member(std::string("a\0b", 3), 0, false), "cannot be stored");
}

// ----------------------------------------- read_zip_directory, step by step

// read_end_record: the end record is found from the back, its comment must
// fit in the file, and a file too short for one is not a zip.
TEST(ZipEndRecord, ACommentAfterTheEndRecordIsAccepted) {
  auto z = make_zip({{"a.npy", kData, false}});
  put(z, eocd(z) + 20, 5, 2);
  for (char c : std::string("hello")) z.push_back(static_cast<uint8_t>(c));
  EXPECT_EQ(read_all(z), "a.npy=" + kData + ";");
}

TEST(ZipEndRecord, AFakeSignatureWhoseCommentDoesNotFitIsSkipped) {
  // The real record's comment holds "PK\5\6" and a comment length running
  // past the file: the scan from the back must pass over it.
  auto z = make_zip({{"a.npy", kData, false}});
  put(z, eocd(z) + 20, 22, 2);
  std::vector<uint8_t> fake(22, 0);
  put(fake, 0, 0x06054b50, 4);
  put(fake, 20, 0xFFFF, 2);
  z.insert(z.end(), fake.begin(), fake.end());
  EXPECT_EQ(read_all(z), "a.npy=" + kData + ";");
}

TEST(ZipEndRecord, TruncatedOrOverlongEndRecordsAreNotZips) {
  {
    auto z = make_zip({{"a.npy", kData, false}});
    z.resize(z.size() - 5);  // the last 5 bytes of the end record gone
    EXPECT_ERROR(directory(z),
                 "npz::load(\"t.npz\"): not a zip archive: no end-of-central-directory record");
  }
  {
    auto z = make_zip({{"a.npy", kData, false}});
    put(z, eocd(z) + 20, 10, 2);  // a 10-byte comment that is not there
    EXPECT_ERROR(directory(z), "not a zip archive: no end-of-central-directory record");
  }
  {
    const std::vector<uint8_t> z(21, 'P');
    EXPECT_ERROR(directory(z), "not a zip archive: it has 21 bytes, fewer than the 22");
  }
}

TEST(ZipEndRecord, ShortNpyFilesArePointedAtNpyLoad) {
  const std::string n = std::string(kMagic, kMagicLen) + "\x01\x00\x02\x00{}"s;
  const std::vector<uint8_t> z(n.begin(), n.end());
  EXPECT_ERROR(directory(z),
               "it has 12 bytes, fewer than the 22 of an empty archive (it is a "
               ".npy file: load it with npy::load)");
}

// read_zip64_end: the locator must point at a zip64 record that fits before
// it, on disk 0, and the record must agree with the 32-bit end record.
namespace {
struct Zip64Layout {
  std::vector<uint8_t> z;
  size_t end, locator, record;
};
Zip64Layout zip64_archive() {
  Zip64Layout l;
  l.z = make_zip({{"a.npy", kData, false}}, /*force_zip64=*/true);
  l.end = l.z.size() - 22;
  l.locator = l.end - 20;
  l.record = get32(l.z, l.locator + 8);
  return l;
}
}  // namespace

TEST(ZipZip64End, LocatorPointingOutsideTheFileOrTooCloseIsRefused) {
  {
    auto l = zip64_archive();
    put(l.z, l.locator + 8, l.z.size(), 8);  // one past the last byte
    EXPECT_ERROR(directory(l.z), "bad zip64 end locator: it points at offset " +
                                     std::to_string(l.z.size()) +
                                     ", where no zip64 end record fits");
  }
  {
    auto l = zip64_archive();
    put(l.z, l.locator + 8, l.locator - 10, 8);  // 10 bytes: a record is 56
    EXPECT_ERROR(directory(l.z), "bad zip64 end locator: it points at offset " +
                                     std::to_string(l.locator - 10));
  }
}

TEST(ZipZip64End, LocatorOnAnotherDiskIsMultiDisk) {
  auto l = zip64_archive();
  put(l.z, l.locator + 4, 1, 4);  // the disk holding the zip64 record
  EXPECT_ERROR(directory(l.z), "multi-disk (spanned) zip archives are not supported");
}

TEST(ZipZip64End, ThirtyTwoBitFieldsThatAreNotSentinelsMustAgree) {
  {
    auto l = zip64_archive();
    put(l.z, l.end + 10, 3, 2);  // entry count
    EXPECT_ERROR(directory(l.z),
                 "the zip64 end record disagrees with the end record on the "
                 "entry count (1 vs 3)");
  }
  {
    auto l = zip64_archive();
    put(l.z, l.end + 12, 5, 4);  // central directory size
    EXPECT_ERROR(directory(l.z), "on the central directory size (");
    EXPECT_ERROR(directory(l.z), " vs 5)");
  }
}

// check_directory_extent: where the directory lies and what it may hold.
TEST(ZipDirectoryExtent, EntriesOnThisDiskMustBeAllEntries) {
  auto z = make_zip({{"a.npy", kData, false}});
  put(z, eocd(z) + 8, 0, 2);  // 0 entries here, 1 in all
  EXPECT_ERROR(directory(z), "multi-disk (spanned) zip archives are not supported");
}

TEST(ZipDirectoryExtent, AnOffsetThatOverflowsIsRefusedBeforeAnyRead) {
  auto l = zip64_archive();
  put(l.z, l.record + 48, 0xFFFFFFFFFFFFFFF0ull, 8);  // zip64 directory offset
  EXPECT_ERROR(directory(l.z), "the central directory's end overflows 64 bits");
}

TEST(ZipDirectoryExtent, TheDirectoryMustEndAtTheZip64Record) {
  auto l = zip64_archive();
  const uint64_t cd_size = get32(l.z, l.record + 40);
  put(l.z, l.record + 40, cd_size - 1, 8);
  EXPECT_ERROR(directory(l.z), "but the end record is at " + std::to_string(l.record));
}

// read_central_directory / parse_central_entry: the entries, as counted.
TEST(ZipCentralDirectory, AnEntryCutShortByItsNeighbourIsTruncated) {
  auto z = make_zip({{"a.npy", "1", false}, {"b.npy", "2", false}});
  put(z, central(z) + 32, 10, 2);  // entry 0's comment eats 10 of entry 1's bytes
  EXPECT_ERROR(directory(z), "bad central directory: central directory entry 1 is truncated");
}

TEST(ZipCentralDirectory, EntryCountMismatchesAreNamed) {
  auto z = make_zip({{"a.npy", "1", false}, {"b.npy", "2", false}});
  put(z, eocd(z) + 8, 1, 2);
  put(z, eocd(z) + 10, 1, 2);
  EXPECT_ERROR(directory(z), "bad central directory: 51 bytes follow its 1 entries "
                             "(the end record's entry count is wrong)");
}

TEST(ZipCentralDirectory, NamesWithNulAndOtherDisksAreRefused) {
  {
    auto z = make_zip({{"a.npy", kData, false}});
    z[central(z) + 46 + 1] = '\0';
    EXPECT_ERROR(directory(z), "central directory entry 0 has an empty name or one with a NUL byte");
  }
  {
    auto z = make_zip({{"a.npy", kData, false}});
    put(z, central(z) + 34, 2, 2);  // the disk the member starts on
    EXPECT_ERROR(directory(z), "multi-disk (spanned) zip archives are not supported");
  }
}

// check_local_header: the local header must repeat the central entry.
TEST(ZipLocalHeader, DisagreementsWithTheCentralDirectoryAreNamed) {
  {
    auto z = make_zip({{"a.npy", kData, false}});
    put(z, 26, 0xFFFF, 2);  // local name length
    EXPECT_ERROR(directory(z),
                 "member 'a.npy': its local header runs into the central directory");
  }
  {
    auto z = make_zip({{"a.npy", kData, false}});
    put(z, 6, 1, 2);  // encrypted, in the local header only
    EXPECT_ERROR(directory(z), "member 'a.npy': the local header's method or flags (0, 1) "
                               "disagree with the central directory's (0, 0)");
  }
  {
    auto z = make_zip({{"a.npy", kData, false}});
    put(z, 22, 7, 4);  // local uncompressed size
    EXPECT_ERROR(directory(z), "member 'a.npy': the local header's CRC and sizes (");
    EXPECT_ERROR(directory(z), ", 3000, 7) disagree with the central directory's (");
  }
}

TEST(ZipLocalHeader, ADataDescriptorLeavesLocalSizesUnchecked) {
  // Streaming writers put CRC and sizes after the data (flag bit 3) and
  // zeros in the local header; the central directory is then the truth.
  auto z = make_zip({{"a.npy", kData, false}});
  put(z, central(z) + 8, 0x0008, 2);
  put(z, 6, 0x0008, 2);
  put(z, 14, 0, 4);  // CRC-32
  put(z, 18, 0, 4);  // compressed size
  put(z, 22, 0, 4);  // size
  EXPECT_EQ(read_all(z), "a.npy=" + kData + ";");
}

// check_no_overlap: data running into the next member.
TEST(ZipOverlap, DataRunningIntoTheNextLocalHeaderIsRefused) {
  auto z = make_zip({{"a.npy", kData, false}, {"b.npy", kData, false}});
  const uint64_t grown = kData.size() + 200;  // past b's header (padding < 64)
  put(z, central(z) + 20, grown, 4);
  put(z, central(z) + 24, grown, 4);
  put(z, 18, grown, 4);
  put(z, 22, grown, 4);
  EXPECT_ERROR(directory(z), "member 'a.npy' and member 'b.npy' overlap in the archive");
}

// decode_names: code page 437 names, one-, two- and three-byte UTF-8.
TEST(ZipNames, CodePage437DecodesEveryRangeToUtf8) {
  auto z = make_zip({{"a\x80\xb0\xff.npy", "x", false}});
  put(z, central(z) + 8, 0, 2);  // no UTF-8 flag
  // 'a', U+00C7 (Ç), U+2591 (light shade), U+00A0 (no-break space).
  EXPECT_EQ(directory(z)[0].name, "a\xc3\x87\xe2\x96\x91\xc2\xa0.npy");
}

TEST(ZipNames, UnflaggedAsciiNamesAreUnchanged) {
  auto z = make_zip({{"plain-name_1.npy", "x", false}});
  put(z, central(z) + 8, 0, 2);
  EXPECT_EQ(directory(z)[0].name, "plain-name_1.npy");
}

// ---------------------------------------------------------------- sniff

TEST(Sniff, TellsNpyZipAndOtherFromTheFirstBytes) {
  auto kind = [](const std::string& s) {
    return sniff(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(kind("\x93NUMPY\x01\x00"s), FileKind::kNpy);
  EXPECT_EQ(kind("PK\x03\x04rest"s), FileKind::kZip);
  EXPECT_EQ(kind("PK\x05\x06"s), FileKind::kZip);       // an empty archive, 4 bytes
  EXPECT_EQ(kind("PK\x01\x02 central"s), FileKind::kOther);
  EXPECT_EQ(kind("\x93NUMP"s), FileKind::kOther);       // too short to be .npy
  EXPECT_EQ(kind(""), FileKind::kOther);
  const auto z = make_zip({{"a.npy", "1", false}});
  EXPECT_EQ(sniff(MemorySource(z.data(), z.size(), "t")), FileKind::kZip);
  const std::string n = npy(kF4_34, k48);
  EXPECT_EQ(sniff(MemorySource(n.data(), n.size(), "t")), FileKind::kNpy);
  EXPECT_EQ(sniff(MemorySource(n.data(), 3, "t")), FileKind::kOther);
}

TEST(Sniff, NpyLoadPointsAtNpzLoadForShortZipMagicOnly) {
  EXPECT_ERROR(parse("PK\x03\x04xx"s), "not a .npy file: it starts like a zip archive");
  EXPECT_ERROR(parse("PKxxxx"s), "it has 6 bytes, fewer than the 10 bytes");
  EXPECT_ERROR(parse("PK\x05\x06 and more"s), "(it is a zip archive: load .npz files with npz::load)");
}

// ---------------------------------------------------------------- files

TEST(Files, MissingFileIsAnIoErrorWithErrno) {
  try {
    FileSource f("/nonexistent/dir/x.npy", api("npy::load", "/nonexistent/dir/x.npy"));
    ADD_FAILURE() << "no error";
  } catch (const IoError& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_NE(std::string(e.what()).find(
                  "npy::load(\"/nonexistent/dir/x.npy\"): cannot open the file: No such file"),
              std::string::npos)
        << e.what();
  }
  try {
    FileSource f("/", "npy::load(\"/\")");
    ADD_FAILURE() << "no error";
  } catch (const IoError& e) {
    EXPECT_EQ(e.code(), EISDIR);
    EXPECT_NE(std::string(e.what()).find("cannot open the file: Is a directory"),
              std::string::npos) << e.what();
  }
  EXPECT_ERROR(FileSource("/dev/null", "npy::load(\"/dev/null\")"), "not a regular file");
}

TEST(Files, IoErrorIsPublicAndCarriesThePathAndErrno) {
  static_assert(std::is_base_of_v<torchbridge::Error, torchbridge::IoError>);
  static_assert(std::is_nothrow_copy_constructible_v<torchbridge::IoError>);
  const std::string p = "/nonexistent/dir/x.npy";
  try {
    FileSource f(p, api("npy::load", p));
    ADD_FAILURE() << "no error";
  } catch (const torchbridge::IoError& e) {
    const torchbridge::IoError copy = e;
    EXPECT_EQ(copy.path(), p);
    EXPECT_EQ(copy.code(), ENOENT);
    EXPECT_EQ(std::string(copy.what()),
              "npy::load(\"/nonexistent/dir/x.npy\"): cannot open the file: " +
                  std::string(std::strerror(ENOENT)));
  }
  const std::string q = "/nonexistent/dir/y.npy";
  try {
    AtomicFile f(q, api("npy::save", q));
    ADD_FAILURE() << "no error";
  } catch (const torchbridge::IoError& e) {
    EXPECT_EQ(e.path(), q);
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("npy::save(\"/nonexistent/dir/y.npy\"): cannot create the file"),
              std::string::npos) << e.what();
  }
  try {
    FileSource f("/dev/null", api("load", "/dev/null"));
    ADD_FAILURE() << "no error";
  } catch (const torchbridge::IoError& e) {
    EXPECT_EQ(e.path(), "/dev/null");
    EXPECT_EQ(e.code(), EINVAL);
  }
}

TEST(Files, ApiQuotesOddPaths) {
  EXPECT_EQ(api("npy::load", "a\"b\n.npy"), "npy::load(\"a\\\"b\\x0a.npy\")");
}

// ---------------------------------------------------------------- file safety

namespace {

// A fresh directory under /tmp (mode 0777, so a child that dropped root can
// use it), removed with everything in it.
struct ScratchDir {
  ScratchDir() {
    char tmpl[] = "/tmp/tb-format-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), 0777);
  }
  ~ScratchDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.push_back(e->d_name);
      }
      ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string path;
};

void save_bytes(const std::string& path, const std::string& bytes) {
  AtomicFile f(path, api("npy::save", path));
  f.write(bytes.data(), bytes.size());
  f.commit();
}

std::string slurp(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// The errno of the IoError `stmt` throws (0 if none; -1 for another Error).
template <class F>
int io_errno(F&& stmt, std::string* message = nullptr) {
  try {
    stmt();
  } catch (const IoError& e) {
    if (message) *message = e.what();
    return e.code();
  } catch (const torchbridge::Error& e) {
    if (message) *message = e.what();
    return -1;
  }
  return 0;
}

}  // namespace

TEST(Files, NonRegularFilesAreRefusedWithoutBlocking) {
  ScratchDir d;
  ASSERT_EQ(::mkfifo((d / "fifo").c_str(), 0666), 0);
  std::string msg;
  // No writer: a blocking open() would never return.
  EXPECT_EQ(io_errno([&] { FileSource f(d / "fifo", "load(\"fifo\")"); }, &msg), EINVAL);
  EXPECT_NE(msg.find("load(\"fifo\"): is a FIFO (named pipe), not a regular file; "),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("copy it to a regular file first"), std::string::npos) << msg;
  EXPECT_EQ(io_errno([&] { FileSource f("/dev/null", "w"); }, &msg), EINVAL);
  EXPECT_NE(msg.find("is a character device"), std::string::npos) << msg;
}

TEST(Files, OneOpenServesSniffingAndReadingUnderANewName) {
  ScratchDir d;
  save_bytes(d / "a", "PK\x05\x06 and more");
  FileSource first(d / "a", "load(\"a\")");
  char head[4];
  first.read(0, head, 4, "the magic");
  FileSource second(std::move(first), "npz::load(\"a\")");
  EXPECT_EQ(first.fd(), -1);
  EXPECT_EQ(second.size(), 13u);
  EXPECT_ERROR(second.read(10, head, 8, "x"), "npz::load(\"a\"): truncated file");
}

TEST(Files, SaveWritesThroughSymlinksToTheFinalTarget) {
  ScratchDir d;
  ASSERT_EQ(::mkdir((d / "real").c_str(), 0777), 0);
  save_bytes(d / "real/a", "old");
  ASSERT_EQ(::symlink("real/a", (d / "l1").c_str()), 0);     // relative
  ASSERT_EQ(::symlink((d / "l1").c_str(), (d / "l2").c_str()), 0);  // a chain
  ASSERT_EQ(::symlink("real/new", (d / "dangling").c_str()), 0);
  save_bytes(d / "l2", "new");
  save_bytes(d / "dangling", "created");
  EXPECT_EQ(slurp(d / "real/a"), "new");
  EXPECT_EQ(slurp(d / "real/new"), "created");
  struct stat st;
  for (const char* link : {"l1", "l2", "dangling"}) {
    ASSERT_EQ(::lstat((d / link).c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode)) << link;
  }
  EXPECT_EQ(d.names(), (std::vector<std::string>{"dangling", "l1", "l2", "real"}));
  ASSERT_EQ(::symlink("loop", (d / "loop").c_str()), 0);
  EXPECT_EQ(io_errno([&] { save_bytes(d / "loop", "x"); }), ELOOP);
}

TEST(Files, SaveRefusesNonRegularTargetsBeforeWriting) {
  ScratchDir d;
  ASSERT_EQ(::mkfifo((d / "fifo").c_str(), 0666), 0);
  ASSERT_EQ(::symlink("fifo", (d / "to_fifo").c_str()), 0);
  std::string msg;
  for (const char* name : {"fifo", "to_fifo"}) {
    EXPECT_EQ(io_errno([&] { save_bytes(d / name, "x"); }, &msg), EINVAL) << name;
    EXPECT_NE(msg.find("is a FIFO (named pipe), not a regular file"), std::string::npos) << msg;
    EXPECT_NE(msg.find("save to a regular file path"), std::string::npos) << msg;
  }
  struct stat st;
  ASSERT_EQ(::lstat((d / "fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(io_errno([&] { save_bytes(d.path, "x"); }), EISDIR);
  EXPECT_EQ(d.names(), (std::vector<std::string>{"fifo", "to_fifo"}));
}

TEST(Files, SaveRewritesHardLinkedFilesInPlace) {
  ScratchDir d;
  save_bytes(d / "a", std::string(10000, 'a'));
  ASSERT_EQ(::link((d / "a").c_str(), (d / "b").c_str()), 0);
  for (const std::string& bytes : {std::string("short"), std::string(20000, 'z')}) {
    save_bytes(d / "a", bytes);
    EXPECT_EQ(slurp(d / "b"), bytes);
    struct stat sa, sb;
    ASSERT_EQ(::stat((d / "a").c_str(), &sa), 0);
    ASSERT_EQ(::stat((d / "b").c_str(), &sb), 0);
    EXPECT_EQ(sa.st_ino, sb.st_ino);
    EXPECT_EQ(sa.st_nlink, 2u);
  }
  // A save that never commits leaves the target as it was.
  {
    AtomicFile f(d / "a", "t");
    f.write("partial", 7);
  }
  EXPECT_EQ(slurp(d / "b"), std::string(20000, 'z'));
  EXPECT_EQ(d.names(), (std::vector<std::string>{"a", "b"}));
}

TEST(Files, SaveKeepsModeAndTakesLongNames) {
  ScratchDir d;
  const std::string name(250, 'n');  // NAME_MAX is 255
  save_bytes(d / name, "1");
  ASSERT_EQ(::chmod((d / name).c_str(), 0640), 0);
  save_bytes(d / name, "2");
  struct stat st;
  ASSERT_EQ(::stat((d / name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(slurp(d / name), "2");
  EXPECT_EQ(d.names(), std::vector<std::string>{name});
}

TEST(Files, SaveRefusesAFileThisUserMayNotWrite) {
  ScratchDir d;
  save_bytes(d / "ro", "keep");
  ASSERT_EQ(::chmod((d / "ro").c_str(), 0444), 0);
  // Root may write anything, so the check runs in a child that drops to
  // nobody (65534) when we are root.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(77);
    std::string msg;
    const int e = io_errno([&] { save_bytes(d / "ro", "lost"); }, &msg);
    const bool said = msg.find("not writable by this user (mode 0444") != std::string::npos;
    ::_exit(e == EACCES && said ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot drop root privileges here";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(slurp(d / "ro"), "keep");
  EXPECT_EQ(d.names(), std::vector<std::string>{"ro"});
}
