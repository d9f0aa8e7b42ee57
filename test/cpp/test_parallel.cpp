// core/parallel.h: pieces run once each, errors come back, nesting runs
// inline; and the casts built on it (through the public coerce) keep
// their values, float64 -> float16 rounding once.

#include <torchbridge/torchbridge.h>

#include "../../csrc/core/parallel.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <vector>

using torchbridge::detail::parallel_for;

TEST(ParallelFor, RunsEveryItemExactlyOnce) {
  for (int64_t n : {1, 999, 1000, 1001, 123457}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for(n, 1000, [&](int64_t b, int64_t e) {
      ASSERT_LT(b, e);
      ASSERT_LE(e - b, 1000);
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

TEST(ParallelFor, RethrowsTheFirstErrorAndStaysUsable) {
  EXPECT_THROW(parallel_for(100000, 100,
                            [](int64_t b, int64_t) {
                              if (b == 5000) throw std::runtime_error("piece 50");
                            }),
               std::runtime_error);
  std::atomic<int64_t> sum{0};
  parallel_for(100000, 100, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 100000);
}

TEST(ParallelFor, NestedCallsRunInline) {
  std::atomic<int64_t> sum{0};
  parallel_for(64, 1, [&](int64_t, int64_t) {
    parallel_for(1000, 10, [&](int64_t b, int64_t e) { sum += e - b; });
  });
  EXPECT_EQ(sum.load(), 64 * 1000);
}

TEST(ParallelFor, FailedThreadCreationStillRunsEverything) {
  torchbridge::detail::set_fail_thread_creation(true);
  std::atomic<int64_t> sum{0};
  parallel_for(1 << 20, 1 << 10, [&](int64_t b, int64_t e) { sum += e - b; });
  torchbridge::detail::set_fail_thread_creation(false);
  EXPECT_EQ(sum.load(), 1 << 20);
}

TEST(ParallelFor, UsableThreadsIsWithinTorchsLimit) {
  const int n = torchbridge::detail::usable_threads();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, at::get_num_threads());
}

TEST(ParallelCasts, LargePolicyCastMatchesATen) {
  auto x = at::randn({3, 1 << 18}, at::kDouble);
  auto y = torchbridge::coerce(x);
  ASSERT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(y, x.to(at::kFloat)));
  auto u = at::randint(0, 255, {1 << 21}, at::kByte);
  torchbridge::CoerceOptions o;
  o.dtype = at::kFloat;
  EXPECT_TRUE(at::equal(torchbridge::coerce(u, o), u.to(at::kFloat)));
}

TEST(ParallelCasts, Float64ToFloat16RoundsOnce) {
  // 1 + 2^-11 + 2^-40 and 2^-25 + 2^-54: through float32 both lose the
  // part that puts them above a float16 halfway point.
  auto x = at::tensor({1.0004882812509095, 2.9802322388562674e-08}, at::kDouble);
  torchbridge::CoerceOptions o;
  o.dtype = at::kHalf;
  auto y = torchbridge::coerce(x, o).contiguous();
  uint16_t bits[2];
  std::memcpy(bits, y.const_data_ptr(), sizeof bits);
  EXPECT_EQ(bits[0], 0x3C01);
  EXPECT_EQ(bits[1], 0x0001);
}
