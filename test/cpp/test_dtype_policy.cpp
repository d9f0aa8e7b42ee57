// The dtype policy and the host-dtype rule, for every dtype.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>

#include "test_util.h"

using torchbridge::host_dtype;
using torchbridge::policy_dtype;
using torchbridge::testing::numpy_dtypes;

TEST(PolicyDtype, DefaultTurnsFloat64IntoFloat32AndKeepsTheRest) {
  for (auto t : numpy_dtypes()) {
    const auto want = t == at::kDouble          ? at::kFloat
                      : t == at::kComplexDouble ? at::kComplexFloat
                                                : t;
    EXPECT_EQ(policy_dtype(t), want) << torchbridge::dtype_name(t);
  }
  EXPECT_EQ(policy_dtype(at::kBFloat16), at::kBFloat16);
  EXPECT_EQ(policy_dtype(at::ScalarType::Float8_e4m3fn),
            at::ScalarType::Float8_e4m3fn);
}

TEST(PolicyDtype, NoFloatDtypeKeepsEverything) {
  for (auto t : numpy_dtypes()) EXPECT_EQ(policy_dtype(t, {}, std::nullopt), t);
}

TEST(PolicyDtype, ExplicitDtypeWins) {
  for (auto t : numpy_dtypes()) {
    EXPECT_EQ(policy_dtype(t, at::kShort), at::kShort);
    EXPECT_EQ(policy_dtype(t, at::kDouble, std::nullopt), at::kDouble);
  }
}

TEST(PolicyDtype, FloatDtypeSetsTheComplexParts) {
  EXPECT_EQ(policy_dtype(at::kDouble, {}, at::kHalf), at::kHalf);
  EXPECT_EQ(policy_dtype(at::kComplexDouble, {}, at::kHalf), at::kComplexHalf);
  EXPECT_EQ(policy_dtype(at::kComplexDouble, {}, at::kDouble),
            at::kComplexDouble);
  EXPECT_EQ(policy_dtype(at::kDouble, {}, at::kBFloat16), at::kBFloat16);
}

TEST(PolicyDtype, BFloat16HasNoComplexCounterpart) {
  EXPECT_THROW_MSG(policy_dtype(at::kComplexDouble, {}, at::kBFloat16),
                   c10::TypeError, "has no complex counterpart");
  // The suggested fix works.
  EXPECT_EQ(policy_dtype(at::kComplexDouble, at::kComplexFloat, at::kBFloat16),
            at::kComplexFloat);
}

TEST(PolicyDtype, NonFloatingFloatDtypeIsRejectedForEveryInput) {
  EXPECT_THROW_MSG(policy_dtype(at::kInt, {}, at::kLong), c10::TypeError,
                   "float_dtype must be a floating dtype");
  EXPECT_THROW_MSG(policy_dtype(at::kDouble, {}, at::kBool), c10::TypeError,
                   "pass float_dtype=None");
}

TEST(HostDtype, NumpyDtypesAreKept) {
  for (auto t : numpy_dtypes()) {
    EXPECT_TRUE(torchbridge::has_numpy_dtype(t));
    EXPECT_EQ(host_dtype(t), t);
  }
}

TEST(HostDtype, DtypesNumpyLacksWidenExactly) {
  EXPECT_FALSE(torchbridge::has_numpy_dtype(at::kBFloat16));
  EXPECT_EQ(host_dtype(at::kBFloat16), at::kFloat);
  for (auto t : {at::ScalarType::Float8_e4m3fn, at::ScalarType::Float8_e5m2,
                 at::ScalarType::Float8_e4m3fnuz,
                 at::ScalarType::Float8_e5m2fnuz,
                 at::ScalarType::Float8_e8m0fnu}) {
    EXPECT_FALSE(torchbridge::has_numpy_dtype(t));
    EXPECT_EQ(host_dtype(t), at::kFloat);
  }
  EXPECT_EQ(host_dtype(at::kComplexHalf), at::kComplexFloat);
  EXPECT_EQ(host_dtype(at::kQInt8), at::kFloat);
  EXPECT_EQ(host_dtype(at::kQUInt8), at::kFloat);
}

TEST(HostDtype, BitsAndPackedTypesSayHowToGetTheBytes) {
  EXPECT_THROW_MSG(host_dtype(at::ScalarType::Bits8), c10::TypeError,
                   "t.view(torch.uint8)");
  EXPECT_THROW_MSG(host_dtype(at::ScalarType::UInt4), c10::TypeError,
                   "torch.uint4 has no NumPy equivalent");
  EXPECT_THROW_MSG(host_dtype(at::ScalarType::Float4_e2m1fn_x2), c10::TypeError,
                   "packs two 4-bit floats");
  // The suggested fix works for bits8.
  auto bits = at::zeros({3}, at::kByte).view(at::ScalarType::Bits8);
  EXPECT_EQ(bits.view(at::kByte).scalar_type(), at::kByte);
}

TEST(DtypeName, MatchesTorchPythonNames) {
  EXPECT_EQ(torchbridge::dtype_name(at::kFloat), "float32");
  EXPECT_EQ(torchbridge::dtype_name(at::kUInt16), "uint16");
  EXPECT_EQ(torchbridge::dtype_name(at::kComplexHalf), "complex32");
  EXPECT_EQ(torchbridge::dtype_name(at::ScalarType::Float8_e4m3fn),
            "float8_e4m3fn");
  EXPECT_EQ(torchbridge::dtype_name(at::kQInt8), "qint8");
}
