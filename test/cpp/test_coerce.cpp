// torchbridge::coerce: the policy dtype on the target device.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "test_util.h"

using torchbridge::CoerceOptions;
using torchbridge::coerce;
using torchbridge::testing::numpy_dtypes;

TEST(Coerce, AppliesTheFloatPolicyToEveryDtype) {
  for (auto t : numpy_dtypes()) {
    auto x = t == at::kBool ? at::ones({3}, at::kBool) : at::arange(3).to(t);
    auto y = coerce(x);
    EXPECT_EQ(y.scalar_type(), torchbridge::policy_dtype(t));
    EXPECT_TRUE(at::equal(y, x.to(y.scalar_type())));
    if (y.scalar_type() == t) EXPECT_TRUE(y.is_same(x));  // nothing to do
  }
}

TEST(Coerce, FloatDtypeNulloptKeepsFloat64) {
  auto x = at::ones({2}, at::kDouble);
  CoerceOptions o;
  o.float_dtype = std::nullopt;
  EXPECT_TRUE(coerce(x, o).is_same(x));
}

TEST(Coerce, ExplicitDtypeWins) {
  CoerceOptions o;
  o.dtype = at::kShort;
  auto y = coerce(at::tensor({1.9, -2.9}, at::kDouble), o);
  EXPECT_EQ(y.scalar_type(), at::kShort);
  EXPECT_EQ(y[0].item<int16_t>(), 1);
}

TEST(Coerce, ExplicitCpuDeviceIsANoOpForCpuTensors) {
  CoerceOptions o;
  o.device = at::Device("cpu");
  auto x = at::ones({2});
  EXPECT_TRUE(coerce(x, o).is_same(x));
}

TEST(Coerce, UnavailableCudaIsAClearError) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA present";
  CoerceOptions o;
  o.device = at::Device("cuda");
  EXPECT_THROW_MSG(coerce(at::ones({2}), o), c10::Error,
                   "pass device='cpu'");
  EXPECT_THROW_MSG(torchbridge::resolve_device(at::Device("cuda:1")),
                   c10::Error, "device='cuda:1' was requested");
}

TEST(Coerce, ResolveDeviceNormalisesCpu) {
  EXPECT_EQ(torchbridge::resolve_device(at::Device("cpu")), at::Device("cpu"));
  EXPECT_EQ(torchbridge::resolve_device(at::Device(at::kCPU, 0)),
            at::Device("cpu"));
}

TEST(Coerce, CopyTrueClonesCopyFalseRefuses) {
  auto x = at::ones({2}, at::kFloat);
  CoerceOptions c;
  c.copy = true;
  auto y = coerce(x, c);
  EXPECT_FALSE(y.is_alias_of(x));
  EXPECT_TRUE(at::equal(x, y));

  CoerceOptions n;
  n.copy = false;
  EXPECT_TRUE(coerce(x, n).is_same(x));
  EXPECT_THROW_MSG(coerce(at::ones({2}, at::kDouble), n), c10::ValueError,
                   "its dtype torch.float64 becomes float32");
}

TEST(Coerce, GradientsFlowBackThroughTheCast) {
  auto x = at::tensor({1.0, 2.0}, at::kDouble).requires_grad_();
  auto y = coerce(x);
  ASSERT_TRUE(y.requires_grad());
  (y * y).sum().backward();
  EXPECT_EQ(x.grad().scalar_type(), at::kDouble);
  EXPECT_TRUE(at::allclose(x.grad(), 2 * x.detach()));
}

TEST(Coerce, MetaTensorsCastButCannotMoveToData) {
  auto m = at::empty({2, 3}, at::device(at::kMeta).dtype(at::kDouble));
  auto y = coerce(m);
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  CoerceOptions o;
  o.device = at::Device("cpu");
  EXPECT_THROW_MSG(coerce(m, o), c10::ValueError, "cannot move to cpu");
}

TEST(Coerce, QuantizedInputsAreDequantizedForFloatTargets) {
  auto q = at::quantize_per_tensor(at::tensor({0.5f, -1.0f}), 0.5, 0,
                                   at::kQInt8);
  EXPECT_TRUE(coerce(q).is_same(q));  // policy keeps qint8
  CoerceOptions o;
  o.dtype = at::kFloat;
  EXPECT_TRUE(at::equal(coerce(q, o), q.dequantize()));
}

TEST(Coerce, PinMemoryNeedsCuda) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA present";
  CoerceOptions o;
  o.pin_memory = true;
  EXPECT_THROW_MSG(coerce(at::ones({2}), o), c10::Error,
                   "pin_memory=True needs a CUDA device");
}
