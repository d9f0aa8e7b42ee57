// torchbridge::ArrayView: the sharing rules (layout_blocker, share_blocker),
// their sentences (share_blocker_reason), and to_tensor's shares, copies,
// errors and owner lifetime, over buffers built by hand (no NumPy).

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <atomic>
#include <complex>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using torchbridge::ArrayView;
using torchbridge::BufferOwner;
using torchbridge::CoerceOptions;
using torchbridge::ElementType;
using torchbridge::ShareBlocker;
using torchbridge::layout_blocker;
using torchbridge::share_blocker;
using torchbridge::share_blocker_reason;
using torchbridge::to_tensor;

// Every dtype torch shares with a buffer (NumPy's, plus bfloat16).
const std::vector<at::ScalarType>& torch_dtypes() {
  static const std::vector<at::ScalarType> all = {
      at::kBool,   at::kChar,   at::kShort,  at::kInt,     at::kLong,
      at::kByte,   at::kUInt16, at::kUInt32, at::kUInt64,  at::kHalf,
      at::kBFloat16, at::kFloat, at::kDouble, at::kComplexFloat,
      at::kComplexDouble};
  return all;
}

int64_t itemsize(at::ScalarType t) { return static_cast<int64_t>(c10::elementSize(t)); }

ArrayView make_view(void* data, at::ScalarType t, std::vector<int64_t> shape,
                    std::vector<int64_t> strides, bool swapped = false) {
  ArrayView v;
  v.data = data;
  v.shape.assign(shape.begin(), shape.end());
  v.strides.assign(strides.begin(), strides.end());
  v.dtype = ElementType{t, itemsize(t), swapped, nullptr};
  return v;
}

// The message of a c10::Error without the "Exception raised from" trailer.
template <class E, class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what_without_backtrace();
  }
  return "<no " + std::string(typeid(E).name()) + " thrown>";
}

// A release function that counts its calls and remembers its thread.
struct ReleaseLog {
  std::atomic<int> calls{0};
  std::thread::id thread;
};
void count_release(void* ctx) {
  auto* log = static_cast<ReleaseLog*>(ctx);
  log->thread = std::this_thread::get_id();
  log->calls.fetch_add(1);
}

CoerceOptions copy_false() {
  CoerceOptions o;
  o.copy = false;
  return o;
}

CoerceOptions keep_float64() {
  CoerceOptions o;
  o.float_dtype = std::nullopt;
  return o;
}

// `n` values of type `t` (0, 1, 2, ... ; alternating for bool).
at::Tensor sample(at::ScalarType t, int64_t n) {
  if (t == at::kBool) return at::arange(n).remainder(2).to(at::kBool);
  auto x = at::arange(1, n + 1, at::kDouble).mul(1.5);
  if (!c10::isFloatingType(t) && !c10::isComplexType(t)) x = at::arange(1, n + 1);
  x = x.to(t);
  if (c10::isComplexType(t)) x = x + at::ones({n}, t) * c10::complex<double>(0, -2);
  return x.contiguous();
}

// ---------------------------------------------------------------------------
// The blockers

TEST(ArrayView, DenseViewsOfEveryDtypeShare) {
  alignas(16) char buf[256];
  for (auto t : torch_dtypes()) {
    auto src = sample(t, 4);
    std::memcpy(buf, src.data_ptr(), 4 * itemsize(t));
    auto v = make_view(buf, t, {4}, {itemsize(t)});
    EXPECT_EQ(layout_blocker(v), ShareBlocker::kNone) << t;
    CoerceOptions o = keep_float64();
    EXPECT_EQ(share_blocker(v, t, o), ShareBlocker::kNone) << t;
    o.copy = false;
    auto y = to_tensor(std::move(v), o);
    EXPECT_EQ(y.data_ptr(), static_cast<void*>(buf)) << t;
    EXPECT_EQ(y.scalar_type(), t);
    EXPECT_TRUE(at::equal(y, src)) << t;
  }
}

TEST(ArrayView, MisalignedDataBlocksEveryMultiByteDtype) {
  alignas(16) char buf[256];
  for (auto t : torch_dtypes()) {
    auto v = make_view(buf + 1, t, {4}, {itemsize(t)});
    EXPECT_EQ(layout_blocker(v),
              itemsize(t) > 1 ? ShareBlocker::kMisaligned : ShareBlocker::kNone)
        << t;
  }
}

TEST(ArrayView, ComplexAlignmentIsHalfTheItemSize) {
  alignas(16) char buf[256];
  // NumPy aligns complex to one part: complex64 at 4, complex128 at 8.
  EXPECT_EQ(layout_blocker(make_view(buf + 4, at::kComplexFloat, {3}, {8})),
            ShareBlocker::kNone);
  EXPECT_EQ(layout_blocker(make_view(buf + 8, at::kComplexDouble, {3}, {16})),
            ShareBlocker::kNone);
  EXPECT_EQ(layout_blocker(make_view(buf + 2, at::kComplexFloat, {3}, {8})),
            ShareBlocker::kMisaligned);
  EXPECT_EQ(layout_blocker(make_view(buf + 4, at::kComplexDouble, {3}, {16})),
            ShareBlocker::kMisaligned);
  // Real types need the whole item size.
  EXPECT_EQ(layout_blocker(make_view(buf + 4, at::kDouble, {3}, {8})),
            ShareBlocker::kMisaligned);
  EXPECT_EQ(layout_blocker(make_view(buf + 2, at::kFloat, {3}, {4})),
            ShareBlocker::kMisaligned);
  // A complex64 at half alignment is shared as it is.
  auto v = make_view(buf + 4, at::kComplexFloat, {3}, {8});
  auto y = to_tensor(std::move(v), copy_false());
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(buf + 4));
}

TEST(ArrayView, MisalignedStrideBlocks) {
  alignas(16) char buf[256];
  auto v = make_view(buf, at::kDouble, {3}, {12});  // aligned start, 12-byte steps
  EXPECT_EQ(layout_blocker(v), ShareBlocker::kMisaligned);
  auto w = make_view(buf, at::kFloat, {2, 3}, {6, 4});  // outer stride 6
  EXPECT_EQ(layout_blocker(w), ShareBlocker::kMisaligned);
}

TEST(ArrayView, ByteSwappedBlocksMultiByteDtypesOnly) {
  alignas(16) char buf[256];
  for (auto t : torch_dtypes()) {
    auto v = make_view(buf, t, {4}, {itemsize(t)}, /*swapped=*/true);
    EXPECT_EQ(layout_blocker(v),
              itemsize(t) > 1 ? ShareBlocker::kByteOrder : ShareBlocker::kNone)
        << t;
  }
}

TEST(ArrayView, NegativeStrideBlocks) {
  float a[4] = {1, 2, 3, 4};
  EXPECT_EQ(layout_blocker(make_view(a + 3, at::kFloat, {4}, {-4})),
            ShareBlocker::kNegativeStride);
  float m[2][3] = {{1, 2, 3}, {4, 5, 6}};
  EXPECT_EQ(layout_blocker(make_view(&m[1][0], at::kFloat, {2, 3}, {-12, 4})),
            ShareBlocker::kNegativeStride);
}

TEST(ArrayView, OddStrideIsAMultipleOfTheAlignmentButNotOfTheItem) {
  // An array of {complex64 value; float weight;} records: the values are
  // 12 bytes apart, 4-aligned (complex64's alignment) but not 8-byte steps.
  alignas(16) char buf[256];
  EXPECT_EQ(layout_blocker(make_view(buf, at::kComplexFloat, {3}, {12})),
            ShareBlocker::kOddStride);
  // For a real type the same step is a misaligned one.
  EXPECT_EQ(layout_blocker(make_view(buf, at::kDouble, {3}, {12})),
            ShareBlocker::kMisaligned);
}

TEST(ArrayView, ZeroStrideBroadcastShares) {
  float row[4] = {1, 2, 3, 4};
  auto v = make_view(row, at::kFloat, {3, 4}, {0, 4});
  EXPECT_EQ(layout_blocker(v), ShareBlocker::kNone);
  auto y = to_tensor(std::move(v), copy_false());
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(row));
  EXPECT_EQ(y.sizes(), at::IntArrayRef({3, 4}));
  EXPECT_EQ(y.strides(), at::IntArrayRef({0, 1}));
  EXPECT_TRUE(at::equal(y, at::tensor({1.f, 2.f, 3.f, 4.f}).expand({3, 4})));
}

TEST(ArrayView, ExtentOneAxisWithAGarbageStrideShares) {
  float a[3] = {1, 2, 3};
  // The outer stride is never used: negative, odd or misaligned.
  EXPECT_EQ(layout_blocker(make_view(a, at::kFloat, {1, 3}, {-7, 4})), ShareBlocker::kNone);
  EXPECT_EQ(layout_blocker(make_view(a, at::kFloat, {3, 1}, {4, 6})), ShareBlocker::kNone);
  // Positive garbage: torch itself would replace a negative stride given
  // to set_sizes_and_strides by a contiguous one, hiding a wrong stride.
  auto v = make_view(a, at::kFloat, {1, 3}, {1000, 4});
  EXPECT_EQ(layout_blocker(v), ShareBlocker::kNone);
  auto y = to_tensor(std::move(v), copy_false());
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(a));
  EXPECT_EQ(y.strides(), at::IntArrayRef({3, 1}));  // C strides
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_TRUE(at::equal(y, at::tensor({1.f, 2.f, 3.f}).view({1, 3})));
}

TEST(ArrayView, EmptyViewsNeverBlock) {
  alignas(16) char buf[16];
  // Swapped, misaligned, negative and odd strides: nothing is ever read.
  auto v = make_view(buf + 1, at::kDouble, {0, 3}, {-5, 3}, /*swapped=*/true);
  v.writable = false;
  EXPECT_EQ(layout_blocker(v), ShareBlocker::kNone);
  EXPECT_EQ(share_blocker(v, at::kDouble, keep_float64()), ShareBlocker::kNone);
  CoerceOptions o = keep_float64();
  o.copy = false;
  auto y = to_tensor(std::move(v), o);
  EXPECT_EQ(y.sizes(), at::IntArrayRef({0, 3}));
  EXPECT_EQ(y.strides(), at::IntArrayRef({3, 1}));
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_EQ(y.scalar_type(), at::kDouble);
}

TEST(ArrayView, ReadOnlyBlocksUnlessCopyFalse) {
  float a[3] = {1, 2, 3};
  auto v = make_view(a, at::kFloat, {3}, {4});
  v.writable = false;
  EXPECT_EQ(layout_blocker(v), ShareBlocker::kNone);  // not a layout matter
  EXPECT_EQ(share_blocker(v, at::kFloat, {}), ShareBlocker::kReadOnly);
  EXPECT_EQ(share_blocker(v, at::kFloat, copy_false()), ShareBlocker::kNone);

  auto copied = to_tensor(std::move(v));
  EXPECT_NE(copied.data_ptr(), static_cast<void*>(a));
  EXPECT_TRUE(at::equal(copied, at::tensor({1.f, 2.f, 3.f})));

  auto w = make_view(a, at::kFloat, {3}, {4});
  w.writable = false;
  auto shared = to_tensor(std::move(w), copy_false());  // on the caller's word
  EXPECT_EQ(shared.data_ptr(), static_cast<void*>(a));
}

TEST(ArrayView, ShareBlockerOrderIsDtypeDevicePinLayoutReadOnly) {
  alignas(16) char buf[64];
  auto v = make_view(buf + 1, at::kDouble, {2}, {-8}, /*swapped=*/true);
  v.writable = false;
  CoerceOptions o;  // float64 -> float32 first
  EXPECT_EQ(share_blocker(v, at::kFloat, o), ShareBlocker::kDtype);
  o.device = at::Device("cuda");
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kDevice);
  o.device = at::Device("cpu");
  o.pin_memory = true;
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kPin);
  o.pin_memory = false;
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kByteOrder);
  v.dtype.swapped = false;
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kMisaligned);
  v.data = buf + 8;
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kNegativeStride);
  v.strides[0] = 8;
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kReadOnly);
  v.writable = true;
  EXPECT_EQ(share_blocker(v, at::kDouble, o), ShareBlocker::kNone);
}

// ---------------------------------------------------------------------------
// copy=False: the sentences and the errors

TEST(ArrayView, ShareBlockerReasonSentences) {
  alignas(16) char buf[64];
  const CoerceOptions none;
  auto v = make_view(buf, at::kDouble, {2, 3}, {-24, 8});
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kNegativeStride, v, at::kDouble, none),
            "it has negative strides (-24, 8), which tensors cannot represent");
  auto one = make_view(buf, at::kDouble, {2}, {-8});
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kNegativeStride, one, at::kDouble, none),
            "it has negative strides (-8,), which tensors cannot represent");
  auto odd = make_view(buf, at::kComplexFloat, {3}, {12});
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kOddStride, odd, at::kComplexFloat, none),
            "its strides (12,) are not multiples of its item size (8 bytes)");
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kMisaligned, v, at::kDouble, none),
            "its data is not aligned to its 8-byte items");
  auto swapped = make_view(buf, at::kDouble, {2}, {8}, true);
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kByteOrder, swapped, at::kDouble, none),
            "it is byte-swapped (>f8) and tensors hold native byte order");
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kReadOnly, v, at::kDouble, none),
            "it is read-only, and a tensor sharing it could be written");
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kPin, v, at::kDouble, none),
            "pin_memory=True needs a copy in page-locked memory");
  CoerceOptions dev;
  dev.device = at::Device("cuda:1");
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kDevice, v, at::kDouble, dev),
            "the result goes to cuda:1");
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kDtype, v, at::kFloat, none),
            "its dtype float64 becomes float32 (the float policy; pass "
            "float_dtype=None to keep float64)");
  CoerceOptions explicit_dtype;
  explicit_dtype.dtype = at::kShort;
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kDtype, v, at::kShort, explicit_dtype),
            "its dtype float64 becomes int16");
  EXPECT_EQ(share_blocker_reason(ShareBlocker::kNone, v, at::kDouble, none), "");
}

TEST(ArrayView, ByteSwappedNamesAreNumPys) {
  alignas(16) char buf[64];
  auto name = [&](at::ScalarType t) {
    auto v = make_view(buf, t, {2}, {itemsize(t)}, true);
    return share_blocker_reason(ShareBlocker::kByteOrder, v, t, {});
  };
  EXPECT_EQ(name(at::kHalf), "it is byte-swapped (>f2) and tensors hold native byte order");
  EXPECT_EQ(name(at::kInt), "it is byte-swapped (>i4) and tensors hold native byte order");
  EXPECT_EQ(name(at::kUInt64), "it is byte-swapped (>u8) and tensors hold native byte order");
  EXPECT_EQ(name(at::kComplexDouble),
            "it is byte-swapped (>c16) and tensors hold native byte order");
  EXPECT_EQ(name(at::kBFloat16),
            "it is byte-swapped (>bfloat16) and tensors hold native byte order");
}

// The full copy=False error for a view whose only blocker is `why`.
void expect_copy_false_error(ArrayView v, const std::string& reason,
                             CoerceOptions o = copy_false()) {
  const std::string expected =
      "torchbridge::to_tensor(copy=False): the array's memory cannot be shared "
      "because " + reason + "; pass copy=None to let torchbridge copy it.";
  o.copy = false;
  EXPECT_EQ(error_text<c10::ValueError>([&] { to_tensor(std::move(v), o); }), expected);
}

TEST(ArrayView, CopyFalseErrorsNameEachLayoutBlocker) {
  alignas(16) char buf[256];
  double d[3] = {1, 2, 3};
  expect_copy_false_error(make_view(d + 2, at::kFloat, {3}, {-8}),
                          "it has negative strides (-8,), which tensors cannot represent");
  expect_copy_false_error(make_view(buf + 1, at::kFloat, {3}, {4}),
                          "its data is not aligned to its 4-byte items");
  expect_copy_false_error(make_view(buf, at::kFloat, {3}, {6}),
                          "its data is not aligned to its 4-byte items");
  expect_copy_false_error(make_view(buf, at::kComplexFloat, {3}, {12}),
                          "its strides (12,) are not multiples of its item size (8 bytes)");
  expect_copy_false_error(make_view(buf, at::kInt, {3}, {4}, true),
                          "it is byte-swapped (>i4) and tensors hold native byte order");
  CoerceOptions pin;
  pin.pin_memory = true;
  expect_copy_false_error(make_view(buf, at::kFloat, {3}, {4}),
                          "pin_memory=True needs a copy in page-locked memory", pin);
  CoerceOptions cuda;
  cuda.device = at::Device("cuda");
  expect_copy_false_error(make_view(buf, at::kFloat, {3}, {4}), "the result goes to cuda",
                          cuda);
}

TEST(ArrayView, CopyFalseOnAPolicyCastSuggestsFloatDtypeNone) {
  double d[2] = {1, 2};
  expect_copy_false_error(make_view(d, at::kDouble, {2}, {8}),
                          "its dtype float64 becomes float32 (the float policy; "
                          "pass float_dtype=None to keep float64)");
  CoerceOptions o;
  o.dtype = at::kFloat;  // asked for: no suggestion
  expect_copy_false_error(make_view(d, at::kDouble, {2}, {8}),
                          "its dtype float64 becomes float32", o);
  // float_dtype=None is the fix the message promises.
  CoerceOptions keep = keep_float64();
  keep.copy = false;
  auto y = to_tensor(make_view(d, at::kDouble, {2}, {8}), keep);
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(d));
}

TEST(ArrayView, PolicySuggestionNamesTheTypeItKeeps) {
  // complex128 -> complex64 is the float policy too: float_dtype=None keeps
  // complex128 (not "float64").
  c10::complex<double> z[2] = {{1, 2}, {3, -4}};
  expect_copy_false_error(make_view(z, at::kComplexDouble, {2}, {16}),
                          "its dtype complex128 becomes complex64 (the float policy; "
                          "pass float_dtype=None to keep complex128)");
}

TEST(ArrayView, ProducerCastIsNotBlamedOnThePolicy) {
  // A producer's cast (NumPy's longdouble -> float64) blocks sharing even
  // with float_dtype=None, so the message must not suggest passing it.
  double d[2] = {1, 2};
  auto v = make_view(d, at::kDouble, {2}, {8});
  v.cast_from = "longdouble";
  CoerceOptions keep = keep_float64();
  EXPECT_EQ(share_blocker(v, at::kDouble, keep), ShareBlocker::kDtype);
  expect_copy_false_error(std::move(v), "its dtype longdouble becomes float64", keep);
}

TEST(ArrayView, CopyFalseOnATemporarySaysThereIsNoMemoryToShare) {
  float a[2] = {1, 2};
  auto v = make_view(a, at::kFloat, {2}, {4});
  v.temporary = true;
  v.temporary_from = "a Python list";
  EXPECT_EQ(error_text<c10::ValueError>([&] { to_tensor(std::move(v), copy_false()); }),
            "torchbridge::to_tensor(copy=False): the input has no memory to share "
            "(a Python list); pass copy=None to let torchbridge copy it.");
  auto w = make_view(a, at::kFloat, {2}, {4});
  w.temporary = true;
  EXPECT_EQ(error_text<c10::ValueError>([&] { to_tensor(std::move(w), copy_false()); }),
            "torchbridge::to_tensor(copy=False): the input has no memory to share "
            "(it was built for this call); pass copy=None to let torchbridge copy it.");
  // copy=None takes the temporary's memory as it is.
  auto x = make_view(a, at::kFloat, {2}, {4});
  x.temporary = true;
  EXPECT_EQ(to_tensor(std::move(x)).data_ptr(), static_cast<void*>(a));
}

// ---------------------------------------------------------------------------
// Sharing

TEST(ArrayView, SharedTensorSeesAndWritesTheBuffer) {
  int32_t m[2][3] = {{1, 2, 3}, {4, 5, 6}};
  auto y = to_tensor(make_view(m, at::kInt, {2, 3}, {12, 4}), copy_false());
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(m));
  EXPECT_EQ(y.sizes(), at::IntArrayRef({2, 3}));
  EXPECT_EQ(y.strides(), at::IntArrayRef({3, 1}));
  EXPECT_TRUE(y.is_contiguous());
  y.index_put_({1, 2}, 60);
  EXPECT_EQ(m[1][2], 60);
  m[0][0] = -1;
  EXPECT_EQ(y[0][0].item<int32_t>(), -1);

  // Fortran order and a strided slice share too, in element strides.
  auto f = to_tensor(make_view(m, at::kInt, {3, 2}, {4, 12}), copy_false());
  EXPECT_EQ(f.strides(), at::IntArrayRef({1, 3}));
  EXPECT_TRUE(at::equal(f, y.t()));
  auto s = to_tensor(make_view(&m[0][1], at::kInt, {2}, {12}), copy_false());
  EXPECT_EQ(s.data_ptr(), static_cast<void*>(&m[0][1]));
  EXPECT_EQ(s.strides(), at::IntArrayRef({3}));
  EXPECT_TRUE(at::equal(s, at::tensor({2, 5}, at::kInt)));
}

TEST(ArrayView, ZeroDimensionalViewShares) {
  double x = 2.5;
  CoerceOptions o = keep_float64();
  o.copy = false;
  auto y = to_tensor(make_view(&x, at::kDouble, {}, {}), o);
  EXPECT_EQ(y.dim(), 0);
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(&x));
  EXPECT_EQ(y.item<double>(), 2.5);
}

// ---------------------------------------------------------------------------
// Copies

TEST(ArrayView, ReversedArrayCopiesValuesInCOrder) {
  float m[2][3] = {{1, 2, 3}, {4, 5, 6}};
  // m[::-1, ::-1]: the first element is the last in memory.
  auto y = to_tensor(make_view(&m[1][2], at::kFloat, {2, 3}, {-12, -4}));
  EXPECT_NE(y.data_ptr(), static_cast<void*>(m));
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_TRUE(at::equal(y, at::tensor({6.f, 5.f, 4.f, 3.f, 2.f, 1.f}).view({2, 3})));
}

TEST(ArrayView, ByteSwappedValuesCopyNative) {
  const double values[3] = {1.5, -2.25, 1e10};
  uint64_t swapped[3];
  for (int i = 0; i < 3; ++i) {
    uint64_t bits;
    std::memcpy(&bits, &values[i], 8);
    swapped[i] = __builtin_bswap64(bits);
  }
  auto y = to_tensor(make_view(swapped, at::kDouble, {3}, {8}, true), keep_float64());
  EXPECT_EQ(y.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(y, at::tensor({1.5, -2.25, 1e10}, at::kDouble)));
  // Swapped and cast by the policy in one call.
  auto f = to_tensor(make_view(swapped, at::kDouble, {3}, {8}, true));
  EXPECT_EQ(f.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(f, at::tensor({1.5f, -2.25f, 1e10f})));
}

TEST(ArrayView, EveryDtypeCopiesWhenSwappedOrMisaligned) {
  alignas(16) char buf[256];
  for (auto t : torch_dtypes()) {
    const int64_t item = itemsize(t);
    auto src = sample(t, 5);
    const auto* p = static_cast<const char*>(src.data_ptr());
    // Byte-swapped: each part (each half of a complex) reversed.
    const int64_t unit = c10::isComplexType(t) ? item / 2 : item;
    for (int64_t i = 0; i < 5 * item; ++i)
      buf[i] = p[(i / unit) * unit + (unit - 1 - i % unit)];
    auto y = to_tensor(make_view(buf, t, {5}, {item}, true), keep_float64());
    EXPECT_EQ(y.scalar_type(), t);
    EXPECT_TRUE(at::equal(y, src)) << t << " swapped: " << y;
    // Misaligned by one byte.
    std::memcpy(buf + 1, p, 5 * item);
    auto z = to_tensor(make_view(buf + 1, t, {5}, {item}), keep_float64());
    EXPECT_TRUE(at::equal(z, src)) << t << " misaligned: " << z;
    if (item > 1) EXPECT_NE(z.data_ptr(), static_cast<void*>(buf + 1));
  }
}

TEST(ArrayView, MisalignedBufferCopiesValues) {
  const double values[4] = {0.5, 1.5, -3.0, 8.0};
  alignas(8) char buf[64];
  std::memcpy(buf + 1, values, sizeof values);
  auto y = to_tensor(make_view(buf + 1, at::kDouble, {2, 2}, {16, 8}), keep_float64());
  EXPECT_TRUE(y.is_contiguous());
  EXPECT_TRUE(at::equal(y, at::tensor({0.5, 1.5, -3.0, 8.0}, at::kDouble).view({2, 2})));
}

TEST(ArrayView, OddAndUnalignedStridesCopyFromRecords) {
  // Array of records {complex64 value; float weight;}: 12-byte steps.
  struct Rec {
    float re, im, weight;
  };
  Rec recs[3] = {{1, -1, 9}, {2, -2, 9}, {3, -3, 9}};
  auto c = to_tensor(make_view(&recs[0].re, at::kComplexFloat, {3}, {12}));
  using cf = c10::complex<float>;
  EXPECT_TRUE(at::equal(c, at::tensor(std::vector<cf>{cf(1, -1), cf(2, -2), cf(3, -3)})));
  // Packed {char tag; float x;} records: 5-byte steps (misaligned items).
  char packed[15] = {};
  const float xs[3] = {0.25f, -4.0f, 7.5f};
  for (int i = 0; i < 3; ++i) {
    packed[5 * i] = 'a';
    std::memcpy(packed + 5 * i + 1, &xs[i], 4);
  }
  auto x = to_tensor(make_view(packed + 1, at::kFloat, {3}, {5}));
  EXPECT_TRUE(at::equal(x, at::tensor({0.25f, -4.0f, 7.5f})));
  // A column of a 2-D field: outer axis misaligned in steps of 10 bytes.
  auto cols = to_tensor(make_view(packed + 1, at::kFloat, {1, 3}, {99, 5}));
  EXPECT_TRUE(at::equal(cols, at::tensor({0.25f, -4.0f, 7.5f}).view({1, 3})));
}

TEST(ArrayView, FortranOrderedCopiesKeepTheirOrder) {
  // A 2x3 Fortran-ordered float64 buffer: column by column.
  double f[6] = {1, 4, 2, 5, 3, 6};
  const auto expected = at::tensor({1., 2., 3., 4., 5., 6.}, at::kDouble).view({2, 3});
  auto y = to_tensor(make_view(f, at::kDouble, {2, 3}, {8, 16}));  // policy cast
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_EQ(y.strides(), at::IntArrayRef({1, 2}));
  EXPECT_TRUE(at::equal(y, expected.to(at::kFloat)));
  CoerceOptions c = keep_float64();
  c.copy = true;
  auto z = to_tensor(make_view(f, at::kDouble, {2, 3}, {8, 16}), c);
  EXPECT_NE(z.data_ptr(), static_cast<void*>(f));
  EXPECT_EQ(z.strides(), at::IntArrayRef({1, 2}));
  EXPECT_TRUE(at::equal(z, expected));
  // Blocked (byte-swapped) Fortran data comes back in C order.
  uint64_t s[6];
  for (int i = 0; i < 6; ++i) {
    std::memcpy(&s[i], &f[i], 8);
    s[i] = __builtin_bswap64(s[i]);
  }
  auto b = to_tensor(make_view(s, at::kDouble, {2, 3}, {8, 16}, true), keep_float64());
  EXPECT_EQ(b.strides(), at::IntArrayRef({3, 1}));
  EXPECT_TRUE(at::equal(b, expected));
}

TEST(ArrayView, PolicyCastAndExplicitDtypeCopy) {
  double d[3] = {1.75, -2.5, 3.0};
  auto f = to_tensor(make_view(d, at::kDouble, {3}, {8}));
  EXPECT_EQ(f.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(f, at::tensor({1.75f, -2.5f, 3.0f})));
  CoerceOptions o;
  o.dtype = at::kShort;
  auto s = to_tensor(make_view(d, at::kDouble, {3}, {8}), o);
  EXPECT_EQ(s.scalar_type(), at::kShort);
  EXPECT_TRUE(at::equal(s, at::tensor({1, -2, 3}, at::kShort)));
  // complex128 follows float_dtype to complex64.
  c10::complex<double> z[2] = {{1, 2}, {3, -4}};
  auto cz = to_tensor(make_view(z, at::kComplexDouble, {2}, {16}));
  EXPECT_EQ(cz.scalar_type(), at::kComplexFloat);
  // An integer view keeps its dtype and is shared.
  int64_t i[2] = {7, 8};
  auto ii = to_tensor(make_view(i, at::kLong, {2}, {8}));
  EXPECT_EQ(ii.data_ptr(), static_cast<void*>(i));
}

TEST(ArrayView, CopyTrueIsAlwaysFreshMemory) {
  float a[4] = {1, 2, 3, 4};
  CoerceOptions c;
  c.copy = true;
  auto y = to_tensor(make_view(a, at::kFloat, {4}, {4}), c);
  EXPECT_NE(y.data_ptr(), static_cast<void*>(a));
  a[0] = 100;
  EXPECT_EQ(y[0].item<float>(), 1.f);
  auto b = to_tensor(make_view(a, at::kFloat, {2, 2}, {0, 4}), c);  // broadcast
  EXPECT_NE(b.data_ptr(), static_cast<void*>(a));
  EXPECT_TRUE(at::equal(b, at::tensor({100.f, 2.f, 100.f, 2.f}).view({2, 2})));
}

TEST(ArrayView, PinMemoryWithoutCudaIsAClearError) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA present";
  float a[2] = {1, 2};
  CoerceOptions o;
  o.pin_memory = true;
  EXPECT_EQ(error_text<c10::Error>([&] { to_tensor(make_view(a, at::kFloat, {2}, {4}), o); }),
            "torchbridge::to_tensor: pin_memory=True needs a CUDA device to "
            "page-lock host memory, and none is available here; pass pin_memory=False.");
}

// ---------------------------------------------------------------------------
// The owner: released exactly once

TEST(ArrayView, SharedOwnerIsReleasedWithTheLastTensor) {
  ReleaseLog log;
  float a[4] = {1, 2, 3, 4};
  auto v = make_view(a, at::kFloat, {4}, {4});
  v.owner = BufferOwner(&log, &count_release);
  at::Tensor alias;
  {
    auto y = to_tensor(std::move(v), copy_false());
    EXPECT_EQ(y.data_ptr(), static_cast<void*>(a));
    alias = y.view({2, 2});
  }
  EXPECT_EQ(log.calls.load(), 0);  // the alias still holds the storage
  EXPECT_EQ(alias[1][1].item<float>(), 4.f);
  alias.reset();
  EXPECT_EQ(log.calls.load(), 1);
}

TEST(ArrayView, CopyReleasesTheOwnerWithTheView) {
  ReleaseLog log;
  double d[2] = {1, 2};
  at::Tensor y;
  {
    auto v = make_view(d, at::kDouble, {2}, {8});
    v.owner = BufferOwner(&log, &count_release);
    y = to_tensor(std::move(v));  // the policy cast copies
    EXPECT_EQ(log.calls.load(), 1);  // the view (to_tensor's argument) died
  }
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  y.reset();
  EXPECT_EQ(log.calls.load(), 1);  // the copy never held it
}

TEST(ArrayView, OwnerOfARefusedCopyFalseIsReleasedOnce) {
  ReleaseLog log;
  float a[3] = {1, 2, 3};
  auto v = make_view(a + 2, at::kFloat, {3}, {-4});
  v.owner = BufferOwner(&log, &count_release);
  EXPECT_THROW(to_tensor(std::move(v), copy_false()), c10::ValueError);
  EXPECT_EQ(log.calls.load(), 1);
  EXPECT_FALSE(v.owner);  // moved into the call, not released twice
}

TEST(ArrayView, OwnerOfAFailedRequiresGradIsReleasedOnce) {
  ReleaseLog log;
  int32_t a[2] = {1, 2};
  auto v = make_view(a, at::kInt, {2}, {4});
  v.owner = BufferOwner(&log, &count_release);
  CoerceOptions o;
  o.requires_grad = true;
  EXPECT_THROW(to_tensor(std::move(v), o), c10::ValueError);
  EXPECT_EQ(log.calls.load(), 1);
}

TEST(ArrayView, MovedFromOwnerDoesNotRelease) {
  ReleaseLog log;
  {
    BufferOwner a(&log, &count_release);
    BufferOwner b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_TRUE(b);
    a.reset();
    EXPECT_EQ(log.calls.load(), 0);
    BufferOwner c;
    c = std::move(b);
    EXPECT_FALSE(b);
    EXPECT_EQ(log.calls.load(), 0);
  }
  EXPECT_EQ(log.calls.load(), 1);
  // Assigning over a holding owner releases what it held, once.
  ReleaseLog first, second;
  {
    BufferOwner x(&first, &count_release);
    x = BufferOwner(&second, &count_release);
    EXPECT_EQ(first.calls.load(), 1);
    EXPECT_EQ(second.calls.load(), 0);
  }
  EXPECT_EQ(first.calls.load(), 1);
  EXPECT_EQ(second.calls.load(), 1);
}

TEST(ArrayView, ResetTwiceReleasesOnce) {
  ReleaseLog log;
  BufferOwner o(&log, &count_release);
  o.reset();
  o.reset();
  EXPECT_FALSE(o);
  EXPECT_EQ(log.calls.load(), 1);
}

TEST(ArrayView, OwnerMayBeReleasedOnAnotherThread) {
  ReleaseLog log;
  float a[2] = {1, 2};
  auto v = make_view(a, at::kFloat, {2}, {4});
  v.owner = BufferOwner(&log, &count_release);
  auto y = to_tensor(std::move(v), copy_false());
  std::thread::id worker;
  std::thread th([t = std::move(y), &worker]() mutable {
    worker = std::this_thread::get_id();
    EXPECT_EQ(t[1].item<float>(), 2.f);
    t.reset();
  });
  th.join();
  EXPECT_EQ(log.calls.load(), 1);
  EXPECT_EQ(log.thread, worker);
  EXPECT_NE(log.thread, std::this_thread::get_id());
}

// ---------------------------------------------------------------------------
// requires_grad, device, target_dtype

TEST(ArrayView, RequiresGradMakesAFloatingLeaf) {
  float a[2] = {1, 2};
  CoerceOptions o;
  o.requires_grad = true;
  auto y = to_tensor(make_view(a, at::kFloat, {2}, {4}), o);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(a));  // still shared
  (y * y).sum().backward();
  EXPECT_TRUE(at::equal(y.grad(), at::tensor({2.f, 4.f})));
}

TEST(ArrayView, RequiresGradOnIntegersIsAValueError) {
  int64_t a[2] = {1, 2};
  CoerceOptions o;
  o.requires_grad = true;
  EXPECT_EQ(error_text<c10::ValueError>([&] { to_tensor(make_view(a, at::kLong, {2}, {8}), o); }),
            "torchbridge::to_tensor(requires_grad=True): only floating and complex "
            "tensors can require gradients, but the result is int64; pass "
            "dtype=torch.float32 (or another floating dtype).");
  o.dtype = at::kFloat;  // the suggested fix
  auto y = to_tensor(make_view(a, at::kLong, {2}, {8}), o);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_TRUE(at::equal(y.detach(), at::tensor({1.f, 2.f})));
}

TEST(ArrayView, CpuDeviceOptionShares) {
  float a[2] = {1, 2};
  CoerceOptions o = copy_false();
  o.device = at::Device("cpu");
  auto y = to_tensor(make_view(a, at::kFloat, {2}, {4}), o);
  EXPECT_EQ(y.data_ptr(), static_cast<void*>(a));
  EXPECT_TRUE(y.device().is_cpu());
}

TEST(ArrayView, CudaTargetWithoutCudaIsTheResolveDeviceError) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA present";
  float a[2] = {1, 2};
  CoerceOptions o;
  o.device = at::Device("cuda");
  std::string expected;
  try {
    torchbridge::resolve_device(at::Device("cuda"));
  } catch (const c10::Error& e) {
    expected = e.what_without_backtrace();
  }
  ASSERT_NE(expected.find("device='cuda' was requested"), std::string::npos) << expected;
  EXPECT_EQ(error_text<c10::Error>([&] { to_tensor(make_view(a, at::kFloat, {2}, {4}), o); }),
            expected);
}

TEST(ArrayView, TargetDtypeOfATypeTorchLacksIsATypeError) {
  char buf[8] = {};
  ArrayView v;
  v.data = buf;
  v.shape = {2};
  v.strides = {4};
  v.dtype.itemsize = 4;
  v.dtype.name = "<U1";
  const std::string msg = "torchbridge::to_tensor: cannot convert a buffer of <U1 (torch "
                          "has no such dtype); convert it to a numeric type first.";
  EXPECT_EQ(error_text<c10::TypeError>([&] { torchbridge::target_dtype(v, {}); }), msg);
  EXPECT_EQ(error_text<c10::TypeError>([&] { to_tensor(std::move(v)); }), msg);
  ArrayView unnamed;
  unnamed.shape = {0};
  unnamed.strides = {1};
  EXPECT_THROW_MSG(torchbridge::target_dtype(unnamed, {}), c10::TypeError,
                   "cannot convert a buffer of an unknown element type");
}

TEST(ArrayView, TargetDtypeFollowsThePolicy) {
  double d = 0;
  auto v = make_view(&d, at::kDouble, {}, {});
  EXPECT_EQ(torchbridge::target_dtype(v, {}), at::kFloat);
  EXPECT_EQ(torchbridge::target_dtype(v, keep_float64()), at::kDouble);
  CoerceOptions o;
  o.dtype = at::kHalf;
  EXPECT_EQ(torchbridge::target_dtype(v, o), at::kHalf);
}

}  // namespace

// ---- DLPack (core/dlpack.cpp) ----

namespace {

struct FakeManaged {
  DLManagedTensorVersioned m{};
  int64_t shape[2] = {2, 3};
  int64_t strides[2] = {3, 1};
  float data[6] = {0, 1, 2, 3, 4, 5};
  int* deleted = nullptr;
};

FakeManaged* make_managed(int* deleted) {
  auto* f = new FakeManaged();
  f->deleted = deleted;
  f->m.version = {DLPACK_MAJOR_VERSION, 0};
  f->m.manager_ctx = f;
  f->m.deleter = [](DLManagedTensorVersioned* self) {
    auto* owner = static_cast<FakeManaged*>(self->manager_ctx);
    ++*owner->deleted;
    delete owner;
  };
  DLTensor& t = f->m.dl_tensor;
  t.data = f->data;
  t.device = {kDLCPU, 0};
  t.ndim = 2;
  t.dtype = {kDLFloat, 32, 1};
  t.shape = f->shape;
  t.strides = f->strides;
  t.byte_offset = 0;
  return f;
}

}  // namespace

TEST(DLPack, WritableIsSharedAndTheDeleterRunsOnceWithTheTensor) {
  int deleted = 0;
  FakeManaged* f = make_managed(&deleted);
  float* data = f->data;
  {
    at::Tensor t = to_tensor(torchbridge::view_of_dlpack(&f->m));
    EXPECT_EQ(t.data_ptr(), static_cast<void*>(data));
    EXPECT_EQ(t.sizes(), at::IntArrayRef({2, 3}));
    EXPECT_EQ(t.strides(), at::IntArrayRef({3, 1}));
    EXPECT_EQ(t[1][2].item<float>(), 5.0f);
    EXPECT_EQ(deleted, 0);
  }
  EXPECT_EQ(deleted, 1);
}

TEST(DLPack, ReadOnlyIsCopiedUnlessCopyFalse) {
  int deleted = 0;
  FakeManaged* f = make_managed(&deleted);
  f->m.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
  at::Tensor c = to_tensor(torchbridge::view_of_dlpack(&f->m));
  EXPECT_EQ(deleted, 1);  // the copy does not hold the producer
  EXPECT_TRUE(at::equal(c, at::arange(6, at::kFloat).reshape({2, 3})));
  FakeManaged* g = make_managed(&deleted);
  CoerceOptions no_copy;
  no_copy.copy = false;
  at::Tensor s = to_tensor(torchbridge::view_of_dlpack(&g->m), no_copy);
  EXPECT_EQ(s.data_ptr(), static_cast<void*>(g->data));
  s.reset();
  EXPECT_EQ(deleted, 2);
}

TEST(DLPack, NullStridesAreRowMajorAndByteOffsetCounts) {
  int deleted = 0;
  FakeManaged* f = make_managed(&deleted);
  f->m.dl_tensor.strides = nullptr;
  f->m.dl_tensor.byte_offset = sizeof(float);
  f->shape[0] = 1;
  f->shape[1] = 5;
  at::Tensor t = to_tensor(torchbridge::view_of_dlpack(&f->m));
  EXPECT_EQ(t.strides(), at::IntArrayRef({5, 1}));
  EXPECT_EQ(t[0][0].item<float>(), 1.0f);
  t.reset();
  EXPECT_EQ(deleted, 1);
}

TEST(DLPack, RefusedInputsStillRunTheDeleterOnce) {
  int deleted = 0;
  FakeManaged* f = make_managed(&deleted);
  f->m.dl_tensor.device = {kDLOpenCL, 0};
  EXPECT_THROW(
      {
        try {
          torchbridge::view_of_dlpack(&f->m);
        } catch (const c10::ValueError& e) {
          EXPECT_NE(std::string(e.what()).find("device type 4"), std::string::npos) << e.what();
          throw;
        }
      },
      c10::ValueError);
  EXPECT_EQ(deleted, 1);
  f = make_managed(&deleted);
  f->m.dl_tensor.dtype = {kDLFloat, 32, 4};
  EXPECT_THROW(torchbridge::view_of_dlpack(&f->m), c10::TypeError);
  EXPECT_EQ(deleted, 2);
  f = make_managed(&deleted);
  f->m.dl_tensor.dtype = {kDLOpaqueHandle, 64, 1};
  EXPECT_THROW(torchbridge::view_of_dlpack(&f->m), c10::TypeError);
  EXPECT_EQ(deleted, 3);
  f = make_managed(&deleted);
  f->m.version.major = DLPACK_MAJOR_VERSION + 1;
  EXPECT_THROW(torchbridge::view_of_dlpack(&f->m), c10::ValueError);
  EXPECT_EQ(deleted, 4);
}
