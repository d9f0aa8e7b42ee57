// Fresh host memory and the dense casts that fill it.
//
// Outputs come from c10's CPU allocation with 4 KB pages, and freed ones of
// 256 KB up to the cache's cap (64 MB) are kept mapped for the next output
// of their size
// (OutputCache, below). Huge pages
// (madvise(MADV_HUGEPAGE), as NumPy does) were tried and dropped: at 128M
// elements they made the cast 1.8x faster in a tight loop (80-85 ms against
// 145-160 ms), but 5.8x slower after 3 s idle on the CI VM kind (830-930 ms
// against 150-190 ms: the VM hands freed memory back to its host, and fresh
// huge pages are unbacked again); 4 KB pages cost the same either way
// (benchmarks/bench_idle.py).
//
// Policy casts (float64 -> float32, complex128 -> complex64) and plain
// copies run our own loops: in the calling thread up to 128 KB of output
// (skipping ATen's dispatch and TensorIterator set-up, most of the cost
// there), above it in 128 KB pieces on parallel.h's pool, which never makes
// the caller wait for a helper that has not started (torch's OpenMP pool
// does, at its barrier: 4-12 ms per call on a busy machine). Other casts
// are ATen's copy_ over pieces of the same pool, each single-threaded.

#include "internal.h"
#include "parallel.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include <pthread.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace torchbridge::detail {
namespace {

// float64 -> float32, vectorised for the best ISA the CPU has (GCC picks
// the clone at load time): memory-bound at large sizes, but at cache-sized
// ones the SSE2 baseline was 2x slower than ATen's AVX kernels.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void narrow_f64(float* __restrict d, const double* __restrict s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(s[i]);
}


// float64 -> float32 rounding to odd: the nearest float toward zero, with
// its last bit set when the double was not exact. A second rounding to any
// format with at least two fewer significand bits (float16, bfloat16,
// float8) then gives the correctly rounded result of one rounding straight
// from the double, which is what NumPy's casts compute; rounding to nearest
// twice does not (1 + 2^-11 + 2^-40 becomes 1.0 in float16 through a float).
float to_float_odd(double x) {
  float f = static_cast<float>(x);
  const double back = f;
  if (back == x || x != x) return f;  // exact, or NaN
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (std::fabs(back) > std::fabs(x)) bits -= 1;  // rounded away from zero
  bits |= 1;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void narrow_f64_odd(float* __restrict d, const double* __restrict s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = to_float_odd(s[i]);
}

// Casts whose ATen kernel rounds twice (from double through float).
bool rounds_twice_in_aten(at::ScalarType from, at::ScalarType to) {
  if (from == at::kDouble) {
    return to == at::kHalf || to == at::kBFloat16 || at::isFloat8Type(to);
  }
  return from == at::kComplexDouble && to == at::kComplexHalf;
}

// Output bytes per piece of parallel work (~20 us at memory speed).
constexpr int64_t kPieceBytes = int64_t{128} << 10;
// Up to this output size one thread wins: measured float64 -> float32 on
// 2 cores, in one thread / on a second thread too: 32K elements (128 KB
// out) 5.0 / 5.6 us, 48K 6.4 / 5.7 us, 64K 9.1 / 7.2 us.
constexpr int64_t kInlineBytes = int64_t{128} << 10;

// ATen's copy_: threaded on torch's pool when cores are free (see
// parallel_compute), single-threaded in this thread when they are not.
void aten_copy(const at::Tensor& dst, const at::Tensor& src) {
  const int64_t bytes = static_cast<int64_t>(std::max(dst.nbytes(), src.nbytes()));
  if (bytes > kInlineBytes && usable_threads() > 1 && torch_pool_usable()) {
    dst.copy_(src);
    return;
  }
  SerialAten serial;
  dst.copy_(src);
}

}  // namespace

void narrow_f64_run(float* d, const double* s, int64_t n) { narrow_f64(d, s, n); }

// Faults in [p, p + n) as written, without touching the data
// (MADV_POPULATE_WRITE, Linux 5.14+; elsewhere a no-op and the loop's own
// writes fault the pages in). Only whole pages inside the range.
void prefault(void* p, size_t n) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  constexpr uintptr_t kPage = 4096;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(kPage - 1);
  if (e > b) (void)madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)n;
#endif
}

namespace {

// Recently freed outputs of 256 KB up to cap_bytes(), kept mapped for the
// next call of the same size. glibc hands such blocks back to the kernel
// (or reuses heap whose top it trimmed; from 32 MB it always maps fresh
// memory), so every call faulted its pages back in: 60-80 of a 1M-element
// cast, ~150 us, and on a busy machine each fault is a point where the
// scheduler takes the core away (1M float64 -> float32 under contention:
// 1.2-1.35x NumPy's astype, whose 4 MB outputs are huge-page backed,
// against 0 faults and parity with this cache); 16,384 of a 64 MB output,
// 10 ms on two cores, half the time of a 1M x 16 frame or a 64 MB load
// (NumPy's huge pages fault 512x fewer times). Below 256 KB the heap
// keeps its pages. At most kSlots blocks and cap_bytes() in all
// (TORCHBRIDGE_HOST_CACHE_MB, default 64; 0 turns it off); a block waits
// here only until a call of its size or eight later frees evict it, so
// the memory it holds is bounded by the cap whatever the sizes.
class OutputCache final : public c10::Allocator {
 public:
  // Every block starts with this header; the data follows it, 64-byte
  // aligned, so the DataPtr's context is its data (a "simple" DataPtr,
  // which copy-on-write clones require).
  struct alignas(64) Header {
    size_t bytes;
  };
  static constexpr size_t kMin = size_t{256} << 10;
  static constexpr int kSlots = 8;

  c10::DataPtr allocate(size_t n) override {
    void* data = nullptr;
    if (cacheable(n)) {
      std::lock_guard<std::mutex> g(m_);
      for (int i = count_ - 1; i >= 0; --i) {  // most recently freed first
        if (slots_[i].bytes == n) {
          data = slots_[i].data;
          held_ -= n;
          std::copy(slots_ + i + 1, slots_ + count_, slots_ + i);
          --count_;
          break;
        }
      }
    }
    if (!data) {
      Header* h = nullptr;
      try {
        h = static_cast<Header*>(c10::alloc_cpu(sizeof(Header) + n));
      } catch (const c10::Error&) {
        // Out of memory: what this cache holds is free memory to the
        // caller; give it back and try once more (that error propagates).
        if (drain() == 0) throw;
        h = static_cast<Header*>(c10::alloc_cpu(sizeof(Header) + n));
      }
      h->bytes = n;
      data = h + 1;
    }
    return {data, data, &release, c10::Device(c10::kCPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static OutputCache& get() {
    // Never destroyed: tensors may be freed during and after static
    // destruction, and the deleter must still find the cache.
    static auto* cache = new OutputCache();
    return *cache;
  }

  // Fork: a thread holding the lock in the parent must not leave it held in
  // the child (the child's blocks are its own copies and stay usable).
  static void lock_for_fork() { get().m_.lock(); }
  static void unlock_after_fork() { get().m_.unlock(); }

  // Frees every block held; returns how many bytes that gave back.
  size_t drain() {
    void* blocks[kSlots];
    int k = 0;
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> g(m_);
      for (int i = 0; i < count_; ++i) blocks[k++] = slots_[i].data;
      bytes = held_;
      count_ = 0;
      held_ = 0;
    }
    for (int i = 0; i < k; ++i) free_block(blocks[i]);  // outside the lock
    return bytes;
  }

  std::pair<int, size_t> state() {
    std::lock_guard<std::mutex> g(m_);
    return {count_, held_};
  }

 private:
  struct Slot {
    void* data;
    size_t bytes;
  };

  static size_t cap_bytes() {
    static const size_t cap = [] {
      const char* env = std::getenv("TORCHBRIDGE_HOST_CACHE_MB");
      if (!env || !*env) return size_t{64} << 20;
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(env, &end, 10);
      if (*end != '\0' || mb > (size_t{1} << 20)) return size_t{64} << 20;
      return static_cast<size_t>(mb) << 20;
    }();
    return cap;
  }

  static bool cacheable(size_t n) { return n >= kMin && n <= cap_bytes(); }

  static void free_block(void* data) { c10::free_cpu(static_cast<Header*>(data) - 1); }

  static void release(void* data) {
    if (!data) return;
    const size_t n = (static_cast<Header*>(data) - 1)->bytes;
    if (!cacheable(n)) {
      free_block(data);
      return;
    }
    OutputCache& c = get();
    void* evicted[kSlots + 1];
    int k = 0;
    {
      std::lock_guard<std::mutex> g(c.m_);
      // Oldest out until the new block fits the slots and the byte cap.
      while (c.count_ > 0 && (c.count_ == kSlots || c.held_ + n > cap_bytes())) {
        evicted[k++] = c.slots_[0].data;
        c.held_ -= c.slots_[0].bytes;
        std::copy(c.slots_ + 1, c.slots_ + c.count_, c.slots_);
        --c.count_;
      }
      c.slots_[c.count_++] = {data, n};
      c.held_ += n;
    }
    for (int i = 0; i < k; ++i) free_block(evicted[i]);  // outside the lock
  }

  std::mutex m_;
  Slot slots_[kSlots] = {};
  int count_ = 0;
  size_t held_ = 0;
};

const int g_cache_atfork = pthread_atfork(&OutputCache::lock_for_fork,
                                          &OutputCache::unlock_after_fork,
                                          &OutputCache::unlock_after_fork);

}  // namespace

std::pair<int, size_t> host_cache_state() { return OutputCache::get().state(); }

at::Tensor empty_host(at::IntArrayRef sizes, at::IntArrayRef strides,
                      at::ScalarType dtype) {
  return at::detail::empty_strided_generic(sizes, strides, &OutputCache::get(),
                                           c10::DispatchKeySet(c10::DispatchKey::CPU),
                                           dtype);
}

bool cast_dense(void* dst, at::ScalarType dst_type, const void* src,
                at::ScalarType src_type, int64_t numel) {
  // From here up glibc always maps fresh memory (its mmap threshold tops out
  // at 32 MB), so every output page faults: each piece faults its part in
  // with one call, then fills it while it is still in cache (256 page
  // faults taken one by one inside the loop cost ~20% more at 128M
  // elements). Smaller outputs reuse heap memory already faulted in.
  constexpr int64_t kFreshBytes = int64_t{32} << 20;
  const int64_t item = static_cast<int64_t>(c10::elementSize(dst_type));
  const int64_t out_bytes = numel * item;
  const bool fresh = out_bytes >= kFreshBytes;
  if (dst_type == src_type) {
    auto* d = static_cast<char*>(dst);
    auto* s = static_cast<const char*>(src);
    if (out_bytes <= kInlineBytes) {
      std::memcpy(d, s, static_cast<size_t>(out_bytes));
      return true;
    }
    parallel_compute(out_bytes, fresh ? int64_t{1} << 20 : kPieceBytes,
                 [&](int64_t b, int64_t e) {
      if (fresh) prefault(d + b, static_cast<size_t>(e - b));
      std::memcpy(d + b, s + b, static_cast<size_t>(e - b));
    });
    return true;
  }
  // complex128 -> complex64 is float64 -> float32 on twice the numbers.
  const int64_t parts = src_type == at::kDouble && dst_type == at::kFloat ? 1
      : src_type == at::kComplexDouble && dst_type == at::kComplexFloat  ? 2
                                                                         : 0;
  if (parts == 0) return false;
  auto* d = static_cast<float*>(dst);
  auto* s = static_cast<const double*>(src);
  const int64_t n = numel * parts;
  if (out_bytes <= kInlineBytes) {
    narrow_f64(d, s, n);
    return true;
  }
  const int64_t grain = (fresh ? int64_t{1} << 20 : kPieceBytes) / int64_t{sizeof(float)};
  parallel_compute(n, grain, [&](int64_t b, int64_t e) {
    if (fresh) prefault(d + b, static_cast<size_t>(e - b) * sizeof(float));
    narrow_f64(d + b, s + b, e - b);
  });
  return true;
}

bool stack_dense(void* dst, at::ScalarType dst_type,
                 const std::vector<const void*>& srcs, at::ScalarType src_type,
                 int64_t numel) {
  const bool plain = dst_type == src_type;
  const bool policy = (src_type == at::kDouble && dst_type == at::kFloat) ||
                      (src_type == at::kComplexDouble && dst_type == at::kComplexFloat);
  if (!plain && !policy) return false;
  const int64_t out_item = static_cast<int64_t>(c10::elementSize(dst_type));
  const int64_t block = numel * out_item;  // output bytes per source
  const int64_t count = static_cast<int64_t>(srcs.size());
  if (block == 0 || count == 0) return true;
  auto* d = static_cast<char*>(dst);
  // Blocks of 128 KB and more are pieces of their own (cast_dense splits
  // the larger ones itself, inline when nested); smaller ones are grouped.
  const int64_t grain = std::max<int64_t>(1, kPieceBytes / block);
  parallel_compute(count, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      cast_dense(d + i * block, dst_type, srcs[static_cast<size_t>(i)], src_type, numel);
    }
  });
  return true;
}

void copy_into(const at::Tensor& dst, const at::Tensor& src) {
  const bool twice = rounds_twice_in_aten(src.scalar_type(), dst.scalar_type());
  if (src.requires_grad() && at::GradMode::is_enabled()) {
    dst.copy_(src);  // records the graph (the pieces would not)
    if (twice) {
      // Same graph, values rounded once: CopyBackwards saves nothing of dst.
      at::NoGradGuard no_grad;
      copy_into(dst, src.detach());
    }
    return;
  }
  if (twice) {
    const bool complex = src.is_complex();
    at::Tensor s = src.resolve_conj().resolve_neg();
    if (!s.is_non_overlapping_and_dense()) s = s.contiguous();  // exact
    auto mid = empty_host(s.sizes(), s.strides(), complex ? at::kComplexFloat : at::kFloat);
    // Dense with non-negative strides: the data pointer is the lowest address.
    auto* m = static_cast<float*>(mid.data_ptr());
    auto* x = static_cast<const double*>(s.const_data_ptr());
    parallel_compute(s.numel() * (complex ? 2 : 1), kPieceBytes / int64_t{sizeof(float)},
                 [&](int64_t b, int64_t e) { narrow_f64_odd(m + b, x + b, e - b); });
    aten_copy(dst, mid);  // to nearest, from odd: one rounding in effect
    return;
  }
  if (dst.sizes() == src.sizes() && dst.strides() == src.strides() &&
      dst.is_non_overlapping_and_dense() && !src.is_conj() && !src.is_neg() &&
      !src.is_quantized() && !dst.is_quantized() &&
      (src.numel() == 0 ||
       cast_dense(dst.data_ptr(), dst.scalar_type(), src.const_data_ptr(),
                  src.scalar_type(), src.numel()))) {
    return;
  }
  aten_copy(dst, src);
}

}  // namespace torchbridge::detail
