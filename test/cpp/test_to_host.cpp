// torchbridge::to_host: every tensor kind to a detached dense CPU tensor.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <limits>
#include <utility>

#include "test_util.h"

using torchbridge::HostOptions;
using torchbridge::to_host;
using torchbridge::testing::numpy_dtypes;

namespace {
at::Tensor sample(at::ScalarType t) {
  // Values that survive every dtype in the map (bool gets 0/1).
  auto base = at::arange(12, at::kDouble).reshape({3, 4});
  return t == at::kBool ? (base.remainder(2) == 0) : base.to(t);
}
}  // namespace

TEST(ToHost, DenseCpuTensorsOfNumpyDtypesComeBackAsIs) {
  for (auto t : numpy_dtypes()) {
    auto x = sample(t);
    auto h = to_host(x);
    EXPECT_TRUE(h.is_same(x)) << torchbridge::dtype_name(t);
  }
}

TEST(ToHost, RequiresGradIsDetachedWithoutACopy) {
  auto x = at::arange(4, at::kFloat).requires_grad_();
  auto h = to_host(x);
  EXPECT_FALSE(h.requires_grad());
  EXPECT_TRUE(h.is_alias_of(x));
  EXPECT_EQ(h.data_ptr(), x.data_ptr());
}

TEST(ToHost, NonContiguousViewsKeepTheirStrides) {
  auto x = at::arange(12, at::kFloat).reshape({3, 4}).t();
  auto h = to_host(x);
  EXPECT_TRUE(h.is_same(x));
  EXPECT_EQ(h.strides(), x.strides());
}

TEST(ToHost, DtypesNumpyLacksBecomeFloat32WithExactValues) {
  for (auto t : {at::kBFloat16, at::ScalarType::Float8_e4m3fn,
                 at::ScalarType::Float8_e5m2}) {
    auto x = at::tensor({0.5, -2.0, 4.0}).to(t);
    auto h = to_host(x);
    EXPECT_EQ(h.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(h, x.to(at::kFloat)));
  }
  auto c = at::tensor({1.0, 2.0}).to(at::kComplexFloat).to(at::kComplexHalf);
  EXPECT_EQ(to_host(c).scalar_type(), at::kComplexFloat);
}

TEST(ToHost, ConjAndNegBitsAreResolved) {
  auto z = at::complex(at::tensor({1.0f, 2.0f}), at::tensor({3.0f, -4.0f}));
  auto conj = z.conj();
  ASSERT_TRUE(conj.is_conj());
  auto h = to_host(conj);
  EXPECT_FALSE(h.is_conj());
  EXPECT_TRUE(at::equal(h, conj.resolve_conj()));
  EXPECT_FLOAT_EQ(at::imag(h)[0].item<float>(), -3.0f);

  auto neg = at::tensor({1.0f, -2.0f})._neg_view();
  ASSERT_TRUE(neg.is_neg());
  auto hn = to_host(neg);
  EXPECT_FALSE(hn.is_neg());
  EXPECT_FLOAT_EQ(hn[0].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(hn[1].item<float>(), 2.0f);
}

TEST(ToHost, SparseTensorsAreDensified) {
  auto dense = at::tensor({0.0f, 3.0f, 0.0f, 4.0f}).reshape({2, 2});
  for (auto sparse : {dense.to_sparse(), dense.to_sparse_csr()}) {
    auto h = to_host(sparse);
    EXPECT_EQ(h.layout(), at::kStrided);
    EXPECT_TRUE(at::equal(h, dense));
  }
}

TEST(ToHost, QuantizedTensorsAreDequantized) {
  auto x = at::tensor({0.5f, 1.0f, -1.5f});
  auto q = at::quantize_per_tensor(x, 0.5, 0, at::kQInt8);
  auto h = to_host(q);
  EXPECT_EQ(h.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(h, q.dequantize()));
}

TEST(ToHost, ExplicitDtypeCasts) {
  auto x = at::arange(5, at::kFloat);
  HostOptions o;
  o.dtype = at::kInt;
  auto h = to_host(x, o);
  EXPECT_EQ(h.scalar_type(), at::kInt);
  EXPECT_EQ(h[4].item<int>(), 4);
}

// The policy cast runs torchbridge's own loop, in the calling thread up to
// 128 KB of output, on torch's thread pool up to 1 MB and from 32 MB
// (prefaulting the output), ATen's copy_ in between: each must round like
// ATen's cast, bit for bit, edge values included, for any thread count.
TEST(ToHost, PolicyCastsMatchAtenBitForBitOnBothSidesOfThePoolLine) {
  const double edge[] = {0.0, -0.0, 1.0 / 3.0, 1e300, -1e300, 1e-310, 1e-45,
                         std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity(),
                         std::numeric_limits<double>::quiet_NaN(),
                         3.4028235677973366e38 /* rounds to inf */};
  const int old_threads = at::get_num_threads();
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    for (int64_t n : {int64_t{31}, int64_t{32768}, int64_t{32769}, int64_t{100003},
                      int64_t{300007}, int64_t{8650757}}) {
      auto x = at::randn({n}, at::kDouble) * 1e20;
      for (int64_t i = 0; i < 11; ++i) x[i * (n / 11)] = edge[i];
      for (auto [src, dst] : {std::pair{at::kDouble, at::kFloat},
                              std::pair{at::kComplexDouble, at::kComplexFloat}}) {
        auto in = src == at::kDouble ? x : at::complex(x, x.flip(0));
        HostOptions o;
        o.dtype = dst;
        auto h = to_host(in, o);
        auto ref = in.to(dst);
        auto as_bits = [](const at::Tensor& t) {
          return at::view_as_real(t.is_complex() ? t : at::complex(t, t)).view(at::kInt);
        };
        EXPECT_TRUE(at::equal(as_bits(h), as_bits(ref)))
            << "threads " << threads << " n " << n << " " << torchbridge::dtype_name(src);
      }
    }
  }
  at::set_num_threads(old_threads);
}

TEST(ToHost, CopyTrueAlwaysGivesFreshMemory) {
  auto x = at::arange(4, at::kFloat);
  HostOptions o;
  o.copy = true;
  auto h = to_host(x, o);
  EXPECT_FALSE(h.is_alias_of(x));
  EXPECT_TRUE(at::equal(h, x));
}

TEST(ToHost, CopyFalseRefusesToCopyAndSaysWhy) {
  HostOptions o;
  o.copy = false;
  EXPECT_THROW_MSG(to_host(at::ones({2}, at::kBFloat16), o), c10::ValueError,
                   "its dtype torch.bfloat16 becomes float32");
  EXPECT_THROW_MSG(to_host(at::ones({2}, at::kBFloat16), o), c10::ValueError,
                   "pass copy=None");
  auto z = at::ones({2}, at::kComplexFloat).conj();
  EXPECT_THROW_MSG(to_host(z, o), c10::ValueError, "conjugate bit is set");
  EXPECT_THROW_MSG(to_host(at::ones({2}).to_sparse(), o), c10::ValueError,
                   "layout is torch.sparse_coo");
  auto x = at::ones({2});
  EXPECT_TRUE(to_host(x, o).is_same(x));  // nothing to copy: allowed
}

TEST(ToHost, MetaAndUndefinedTensorsAreRefused) {
  EXPECT_THROW_MSG(to_host(at::empty({2}, at::device(at::kMeta))),
                   c10::ValueError, "meta tensors have a shape but no data");
  EXPECT_THROW_MSG(to_host(at::Tensor()), c10::ValueError, "undefined tensor");
}

TEST(ToHost, QuantizedOrBitsTargetsAreRefused) {
  HostOptions o;
  o.dtype = at::kQInt8;
  EXPECT_THROW_MSG(to_host(at::ones({2}), o), c10::TypeError,
                   "quantized dtype");
}

TEST(ToHost, PinMemoryNeedsCuda) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA present";
  HostOptions o;
  o.pin_memory = true;
  EXPECT_THROW_MSG(to_host(at::ones({2}), o), c10::Error,
                   "pin_memory=True needs a CUDA device");
}

TEST(ToHost, ZeroDimAndZeroSizeTensors) {
  auto s = at::scalar_tensor(3.5, at::kBFloat16);
  auto hs = to_host(s);
  EXPECT_EQ(hs.dim(), 0);
  EXPECT_EQ(hs.item<float>(), 3.5f);
  auto e = at::empty({0, 3}, at::kBFloat16);
  auto he = to_host(e);
  EXPECT_EQ(he.sizes(), e.sizes());
  EXPECT_EQ(he.scalar_type(), at::kFloat);
}
