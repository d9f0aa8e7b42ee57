// The operators through the dispatcher, as a C++ program reaches them.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "test_util.h"

using torchbridge::testing::numpy_dtypes;

namespace {
c10::OperatorHandle find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}
}  // namespace

TEST(Ops, SchemasAreRegisteredAsDocumented) {
  std::ostringstream coerce, to_host;
  coerce << find("torchbridge::coerce").schema();
  to_host << find("torchbridge::to_host").schema();
  EXPECT_EQ(coerce.str(),
            "torchbridge::coerce(Tensor self, ScalarType? dtype=None, Device? "
            "device=None, bool non_blocking=False) -> Tensor");
  EXPECT_EQ(to_host.str(),
            "torchbridge::to_host(Tensor self, ScalarType? dtype=None, bool "
            "pin_memory=False) -> Tensor");
}

TEST(Ops, CpuCudaMetaAndAutogradKernelsAreRegistered) {
  for (const char* name : {"torchbridge::coerce", "torchbridge::to_host"}) {
    // The computed table shows where each key's kernel came from; the
    // autograd kernel is registered once, to the Autograd alias key.
    const std::string table = find(name).dumpComputedTable();
    for (const char* row : {"CPU: registered at", "CUDA: registered at",
                            "Meta: registered at",
                            "AutogradCPU: registered at",
                            "AutogradCUDA: registered at"}) {
      EXPECT_NE(table.find(row), std::string::npos) << name << " lacks " << row;
    }
    EXPECT_NE(table.find("csrc/ops/autograd.cpp"), std::string::npos) << table;
  }
}

TEST(Ops, CoerceThroughTheDispatcherFollowsThePolicy) {
  auto op = find("torchbridge::coerce")
                .typed<at::Tensor(const at::Tensor&, std::optional<at::ScalarType>,
                                  std::optional<at::Device>, bool)>();
  for (auto t : numpy_dtypes()) {
    for (auto shape : {std::vector<int64_t>{}, std::vector<int64_t>{0},
                       std::vector<int64_t>{2, 3}}) {
      auto x = at::ones(shape, at::TensorOptions().dtype(t));
      auto y = op.call(x, std::nullopt, std::nullopt, false);
      EXPECT_EQ(y.scalar_type(), torchbridge::policy_dtype(t));
      EXPECT_EQ(y.sizes(), x.sizes());
      // Functional: never an alias, even when nothing changes.
      EXPECT_FALSE(y.is_alias_of(x));
      EXPECT_TRUE(at::equal(y.to(t), x));
    }
  }
}

TEST(Ops, ToHostNeverAliasesAndNeverRequiresGrad) {
  auto x = at::arange(4, at::kFloat).requires_grad_();
  auto h = torchbridge::ops::to_host(x);
  EXPECT_FALSE(h.is_alias_of(x));
  EXPECT_FALSE(h.requires_grad());
  EXPECT_TRUE(at::equal(h, x.detach()));
  auto b = torchbridge::ops::to_host(at::ones({2}, at::kBFloat16));
  EXPECT_EQ(b.scalar_type(), at::kFloat);
  auto i = torchbridge::ops::to_host(at::ones({2}), at::kInt);
  EXPECT_EQ(i.scalar_type(), at::kInt);
}

TEST(Ops, CoercePassesGradientsLikeTensorTo) {
  auto x = at::tensor({1.0, -3.0}, at::kDouble).requires_grad_();
  auto y = torchbridge::ops::coerce(x, at::kFloat);
  ASSERT_TRUE(y.requires_grad());
  (y * 3).sum().backward();
  EXPECT_EQ(x.grad().scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(x.grad(), at::full({2}, 3.0, at::kDouble)));
}

TEST(Ops, MetaTensorsGetShapesFromCoerceAndAValueErrorFromToHost) {
  auto m = at::empty({2, 3}, at::device(at::kMeta).dtype(at::kDouble));
  auto y = torchbridge::ops::coerce(m);
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_EQ(y.sizes(), m.sizes());
}

TEST(Ops, ErrorsNameTheOperator) {
  EXPECT_THROW_MSG(torchbridge::ops::to_host(at::empty({2}, at::kMeta)),
                   c10::ValueError, "torchbridge::to_host: meta tensors");
  EXPECT_THROW_MSG(torchbridge::ops::coerce(at::ones({2}), at::kQInt8),
                   c10::TypeError, "torchbridge::coerce: dtype=torch.qint8");
}
