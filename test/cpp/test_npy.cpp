// torchbridge::npy / npz: files written by NumPy load, files we write match
// numpy.save byte for byte, mmap is a zero-copy private view, and malformed
// or hostile files give torchbridge::Error naming the file and the fault.
// The NumPy-written files come from make_numpy_files.py (the CTest fixture
// npy.numpy_files); the hostile corpus of the parsers alone is in
// format/test_format.cpp.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>

#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <variant>

#ifndef TORCHBRIDGE_NUMPY_FILES
#define TORCHBRIDGE_NUMPY_FILES ""
#endif

namespace fs = std::filesystem;
namespace npy = torchbridge::npy;
namespace npz = torchbridge::npz;
using torchbridge::testing::numpy_dtypes;
using namespace std::string_literals;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tb_npy_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

const std::map<std::string, at::ScalarType>& dtypes_by_name() {
  static const std::map<std::string, at::ScalarType> m = {
      {"bool", at::kBool},        {"int8", at::kChar},         {"int16", at::kShort},
      {"int32", at::kInt},        {"int64", at::kLong},        {"uint8", at::kByte},
      {"uint16", at::kUInt16},    {"uint32", at::kUInt32},     {"uint64", at::kUInt64},
      {"float16", at::kHalf},     {"float32", at::kFloat},     {"float64", at::kDouble},
      {"complex64", at::kComplexFloat}, {"complex128", at::kComplexDouble}};
  return m;
}

std::vector<int64_t> parse_shape(const std::string& s) {
  std::vector<int64_t> shape;
  if (s == "-") return shape;
  std::stringstream in(s);
  std::string d;
  while (std::getline(in, d, 'x')) shape.push_back(std::stoll(d));
  return shape;
}

// make_numpy_files.py's value rule, element i in C order.
at::Tensor expected_values(at::ScalarType st, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  const auto i = at::arange(n, at::kLong);
  const auto v = (i * 7).remainder(127) - 60;
  static const std::map<size_t, int64_t> mult = {
      {1, 1}, {2, 251}, {4, 16000057}, {8, 1099511627791}};
  at::Tensor a;
  if (st == at::kBool) {
    a = i.remainder(3) == 0;
  } else if (at::isComplexType(st)) {
    const auto vd = v.to(at::kDouble);
    // + 0.0 turns -0.0 into +0.0, as NumPy's `- x * 1j` does.
    a = at::complex(vd * 0.25, -(vd * 0.5 + 1) + 0.0).to(st);
  } else if (at::isFloatingType(st)) {
    a = (v.to(at::kDouble) * 0.25 + 0.125).to(st);
  } else if (st == at::kByte || st == at::kUInt16 || st == at::kUInt32 ||
             st == at::kUInt64) {
    a = ((i * 7).remainder(127) * mult.at(c10::elementSize(st))).to(st);
  } else {
    a = (v * mult.at(c10::elementSize(st))).to(st);
  }
  return a.reshape(shape);
}

// Column-major copy of `t` (same values, Fortran layout).
at::Tensor fortran(const at::Tensor& t) {
  std::vector<int64_t> rev;
  for (int64_t d = t.dim() - 1; d >= 0; --d) rev.push_back(d);
  return t.permute(rev).contiguous().permute(rev);
}

std::vector<int64_t> column_major_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t acc = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    s[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return s;
}

// The bytes of each item (each part of a complex) reversed.
at::Tensor swap_bytes(const at::Tensor& t) {
  const int64_t unit = at::isComplexType(t.scalar_type())
                           ? static_cast<int64_t>(t.element_size()) / 2
                           : static_cast<int64_t>(t.element_size());
  auto bytes = t.contiguous().reshape({-1}).view(at::kByte).reshape({-1, unit}).flip({1});
  return bytes.contiguous().reshape({-1}).view(t.scalar_type()).reshape(t.sizes());
}

struct Manifest {
  std::string skip;  // non-empty: why the NumPy-written files are missing
  std::string dir;
  std::vector<std::vector<std::string>> lines;
};

const Manifest& manifest() {
  static const Manifest m = [] {
    Manifest m;
    m.dir = TORCHBRIDGE_NUMPY_FILES;
    std::ifstream f(m.dir + "/manifest.txt");
    if (!f) {
      m.skip = "no NumPy-written files in '" + m.dir +
               "': run the tests with ctest, whose npy.numpy_files fixture "
               "writes them";
      return m;
    }
    std::string line;
    while (std::getline(f, line)) {
      std::stringstream in(line);
      std::vector<std::string> words;
      std::string w;
      while (in >> w) words.push_back(w);
      if (words.empty()) continue;
      if (words[0] == "skip") {
        m.skip = line.substr(5);
        return m;
      }
      m.lines.push_back(words);
    }
    return m;
  }();
  return m;
}

#define NEED_NUMPY_FILES()                                  \
  if (!manifest().skip.empty()) GTEST_SKIP() << manifest().skip

std::string rest(const std::vector<std::string>& w, size_t from) {
  std::string s;
  for (size_t i = from; i < w.size(); ++i) s += (i > from ? " " : "") + w[i];
  return s;
}

bool is_mapped(const std::string& path) {
  const std::string maps = read_file("/proc/self/maps");
  return maps.find(fs::weakly_canonical(path).string()) != std::string::npos;
}

size_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

std::string npy_bytes(const std::string& dict, const std::string& data = "") {
  std::string header = dict;
  header.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');
  header += '\n';
  return "\x93NUMPY\x01\x00"s + static_cast<char>(header.size() & 0xFF) +
         static_cast<char>(header.size() >> 8) + header + data;
}

const bool kLittle = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

}  // namespace

// ------------------------------------------------------- files NumPy wrote

TEST(NpyNumpyFiles, EveryDtypeOrderByteOrderAndVersionLoads) {
  NEED_NUMPY_FILES();
  int count = 0;
  for (const auto& w : manifest().lines) {
    if (w[0] != "npy") continue;
    SCOPED_TRACE(w[1]);
    const std::string path = manifest().dir + "/" + w[1];
    const auto st = dtypes_by_name().at(w[2]);
    const auto shape = parse_shape(w[3]);
    const bool is_fortran = w[4] == "1";
    const bool swapped = (w[5] == ">" && kLittle) || (w[5] == "<" && !kLittle);
    const at::Tensor expected = expected_values(st, shape);

    const at::Tensor t = npy::load(path);
    EXPECT_EQ(t.scalar_type(), st);
    EXPECT_EQ(t.sizes().vec(), shape);
    EXPECT_TRUE(at::equal(t, expected));
    if (is_fortran) EXPECT_EQ(t.strides().vec(), column_major_strides(shape));

    if (swapped) {
      EXPECT_THROW_MSG(npy::load(path, {.mmap = true}), torchbridge::Error,
                       "pass mmap = false to load a copy (or "
                       "to_native_byte_order = false to map the raw bytes)");
      // The raw bytes, copied or mapped, are the values byte-swapped.
      const at::Tensor raw = npy::load(path, {.to_native_byte_order = false});
      const at::Tensor mapped =
          npy::load(path, {.mmap = true, .to_native_byte_order = false});
      EXPECT_TRUE(at::equal(swap_bytes(raw), expected));
      EXPECT_TRUE(at::equal(swap_bytes(mapped), expected));
    } else {
      const at::Tensor m = npy::load(path, {.mmap = true});
      EXPECT_TRUE(at::equal(m, expected));
      EXPECT_EQ(m.strides(), t.strides());
    }
    ++count;
  }
  EXPECT_GE(count, 280);
}

TEST(NpyNumpyFiles, SaveWritesNumpySaveBytesExactly) {
  NEED_NUMPY_FILES();
  TempDir tmp;
  int count = 0;
  for (const auto& w : manifest().lines) {
    if (w[0] != "same") continue;
    SCOPED_TRACE(w[1]);
    auto t = expected_values(dtypes_by_name().at(w[2]), parse_shape(w[3]));
    if (w[4] == "1") t = fortran(t);
    npy::save(tmp / "ours.npy", t);
    EXPECT_EQ(read_file(tmp / "ours.npy"), read_file(manifest().dir + "/" + w[1]));
    ++count;
  }
  EXPECT_EQ(count, 14 * 9);
}

TEST(NpyNumpyFiles, SavezAndSavezCompressedLoadInOrder) {
  NEED_NUMPY_FILES();
  int archives = 0;
  const auto& lines = manifest().lines;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (lines[k][0] != "npz") continue;
    const std::string path = manifest().dir + "/" + lines[k][1];
    const size_t n = std::stoul(lines[k][3]);
    for (bool mmap : {false, true}) {
      SCOPED_TRACE(lines[k][1] + (mmap ? " mmap" : ""));
      const npz::Arrays arrays = npz::load(path, {.mmap = mmap});
      ASSERT_EQ(arrays.size(), n);
      for (size_t i = 0; i < n; ++i) {
        const auto& m = lines[k + 1 + i];
        const auto& [name, t] = arrays[i];
        EXPECT_EQ(name, m[1]);
        const auto shape = parse_shape(m[3]);
        EXPECT_TRUE(at::equal(t, expected_values(dtypes_by_name().at(m[2]), shape))) << name;
        EXPECT_EQ(t.scalar_type(), dtypes_by_name().at(m[2]));
        if (m[4] == "1") EXPECT_EQ(t.strides().vec(), column_major_strides(shape)) << name;
      }
    }
    ++archives;
  }
  EXPECT_EQ(archives, 2);
}

TEST(NpyNumpyFiles, ArchiveOfMoreThan65535MembersUsesZip64) {
  NEED_NUMPY_FILES();
  for (const auto& w : manifest().lines) {
    if (w[0] != "many") continue;
    const npz::Arrays arrays = npz::load(manifest().dir + "/" + w[1]);
    const size_t n = std::stoul(w[2]);
    ASSERT_EQ(arrays.size(), n);
    for (size_t i : {size_t{0}, size_t{1}, n / 2, n - 1}) {
      EXPECT_EQ(arrays[i].first, "a" + std::to_string(i));
      EXPECT_EQ(arrays[i].second.dim(), 0);
      EXPECT_EQ(arrays[i].second.item<int32_t>(), static_cast<int32_t>(i));
    }
    return;
  }
  FAIL() << "no 'many' archive in the manifest";
}

TEST(NpyNumpyFiles, FilesWithoutATorchDtypeAreRefusedWithTheReason) {
  NEED_NUMPY_FILES();
  int count = 0;
  for (const auto& w : manifest().lines) {
    if (w[0] != "refuse" && w[0] != "refusez") continue;
    SCOPED_TRACE(w[1]);
    const std::string path = manifest().dir + "/" + w[1];
    for (bool mmap : {false, true}) {
      if (w[0] == "refuse") {
        EXPECT_THROW_MSG(npy::load(path, {.mmap = mmap}), torchbridge::Error, rest(w, 2));
        EXPECT_THROW_MSG(npy::load(path, {.mmap = mmap}), torchbridge::Error,
                         "npy::load(\"" + path + "\"): ");
      } else {
        EXPECT_THROW_MSG(npz::load(path, {.mmap = mmap}), torchbridge::Error, rest(w, 2));
        EXPECT_THROW_MSG(npz::load(path, {.mmap = mmap}), torchbridge::Error,
                         "npz::load(\"" + path + "\")");
      }
    }
    ++count;
  }
  EXPECT_GE(count, 9);
}

// ------------------------------------------------------- our round trips

TEST(Npy, RoundTripsEveryDtypeShapeAndLayout) {
  TempDir tmp;
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {3, 4}, {2, 0, 3}, {2, 3, 4}};
  for (auto st : numpy_dtypes()) {
    for (const auto& shape : shapes) {
      const at::Tensor base = expected_values(st, shape);
      std::vector<std::pair<const char*, at::Tensor>> layouts = {{"C", base}};
      if (base.dim() >= 2) {
        layouts.push_back({"F", fortran(base)});
        layouts.push_back({"strided", expected_values(st, {shape[0], shape[1] * 2})
                                          .reshape({shape[0], shape[1], 2})
                                          .select(2, 1)});
      }
      for (const auto& [name, t] : layouts) {
        SCOPED_TRACE(torchbridge::dtype_name(st) + " " + name + " " +
                     std::to_string(t.dim()));
        npy::save(tmp / "x.npy", t);
        for (bool mmap : {false, true}) {
          const at::Tensor back = npy::load(tmp / "x.npy", {.mmap = mmap});
          EXPECT_EQ(back.scalar_type(), st);
          EXPECT_EQ(back.sizes(), t.sizes());
          EXPECT_TRUE(at::equal(back, t));
          if (std::string(name) == "F" && t.numel() > 0) {
            EXPECT_EQ(back.strides(), t.strides()) << "Fortran order is kept";
          }
        }
      }
    }
  }
}

TEST(Npy, SavesWhateverTensorItIsGiven) {
  TempDir tmp;
  const auto z = at::complex(at::arange(4, at::kFloat), at::arange(4, at::kFloat) + 10);
  const std::vector<std::pair<const char*, at::Tensor>> cases = {
      {"requires_grad", at::arange(6, at::kFloat).requires_grad_()},
      {"conj", z.conj()},
      {"neg view", at::imag(z.conj())},
      {"expanded", at::arange(3, at::kLong).expand({4, 3})},
      {"transposed 3-d", at::arange(24, at::kInt).reshape({2, 3, 4}).permute({2, 0, 1})},
      {"storage offset", at::arange(10, at::kDouble).slice(0, 3, 9, 2)},
      {"sparse", at::eye(3, at::kFloat).to_sparse()},
      {"negative zero", at::tensor({-0.0, 0.0})},
  };
  for (const auto& [name, t] : cases) {
    SCOPED_TRACE(name);
    npy::save(tmp / "x.npy", t);
    const at::Tensor back = npy::load(tmp / "x.npy");
    const at::Tensor want = torchbridge::to_host(t).resolve_conj().resolve_neg();
    EXPECT_TRUE(at::equal(back, want.to_dense()));
    EXPECT_FALSE(back.requires_grad());
  }
  const auto nz = npy::load(tmp / "x.npy");
  EXPECT_TRUE(std::signbit(nz[0].item<double>()));
}

TEST(Npy, SaveRefusesDtypesNumpyLacksAndSaysWhatToDo) {
  TempDir tmp;
  for (auto st : {at::kBFloat16, at::ScalarType::Float8_e4m3fn, at::ScalarType::Float8_e5m2,
                  at::kComplexHalf}) {
    const auto t = at::ones({3}, at::kFloat).to(st);
    EXPECT_THROW_MSG(npy::save(tmp / "x.npy", t), c10::TypeError,
                     "npy::save: the tensor is " + torchbridge::dtype_name(st) +
                         ", which NumPy has no dtype for");
    EXPECT_THROW_MSG(npy::save(tmp / "x.npy", t), c10::TypeError,
                     "convert it first: to float32 (exact for bfloat16 and float8)");
  }
  // The suggested fix works, exactly.
  const auto bf = at::tensor({1.5, -2.25, 1e30}).to(at::kBFloat16);
  npy::save(tmp / "x.npy", bf.to(at::kFloat));
  EXPECT_TRUE(at::equal(npy::load(tmp / "x.npy").to(at::kBFloat16), bf));
  const auto q = at::quantize_per_tensor(at::ones({2}), 0.1, 0, at::kQInt8);
  EXPECT_THROW_MSG(npy::save(tmp / "q.npy", q), c10::TypeError, "with dequantize()");
  EXPECT_THROW_MSG(npy::save(tmp / "u.npy", at::Tensor()), c10::ValueError,
                   "npy::save: got an undefined tensor");
  EXPECT_THROW_MSG(npy::save(tmp / "m.npy", at::empty({2}, at::kMeta)), c10::ValueError,
                   "npy::save: meta tensors");
  EXPECT_FALSE(fs::exists(tmp / "x.npy.tmp")) << "nothing left behind";
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator{}), 1);
}

TEST(Npy, SaveReportsUnwritablePaths) {
  TempDir tmp;
  EXPECT_THROW_MSG(npy::save(tmp / "no/such/dir.npy", at::ones(2)), torchbridge::Error,
                   "cannot create the file: No such file or directory");
  EXPECT_THROW_MSG(npy::save(tmp.path().string(), at::ones(2)), torchbridge::Error,
                   "cannot create the file: Is a directory");
  EXPECT_THROW_MSG(npy::load(tmp.path().string()), torchbridge::Error,
                   "cannot open the file: Is a directory");
  EXPECT_THROW_MSG(npy::load(tmp / "missing.npy"), torchbridge::Error,
                   "npy::load(\"" + (tmp / "missing.npy") +
                       "\"): cannot open the file: No such file or directory");
}

TEST(Npy, SaveReplacesTheFileAtomicallyKeepingModeAndSymlinks) {
  TempDir tmp;
  const std::string p = tmp / "x.npy";
  npy::save(p, at::ones(3));
  ::chmod(p.c_str(), 0640);
  npy::save(p, at::zeros(3));
  struct stat st;
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  fs::create_symlink(p, tmp / "link.npy");
  npy::save(tmp / "link.npy", at::full({2}, 7.0));
  EXPECT_TRUE(fs::is_symlink(tmp / "link.npy"));
  EXPECT_TRUE(at::equal(npy::load(p), at::full({2}, 7.0)));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator{}), 2)
      << "no temporary files left behind";
}

TEST(Npy, LargeFilesAreReadAndSwappedInParallelParts) {
  // 40 MiB of big-endian int32: read (and swapped) by up to
  // at::get_num_threads() threads in 16 MiB parts.
  TempDir tmp;
  const int64_t n = int64_t{10} << 20;
  const at::Tensor values = at::arange(n, at::kInt) * 7 - 123456;
  const at::Tensor be = kLittle ? swap_bytes(values) : values;
  write_file(tmp / "be.npy",
             npy_bytes("{'descr': '>i4', 'fortran_order': False, 'shape': (" +
                       std::to_string(n) + ",), }") +
                 std::string(static_cast<const char*>(be.data_ptr()),
                             static_cast<size_t>(n) * 4));
  EXPECT_TRUE(at::equal(npy::load(tmp / "be.npy"), values));
  npy::save(tmp / "le.npy", values);
  EXPECT_TRUE(at::equal(npy::load(tmp / "le.npy"), values));
  // A truncated large file is refused before any part is read.
  ::truncate((tmp / "le.npy").c_str(), 128 + n * 2);
  EXPECT_THROW_MSG(npy::load(tmp / "le.npy"), torchbridge::Error, "truncated data");
}

// ------------------------------------------------------- mmap

TEST(NpyMmap, IsAViewOfTheFileThatLivesAsLongAsTheTensor) {
  TempDir tmp;
  const std::string p = tmp / "big.npy";
  npy::save(p, at::arange(1 << 20, at::kFloat));
  EXPECT_FALSE(is_mapped(p));
  at::Tensor t = npy::load(p, {.mmap = true});
  EXPECT_TRUE(is_mapped(p));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u);
  at::Tensor view = t.slice(0, 100, 200);
  t.reset();
  EXPECT_TRUE(is_mapped(p)) << "a view keeps the mapping";
  EXPECT_EQ(view[0].item<float>(), 100.0f);
  view.reset();
  EXPECT_FALSE(is_mapped(p)) << "unmapped when the last tensor dies";
}

TEST(NpyMmap, WritesStayInTheTensorAndNeverReachTheFile) {
  TempDir tmp;
  const std::string p = tmp / "x.npy";
  npy::save(p, at::arange(1000, at::kLong));
  const std::string before = read_file(p);
  at::Tensor t = npy::load(p, {.mmap = true});
  t.mul_(-1);
  t[3] = 42;
  EXPECT_EQ(t[3].item<int64_t>(), 42);
  EXPECT_EQ(t[999].item<int64_t>(), -999);
  EXPECT_EQ(read_file(p), before);
  EXPECT_TRUE(at::equal(npy::load(p), at::arange(1000, at::kLong)));
}

TEST(NpyMmap, LoadTimeDoesNotDependOnTheFileSize) {
  // A sparse 1 GiB file: mapping it must not read (or copy) the data.
  TempDir tmp;
  const std::string p = tmp / "huge.npy";
  const int64_t n = int64_t{1} << 28;  // float32: 1 GiB
  const std::string header = npy_bytes(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(n) + ",), }");
  write_file(p, header);
  ASSERT_EQ(::truncate(p.c_str(), static_cast<off_t>(header.size()) + n * 4), 0);
  const size_t rss = resident_bytes();
  at::Tensor t = npy::load(p, {.mmap = true});
  EXPECT_EQ(t.numel(), n);
  EXPECT_EQ(t[n - 1].item<float>(), 0.0f);  // touches one page
  EXPECT_LT(resident_bytes(), rss + (size_t{64} << 20));
}

TEST(NpyMmap, ViewsAreRefusedWithTheReasonWhereImpossible) {
  TempDir tmp;
  // Misaligned: an unpadded header puts float64 data at byte 77.
  const std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  std::string header = dict + std::string(77 - 10 - dict.size() - 1, ' ') + "\n";
  const double vals[2] = {1.5, -2.5};
  const std::string data(reinterpret_cast<const char*>(vals), 16);
  write_file(tmp / "odd.npy", "\x93NUMPY\x01\x00"s + static_cast<char>(header.size()) + '\0' +
                                  header + data);
  EXPECT_THROW_MSG(npy::load(tmp / "odd.npy", {.mmap = true}), torchbridge::Error,
                   "cannot load with mmap = true: the data starts at byte 77, not a "
                   "multiple of its 8-byte item size, so a view of it would be "
                   "misaligned; pass mmap = false to load a copy");
  EXPECT_TRUE(at::equal(npy::load(tmp / "odd.npy"), at::tensor({1.5, -2.5})));
}

TEST(NpyMmap, BoolBytesOtherThanZeroOrOneBecomeTrue) {
  TempDir tmp;
  const std::string p = tmp / "b.npy";
  const std::string file =
      npy_bytes("{'descr': '|b1', 'fortran_order': False, 'shape': (4,), }", "\x00\x01\x02\xff"s);
  write_file(p, file);
  for (bool mmap : {false, true}) {
    const at::Tensor t = npy::load(p, {.mmap = mmap});
    const auto* raw = static_cast<const uint8_t*>(t.data_ptr());
    EXPECT_EQ(std::vector<uint8_t>(raw, raw + 4), (std::vector<uint8_t>{0, 1, 1, 1}));
    EXPECT_EQ(t.sum().item<int64_t>(), 3);
  }
  EXPECT_EQ(read_file(p), file) << "the private mapping never writes the file";
}

TEST(NpyMmap, SavingOverAMappedFileIsSafe) {
  // npy::save renames a new file into place; truncating the mapped file
  // instead would kill this process with SIGBUS on the next read.
  TempDir tmp;
  const std::string p = tmp / "x.npy";
  npy::save(p, at::arange(1 << 20, at::kFloat));
  const at::Tensor mapped = npy::load(p, {.mmap = true});
  npy::save(p, at::zeros({3}));
  EXPECT_EQ(mapped.sum().item<double>(), (double(1 << 20) - 1) * (1 << 20) / 2);
  EXPECT_TRUE(at::equal(npy::load(p), at::zeros({3})));
  npy::save(p, mapped);  // from the old mapping to the path it came from
  EXPECT_TRUE(at::equal(npy::load(p), mapped));
}

TEST(NpyMmap, ZeroSizeArraysNeedNoMapping) {
  TempDir tmp;
  npy::save(tmp / "e.npy", at::empty({0, 3}, at::kDouble));
  const auto t = npy::load(tmp / "e.npy", {.mmap = true});
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{0, 3}));
  EXPECT_FALSE(is_mapped(tmp / "e.npy"));
}

// ------------------------------------------------------- npz

TEST(Npz, RoundTripsStoredAndCompressedInOrder) {
  TempDir tmp;
  npz::Arrays in;
  for (auto st : numpy_dtypes()) {
    in.emplace_back("z_" + torchbridge::dtype_name(st), expected_values(st, {3, 4}));
    in.emplace_back("f_" + torchbridge::dtype_name(st), fortran(expected_values(st, {3, 4})));
  }
  in.emplace_back("scalar", at::scalar_tensor(2.5, at::kDouble));
  in.emplace_back("empty", at::empty({0, 2}, at::kInt));
  in.emplace_back("", at::ones({1}));  // numpy.savez(f, **{"": a}) works too
  in.emplace_back("dir/name", at::ones({2}));
  for (bool compress : {false, true}) {
    npz::save(tmp / "a.npz", in, {.compress = compress});
    for (bool mmap : {false, true}) {
      SCOPED_TRACE(std::to_string(compress) + std::to_string(mmap));
      const auto out = npz::load(tmp / "a.npz", {.mmap = mmap});
      ASSERT_EQ(out.size(), in.size());
      for (size_t i = 0; i < in.size(); ++i) {
        EXPECT_EQ(out[i].first, in[i].first);
        EXPECT_EQ(out[i].second.scalar_type(), in[i].second.scalar_type());
        EXPECT_TRUE(at::equal(out[i].second, in[i].second)) << in[i].first;
      }
    }
  }
}

TEST(Npz, StoredMembersWeWriteMapWithoutACopy) {
  TempDir tmp;
  const std::string p = tmp / "a.npz";
  npz::save(p, {{"a", at::arange(100000, at::kDouble)}, {"b", at::ones({7}, at::kShort)},
                {"c", at::arange(3, at::kDouble).to(at::kComplexDouble)}});
  npz::Arrays arrays = npz::load(p, {.mmap = true});
  EXPECT_TRUE(is_mapped(p));
  for (const auto& [name, t] : arrays) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u) << name;
  }
  arrays[0].second.fill_(-1);  // private: the file keeps its values
  EXPECT_TRUE(at::equal(npz::load(p)[0].second, at::arange(100000, at::kDouble)));
  arrays.clear();
  EXPECT_FALSE(is_mapped(p));
}

TEST(Npz, MappedMembersAreCrcCheckedToo) {
  TempDir tmp;
  const std::string p = tmp / "a.npz";
  npz::save(p, {{"a", at::arange(1000, at::kDouble)}, {"b", at::ones({3})}});
  std::string z = read_file(p);
  // The last data byte of "a": only the CRC-32 can tell.
  z[z.find("b.npy") - 30 - 1] ^= 0x55;
  write_file(p, z);
  for (bool mmap : {false, true}) {
    SCOPED_TRACE(mmap);
    EXPECT_THROW_MSG(npz::load(p, {.mmap = mmap}), torchbridge::Error,
                     "npz::load(\"" + p + "\"), member \"a.npy\": CRC-32 mismatch");
  }
  EXPECT_FALSE(is_mapped(p));
}

TEST(Npz, SaveChecksEveryEntryBeforeTouchingTheFile) {
  TempDir tmp;
  const std::string p = tmp / "a.npz";
  npz::save(p, {{"keep", at::ones(2)}});
  const std::string before = read_file(p);
  EXPECT_THROW_MSG(npz::save(p, {{"a", at::ones(1)}, {"b", at::ones(1)}, {"a", at::ones(1)}}),
                   c10::ValueError, "npz::save: the array \"a\" appears twice");
  EXPECT_THROW_MSG(npz::save(p, {{"a\0b"s, at::ones(1)}}), c10::ValueError, "NUL byte");
  EXPECT_THROW_MSG(npz::save(p, {{"a", at::ones(1)}, {"w", at::ones(1, at::kBFloat16)}}),
                   c10::TypeError, "npz::save: the array \"w\" is bfloat16");
  EXPECT_EQ(read_file(p), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator{}), 1);
}

// ------------------------------------------------------- hostile files

TEST(NpyHostile, EveryFaultNamesTheFileAndTheFault) {
  TempDir tmp;
  const auto dict = [](const std::string& descr, const std::string& shape) {
    return "{'descr': " + descr + ", 'fortran_order': False, 'shape': " + shape + ", }";
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "fewer than the 10 bytes"},
      {"\x93NUMPZ\x01\x00\x10\x00{}      "s, "not a .npy file"},
      {"\x93NUMPY\x02\x00\xF0\xFF\xFF\xFF"s, "header length field says 4294967280 bytes"},
      {npy_bytes(dict("'|O'", "(3,)")), "object array"},
      {npy_bytes("{'descr': '<f4' 'fortran_order': False, 'shape': (3,)}"), "malformed header"},
      {npy_bytes(dict("'<f4'", "(-3,)")), "negative dimension -3"},
      {npy_bytes(dict("'<f4'", "(1099511627776, 1099511627776)")), "overflows 64 bits"},
      {npy_bytes(dict("'<f4'", "(3, 4)"), std::string(47, '\0')), "truncated data"},
  };
  for (const auto& [bytes, message] : cases) {
    SCOPED_TRACE(message);
    write_file(tmp / "bad.npy", bytes);
    for (bool mmap : {false, true}) {
      EXPECT_THROW_MSG(npy::load(tmp / "bad.npy", {.mmap = mmap}), torchbridge::Error,
                       "npy::load(\"" + (tmp / "bad.npy") + "\"): ");
      EXPECT_THROW_MSG(npy::load(tmp / "bad.npy", {.mmap = mmap}), torchbridge::Error, message);
    }
  }
}

TEST(NpyHostile, NpyAndNpzPointAtEachOther) {
  TempDir tmp;
  npy::save(tmp / "a.npy", at::ones(2));
  npz::save(tmp / "a.npz", {{"x", at::ones(2)}});
  EXPECT_THROW_MSG(npy::load(tmp / "a.npz"), torchbridge::Error, "load .npz files with npz::load");
  EXPECT_THROW_MSG(npz::load(tmp / "a.npy"), torchbridge::Error, "load it with npy::load");
}

TEST(NpyHostile, NpzMemberFaultsNameTheMember) {
  TempDir tmp;
  const std::string p = tmp / "a.npz";
  npz::save(p, {{"first", at::ones(4)}, {"second", at::arange(4, at::kFloat)}});
  std::string z = read_file(p);
  // Corrupt the second member's data: its CRC no longer matches.
  z[z.find("\x93NUMPY", z.find("second.npy")) + 128 + 5] ^= 0x55;
  write_file(p, z);
  EXPECT_THROW_MSG(npz::load(p), torchbridge::Error,
                   "npz::load(\"" + p + "\"), member \"second.npy\": CRC-32 mismatch");
  // A member whose .npy header promises more data than the member holds.
  npz::save(p, {{"m", at::ones(4)}});
  z = read_file(p);
  const size_t at = z.find("(4,)");
  z.replace(at, 4, "(5,)");
  write_file(p, z);
  EXPECT_THROW_MSG(npz::load(p), torchbridge::Error,
                   "member \"m.npy\": wrong data size: the shape (5,) of float32 needs 20 bytes");
}

// ------------------------------------------------------- load: either kind

TEST(Load, NpyFilesLoadAsTheTensorNpyLoadGives) {
  TempDir tmp;
  const auto t = at::arange(6, at::kFloat).reshape({2, 3});
  npy::save(tmp / "a.npy", t);
  for (bool mmap : {false, true}) {
    torchbridge::Loaded got = torchbridge::load(tmp / "a.npy", {.mmap = mmap});
    ASSERT_TRUE(std::holds_alternative<at::Tensor>(got));
    EXPECT_TRUE(at::equal(std::get<at::Tensor>(got), t));
    EXPECT_EQ(is_mapped(tmp / "a.npy"), mmap);
  }
}

TEST(Load, NpzArchivesLoadAsTheArraysNpzLoadGivesWhateverTheName) {
  TempDir tmp;
  for (bool compress : {false, true}) {
    SCOPED_TRACE(compress);
    // The bytes decide, not the name.
    const std::string p = tmp / (compress ? "c.bin" : "s.npy");
    npz::save(p, {{"z", at::ones(2)}, {"a", at::arange(3)}}, {.compress = compress});
    torchbridge::Loaded got = torchbridge::load(p);
    ASSERT_TRUE(std::holds_alternative<npz::Arrays>(got));
    const auto& arrays = std::get<npz::Arrays>(got);
    const npz::Arrays want = npz::load(p);
    ASSERT_EQ(arrays.size(), 2u);
    for (size_t i = 0; i < arrays.size(); ++i) {
      EXPECT_EQ(arrays[i].first, want[i].first);
      EXPECT_TRUE(at::equal(arrays[i].second, want[i].second));
    }
    EXPECT_EQ(arrays[0].first, "z");
    EXPECT_THROW((void)std::get<at::Tensor>(got), std::bad_variant_access);
  }
  // An archive without members is only its end record ("PK\5\6").
  npz::save(tmp / "empty.npz", {});
  torchbridge::Loaded empty = torchbridge::load(tmp / "empty.npz");
  ASSERT_TRUE(std::holds_alternative<npz::Arrays>(empty));
  EXPECT_TRUE(std::get<npz::Arrays>(empty).empty());
}

TEST(Load, NeitherKindNamesThePathAndTheBytesFound) {
  TempDir tmp;
  const std::string p = tmp / "notes.txt";
  write_file(p, "not a numpy file at all");
  EXPECT_THROW_MSG(torchbridge::load(p), torchbridge::Error,
                   "npy::load(\"" + p + "\"): not a .npy file: it starts with bytes "
                   "6E 6F 74 20 61 20, not the magic \\x93NUMPY");
  write_file(p, "PK");
  EXPECT_THROW_MSG(torchbridge::load(p), torchbridge::Error,
                   "npy::load(\"" + p + "\"): not a .npy file: it has 2 bytes");
}

TEST(Load, ZipMagicIsReadWithNpzLoadsRules) {
  TempDir tmp;
  const std::string p = tmp / "a.npy";
  write_file(p, "PK\x03\x04"s + std::string(40, 'x'));
  EXPECT_THROW_MSG(torchbridge::load(p), torchbridge::Error,
                   "npz::load(\"" + p + "\"): not a zip archive: no end-of-central-directory record");
}

TEST(Load, OpenFailuresAreIoErrorsNamingLoadAndThePath) {
  TempDir tmp;
  const std::string p = tmp / "missing.npy";
  try {
    (void)torchbridge::load(p);
    ADD_FAILURE() << "no error";
  } catch (const torchbridge::IoError& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_EQ(e.path(), p);
    EXPECT_EQ(std::string(e.what()).rfind("load(\"" + p + "\"): cannot open the file: ", 0), 0u)
        << e.what();
  }
  try {
    (void)torchbridge::load(tmp.path().string());
    ADD_FAILURE() << "no error";
  } catch (const torchbridge::IoError& e) {
    EXPECT_EQ(e.code(), EISDIR);
    EXPECT_EQ(e.path(), tmp.path().string());
  }
}
