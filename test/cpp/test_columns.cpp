// Columns and Arrow's C data interface, Python-free: the common dtype, the
// missing-value rules, sharing, chunks, bit-packed booleans, and the
// release callback run exactly once.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"

using namespace torchbridge;

namespace {

Segment segment_of(const void* data, at::ScalarType t, int64_t n, int64_t stride_bytes = 0) {
  Segment s;
  s.values.data = const_cast<void*>(data);
  s.values.shape = {n};
  const int64_t item = static_cast<int64_t>(c10::elementSize(t));
  s.values.strides = {stride_bytes ? stride_bytes : item};
  s.values.dtype.scalar = t;
  s.values.dtype.itemsize = item;
  return s;
}

Column column_of(std::string name, Segment s) {
  Column c;
  c.name = std::move(name);
  c.segments.push_back(std::move(s));
  return c;
}

template <typename... C>
std::vector<Column> columns(C&&... c) {
  std::vector<Column> out;
  (out.push_back(std::forward<C>(c)), ...);
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

}  // namespace

TEST(Columns, NumpyResultType) {
  EXPECT_EQ(numpy_result_type(at::kLong, at::kUInt64), at::kDouble);
  EXPECT_EQ(numpy_result_type(at::kShort, at::kHalf), at::kFloat);
  EXPECT_EQ(numpy_result_type(at::kChar, at::kHalf), at::kHalf);
  EXPECT_EQ(numpy_result_type(at::kInt, at::kFloat), at::kDouble);
  EXPECT_EQ(numpy_result_type(at::kByte, at::kChar), at::kShort);
  EXPECT_EQ(numpy_result_type(at::kUInt32, at::kInt), at::kLong);
  EXPECT_EQ(numpy_result_type(at::kBool, at::kByte), at::kByte);
  EXPECT_EQ(numpy_result_type(at::kLong, at::kComplexFloat), at::kComplexDouble);
  EXPECT_EQ(numpy_result_type(at::kShort, at::kComplexFloat), at::kComplexFloat);
}

TEST(Columns, MixedColumnsGatherColumnMajorInTheCommonDtype) {
  const int64_t n = 1000;
  std::vector<int32_t> a(n);
  std::vector<double> b(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = static_cast<int32_t>(i);
    b[i] = 0.5 * i;
  }
  std::vector<Column> cols;
  cols.push_back(column_of("a", segment_of(a.data(), at::kInt, n)));
  cols.push_back(column_of("b", segment_of(b.data(), at::kDouble, n)));
  ColumnsOptions l;
  auto t = columns_to_tensor(cols, l);  // float64 -> float32 (the policy)
  ASSERT_EQ(t.scalar_type(), at::kFloat);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{n, 2}));
  // Column-major on the host (each column one run), as pandas' to_numpy.
  ASSERT_EQ(t.strides(), (std::vector<int64_t>{1, n}));
  auto expect = at::stack({at::arange(n, at::kFloat), at::arange(n, at::kFloat) * 0.5}, 1);
  EXPECT_TRUE(at::equal(t, expect));
}

TEST(Columns, NegativeStridesAndSwappedBytesInEveryCopyPath) {
  // Columns read backwards (negative strides) and big-endian ones, through
  // the typed loops (float64 -> float32) and through ATen's copy (complex,
  // float64 -> float16): every value where NumPy puts it.
  const int64_t n = 300;
  std::vector<double> d(n);
  std::vector<c10::complex<double>> z(n);
  std::vector<double> be(n);
  for (int64_t i = 0; i < n; ++i) {
    d[i] = 0.5 * i;
    z[i] = c10::complex<double>(i, -i);
    double v = 2.0 * i;
    unsigned char b[8];
    std::memcpy(b, &v, 8);
    std::reverse(b, b + 8);
    std::memcpy(&be[i], b, 8);
  }
  auto backwards = [&](const void* last, at::ScalarType t, int64_t item) {
    return segment_of(last, t, n, -item);
  };
  {
    std::vector<Column> cols;
    cols.push_back(column_of("d", backwards(&d[n - 1], at::kDouble, 8)));
    cols.push_back(column_of("z", backwards(&z[n - 1], at::kComplexDouble, 16)));
    ColumnsOptions l;
    auto t = columns_to_tensor(cols, l);  // complex128 -> complex64
    ASSERT_EQ(t.scalar_type(), at::kComplexFloat);
    auto rev = at::arange(n - 1, -1, -1, at::kDouble);
    EXPECT_TRUE(at::equal(at::real(t.select(1, 0)), (rev * 0.5).to(at::kFloat)));
    EXPECT_TRUE(at::equal(at::real(t.select(1, 1)), rev.to(at::kFloat)));
    EXPECT_TRUE(at::equal(at::imag(t.select(1, 1)), (-rev).to(at::kFloat)));
  }
  {
    std::vector<Column> cols;
    cols.push_back(column_of("d", backwards(&d[n - 1], at::kDouble, 8)));
    Segment s = segment_of(be.data(), at::kDouble, n);
    s.values.dtype.swapped = true;
    cols.push_back(column_of("be", std::move(s)));
    ColumnsOptions l;
    CoerceOptions half;
    half.dtype = at::kHalf;
    for (const auto& o : {CoerceOptions{}, half}) {
      auto t = columns_to_tensor(cols, l, o);
      auto rev = at::arange(n - 1, -1, -1, at::kDouble);
      EXPECT_TRUE(at::equal(t.select(1, 0), (rev * 0.5).to(t.scalar_type())));
      EXPECT_TRUE(at::equal(t.select(1, 1), (at::arange(n, at::kDouble) * 2).to(t.scalar_type())));
    }
  }
}

TEST(Columns, ByteMaskNullsBecomeNaNOrRaiseNamingTheColumn) {
  std::vector<int64_t> v{1, 2, 3, 4};
  std::vector<uint8_t> mask{0, 1, 0, 1};
  auto s = segment_of(v.data(), at::kLong, 4);
  s.validity.kind = Validity::Kind::kByteMask;
  s.validity.data = mask.data();
  std::vector<Column> cols = columns(column_of("price", std::move(s)));
  ColumnsOptions l;
  l.what = "the DataFrame";
  l.fill_hint = "fill them first (df.fillna(0))";
  const auto msg = error_of([&] { columns_to_tensor(cols, l); });
  EXPECT_NE(msg.find("column 'price' of the DataFrame has 2 missing values (of 4)"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("dtype=torch.float32"), std::string::npos) << msg;
  CoerceOptions o;
  o.dtype = at::kFloat;
  auto t = columns_to_tensor(cols, l, o);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(t[0][0].item<float>(), 1.f);
  EXPECT_TRUE(std::isnan(t[1][0].item<float>()));
  EXPECT_EQ(t[2][0].item<float>(), 3.f);
  EXPECT_TRUE(std::isnan(t[3][0].item<float>()));
}

TEST(Columns, OneColumnWithoutNullsSharesWithCopyFalseAndCopiesReadOnlyByDefault) {
  std::vector<float> v{1, 2, 3};
  const auto ro = [&] {
    auto s = segment_of(v.data(), at::kFloat, 3);
    s.values.writable = false;
    return s;
  };
  ColumnsOptions l;
  l.two_d = false;
  std::vector<Column> a = columns(column_of("x", ro()));
  CoerceOptions share;
  share.copy = false;
  EXPECT_EQ(columns_to_tensor(a, l, share).data_ptr(), v.data());
  std::vector<Column> b = columns(column_of("x", ro()));
  auto t = columns_to_tensor(b, l);
  EXPECT_NE(t.data_ptr(), v.data());
  EXPECT_TRUE(at::equal(t, at::tensor({1.f, 2.f, 3.f})));
}

TEST(Columns, CopyFalseSaysWhyAGatherCannotShare) {
  std::vector<float> v{1, 2};
  std::vector<Column> cols = columns(column_of("a", segment_of(v.data(), at::kFloat, 2)),
                           column_of("b", segment_of(v.data(), at::kFloat, 2)));
  ColumnsOptions l;
  l.what = "the Table";
  CoerceOptions o;
  o.copy = false;
  const auto msg = error_of([&] { columns_to_tensor(cols, l, o); });
  EXPECT_NE(msg.find("the Table cannot share its memory with one tensor because its 2 "
                     "columns are separate buffers"), std::string::npos) << msg;
}

TEST(Columns, UnequalLengthsAreRefused) {
  std::vector<float> v{1, 2, 3};
  std::vector<Column> cols = columns(column_of("a", segment_of(v.data(), at::kFloat, 3)),
                           column_of("b", segment_of(v.data(), at::kFloat, 2)));
  const auto msg = error_of([&] { columns_to_tensor(cols, ColumnsOptions()); });
  EXPECT_NE(msg.find("column 'b' of the table has 2 rows"), std::string::npos) << msg;
}

TEST(Columns, LargeGatherMatchesATen) {
  const int64_t n = 300000;  // several parallel pieces
  auto a = at::randn({n}, at::kDouble);
  auto b = at::randint(0, 1000, {n}, at::kLong);
  auto c = at::randn({n}, at::kFloat).to(at::kHalf);
  std::vector<Column> cols = columns(column_of("a", segment_of(a.data_ptr(), at::kDouble, n)),
                           column_of("b", segment_of(b.data_ptr(), at::kLong, n)),
                           column_of("c", segment_of(c.data_ptr(), at::kHalf, n)));
  CoerceOptions o;
  o.float_dtype = std::nullopt;
  auto t = columns_to_tensor(cols, ColumnsOptions(), o);
  ASSERT_EQ(t.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(t, at::stack({a, b.to(at::kDouble), c.to(at::kDouble)}, 1)));
}

// ---- Arrow -----------------------------------------------------------------

namespace {

// A hand-made producer: owns its buffers, counts releases.
struct Fake {
  static int releases;
  std::vector<const void*> buffers;
  std::vector<ArrowArray*> child_ptrs;
  std::vector<ArrowArray> children;
};
int Fake::releases = 0;

void release_fake(ArrowArray* a) {
  auto* f = static_cast<Fake*>(a->private_data);
  ++Fake::releases;
  for (auto& c : f->children) c.release = nullptr;
  delete f;
  a->release = nullptr;
}

void release_child(ArrowArray* a) { a->release = nullptr; }

ArrowArray primitive_array(const void* values, const uint8_t* validity, int64_t length,
                           int64_t null_count, int64_t offset = 0) {
  auto* f = new Fake;
  f->buffers = {validity, values};
  ArrowArray a{};
  a.length = length;
  a.null_count = null_count;
  a.offset = offset;
  a.n_buffers = 2;
  a.buffers = f->buffers.data();
  a.release = &release_fake;
  a.private_data = f;
  return a;
}

ArrowSchema schema_of(const char* format, const char* name = "x") {
  ArrowSchema s{};
  s.format = format;
  s.name = name;
  s.release = [](ArrowSchema* s) { s->release = nullptr; };
  return s;
}

}  // namespace

TEST(Arrow, PrimitiveSharesWithCopyFalseAndReleasesOnceWithTheTensor) {
  std::vector<int64_t> v{1, 2, 3, 4, 5};
  Fake::releases = 0;
  auto schema = schema_of("l");
  auto arr = primitive_array(v.data(), nullptr, 4, 0, 1);  // a slice: offset 1
  CoerceOptions o;
  o.copy = false;
  {
    auto t = arrow_to_tensor(schema, &arr, o);
    EXPECT_EQ(arr.release, nullptr);  // moved
    EXPECT_EQ(t.data_ptr(), v.data() + 1);
    EXPECT_TRUE(at::equal(t, at::tensor({2, 3, 4, 5}, at::kLong)));
    EXPECT_EQ(Fake::releases, 0);  // the tensor holds it
  }
  EXPECT_EQ(Fake::releases, 1);
  auto arr2 = primitive_array(v.data(), nullptr, 5, 0);
  auto t = arrow_to_tensor(schema, &arr2);  // read-only: copied, released at once
  EXPECT_NE(t.data_ptr(), v.data());
  EXPECT_EQ(Fake::releases, 2);
}

TEST(Arrow, NullsWithOffsetsBecomeNaNOrValueError) {
  std::vector<double> v{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  // valid bits (LSB first): rows 3 and 6 are null.
  const uint8_t bits[2] = {static_cast<uint8_t>(0xff & ~(1 << 3) & ~(1 << 6)), 0xff};
  Fake::releases = 0;
  auto schema = schema_of("g");
  auto arr = primitive_array(v.data(), bits, 8, 2, 2);  // rows 2..9
  auto t = arrow_to_tensor(schema, &arr);
  ASSERT_EQ(t.numel(), 8);
  EXPECT_EQ(t[0].item<float>(), 2.f);
  EXPECT_TRUE(std::isnan(t[1].item<float>()));
  EXPECT_TRUE(std::isnan(t[4].item<float>()));
  EXPECT_EQ(t[7].item<float>(), 9.f);
  EXPECT_EQ(Fake::releases, 1);
  std::vector<int32_t> iv(10, 7);
  auto ischema = schema_of("i");
  auto iarr = primitive_array(iv.data(), bits, 8, 2, 2);
  const auto msg = error_of([&] { arrow_to_tensor(ischema, &iarr); });
  EXPECT_NE(msg.find("has 2 missing values (of 8)"), std::string::npos) << msg;
  EXPECT_EQ(Fake::releases, 2);  // released on the error path too
}

TEST(Arrow, BitPackedBooleansUnpackFromAnyOffset) {
  const uint8_t bits[2] = {0b10110101, 0b00000011};
  auto schema = schema_of("b");
  auto arr = primitive_array(bits, nullptr, 7, 0, 3);
  auto t = arrow_to_tensor(schema, &arr);
  auto expect = at::tensor({0, 1, 1, 0, 1, 1, 1}, at::kInt).to(at::kBool);
  EXPECT_TRUE(at::equal(t, expect)) << t;
}

TEST(Arrow, StructIsATableAndUnknownFormatsAreTypeErrors) {
  std::vector<int16_t> a{1, 2, 3};
  std::vector<float> b{0.5f, 1.5f, 2.5f};
  ArrowSchema ca = schema_of("s", "a"), cb = schema_of("f", "b");
  ArrowSchema* kids[2] = {&ca, &cb};
  ArrowSchema s = schema_of("+s", "");
  s.n_children = 2;
  s.children = kids;
  Fake::releases = 0;
  auto* f = new Fake;
  f->buffers = {nullptr};
  f->children = {primitive_array(a.data(), nullptr, 3, 0), primitive_array(b.data(), nullptr, 3, 0)};
  for (auto& c : f->children) {
    delete static_cast<Fake*>(c.private_data);
    c.private_data = nullptr;
    c.buffers = nullptr;
  }
  // Children's buffers live in the parent's Fake.
  static const void* abuf[2];
  static const void* bbuf[2];
  abuf[0] = nullptr;
  abuf[1] = a.data();
  bbuf[0] = nullptr;
  bbuf[1] = b.data();
  f->children[0].buffers = abuf;
  f->children[1].buffers = bbuf;
  f->children[0].release = f->children[1].release = &release_child;
  f->child_ptrs = {&f->children[0], &f->children[1]};
  ArrowArray arr{};
  arr.length = 2;
  arr.offset = 1;  // rows 1..2 of the children
  arr.n_buffers = 1;
  arr.buffers = f->buffers.data();
  arr.n_children = 2;
  arr.children = f->child_ptrs.data();
  arr.release = &release_fake;
  arr.private_data = f;
  auto t = arrow_to_tensor(s, &arr);
  EXPECT_TRUE(at::equal(t, at::tensor({2.f, 1.5f, 3.f, 2.5f}).view({2, 2}))) << t;
  EXPECT_EQ(Fake::releases, 1);

  auto u = schema_of("u", "name");
  std::vector<int32_t> offsets{0, 1};
  auto sarr = primitive_array(offsets.data(), nullptr, 1, 0);
  const auto msg = error_of([&] { arrow_to_tensor(u, &sarr); });
  EXPECT_NE(msg.find("holds strings (Arrow format \"u\")"), std::string::npos) << msg;
  EXPECT_EQ(Fake::releases, 2);
  auto bad = schema_of("l");
  auto barr = primitive_array(offsets.data(), nullptr, 1, 5);  // null_count > length
  const auto msg2 = error_of([&] { arrow_to_tensor(bad, &barr); });
  EXPECT_NE(msg2.find("null_count 5 for length 1"), std::string::npos) << msg2;
}

TEST(Arrow, StreamGathersChunksIntoOneTensor) {
  struct State {
    std::vector<int64_t> data{1, 2, 3, 4, 5};
    int next = 0;
    bool released = false;
  } st;
  ArrowArrayStream stream{};
  stream.private_data = &st;
  stream.get_schema = [](ArrowArrayStream*, ArrowSchema* out) {
    *out = schema_of("l");
    return 0;
  };
  stream.get_next = [](ArrowArrayStream* s, ArrowArray* out) {
    auto* state = static_cast<State*>(s->private_data);
    if (state->next == 2) {
      out->release = nullptr;
      return 0;
    }
    const int64_t begin = state->next == 0 ? 0 : 2;
    *out = primitive_array(state->data.data() + begin, nullptr, state->next == 0 ? 2 : 3, 0);
    ++state->next;
    return 0;
  };
  stream.get_last_error = [](ArrowArrayStream*) -> const char* { return nullptr; };
  stream.release = [](ArrowArrayStream* s) {
    static_cast<State*>(s->private_data)->released = true;
    s->release = nullptr;
  };
  Fake::releases = 0;
  auto t = arrow_stream_to_tensor(&stream);
  EXPECT_TRUE(at::equal(t, at::tensor({1, 2, 3, 4, 5}, at::kLong)));
  EXPECT_TRUE(st.released);
  EXPECT_EQ(Fake::releases, 2);
}
