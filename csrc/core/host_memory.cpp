// Fresh host memory and the dense casts that fill it.
//
// Outputs come from torch's own CPU allocator with 4 KB pages. Huge pages
// (madvise(MADV_HUGEPAGE), as NumPy does) were tried and dropped: at 128M
// elements they made the cast 1.8x faster in a tight loop (80-85 ms against
// 145-160 ms), but 5.8x slower after 3 s idle on the CI VM kind (830-930 ms
// against 150-190 ms: the VM hands freed memory back to its host, and fresh
// huge pages are unbacked again); 4 KB pages cost the same either way
// (benchmarks/bench_idle.py).
//
// Policy casts (float64 -> float32, complex128 -> complex64) run our own
// vectorised loop: in the calling thread up to 128 KB of output (skipping
// ATen's dispatch and TensorIterator set-up, most of the cost there), up to
// 1 MB on torch's thread pool through TensorIterator::for_each, from 32 MB
// (always fresh memory) on the pool again, prefaulting the output a block
// at a time; in between they are ATen's copy_ (memory-bound there). (ATen's
// parallel_for is an inline OpenMP template: in a module built without
// -fopenmp it runs serially, and -fopenmp could load a second OpenMP runtime
// beside torch's.) Plain copies are a memcpy up to 128 KB, else ATen's
// threaded copy_.

#include "internal.h"

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>

#include <algorithm>
#include <cstring>
#include <limits>

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

// narrow_f64 over torch's intra-op thread pool. TensorIterator::for_each
// is compiled inside libtorch, so the chunks run on torch's own OpenMP
// workers (honouring torch.set_num_threads, serial inside a parallel
// region) without this library bringing an OpenMP runtime of its own.
// Against ATen's copy_ (same pool, same chunks) it skips the dtype dispatch
// and runs the AVX-512 loop: faster while the data sits in the cores' L2.
// `fresh`: the output was just allocated and may not be faulted in yet.
void narrow_f64_parallel(float* d, const double* s, int64_t n, bool fresh) {
  auto out = at::from_blob(d, {n}, at::TensorOptions().dtype(at::kFloat));
  auto in = at::from_blob(const_cast<double*>(s), {n},
                          at::TensorOptions().dtype(at::kDouble));
  auto iter = at::TensorIteratorConfig()
                  .add_output(out)
                  .add_const_input(in)
                  .check_all_same_dtype(false)
                  .resize_outputs(false)
                  .build();
  // Fresh memory: each worker faults its next 1 MB of output in with one
  // call, then fills it while it is still in cache. 256 page faults taken
  // one by one inside the loop cost ~20% more (128M elements: 114-121 ms
  // against 140-146 ms for torch.as_tensor's cast into the same memory).
  constexpr int64_t kBlock = int64_t{1} << 18;  // elements = 1 MB of output
  const int64_t block = fresh ? kBlock : std::numeric_limits<int64_t>::max();
  iter.for_each([block, fresh](char** data, const int64_t* strides, int64_t size0,
                               int64_t size1) {
    // Two contiguous 1-d operands: the inner strides are the item sizes.
    TORCH_INTERNAL_ASSERT(strides[0] == sizeof(float) && strides[1] == sizeof(double));
    for (int64_t j = 0; j < size1; ++j) {
      auto* o = reinterpret_cast<float*>(data[0] + j * strides[2]);
      auto* i = reinterpret_cast<const double*>(data[1] + j * strides[3]);
      for (int64_t k = 0; k < size0; k += block) {
        const int64_t m = std::min(block, size0 - k);
        if (fresh) prefault(o + k, static_cast<size_t>(m) * sizeof(float));
        narrow_f64(o + k, i + k, m);
      }
    }
  });
}

}  // namespace

at::Tensor empty_host(at::IntArrayRef sizes, at::IntArrayRef strides,
                      at::ScalarType dtype) {
  return at::empty_strided(sizes, strides, at::TensorOptions().dtype(dtype));
}

bool cast_dense(void* dst, at::ScalarType dst_type, const void* src,
                at::ScalarType src_type, int64_t numel) {
  // Up to this output size one thread wins: measured float64 -> float32 on
  // 2 cores, in one thread / through torch's pool: 32K elements (128 KB out)
  // 5.0 / 5.6 us, 48K 6.4 / 5.7 us, 64K 9.1 / 7.2 us.
  constexpr int64_t kInlineBytes = int64_t{128} << 10;
  // Up to this output size our loop on torch's pool beats ATen's copy_ on
  // the same pool (64K elements: 0.83-0.89 of the best peer against
  // 0.91-0.92; 256K: 0.94-0.99 against 0.95-0.97). Beyond it, into heap
  // memory already faulted in, the cast is bound by memory bandwidth and
  // ATen's kernel measured as fast or faster (512K-4M elements: ties).
  constexpr int64_t kPoolBytes = int64_t{1} << 20;
  // From here up glibc always maps fresh memory (its mmap threshold tops out
  // at 32 MB), so every output page faults: our pool loop prefaults each
  // block in one call (see narrow_f64_parallel). In between, outputs reuse
  // heap memory already faulted in, and ATen's copy_ is as fast as ours.
  constexpr int64_t kFreshBytes = int64_t{32} << 20;
  const int64_t out_bytes = numel * static_cast<int64_t>(c10::elementSize(dst_type));
  if (dst_type == src_type) {
    if (out_bytes > kInlineBytes) return false;  // ATen's threaded memcpy
    std::memcpy(dst, src, out_bytes);
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
  } else if (out_bytes <= kPoolBytes) {
    narrow_f64_parallel(d, s, n, /*fresh=*/false);
  } else if (out_bytes >= kFreshBytes) {
    narrow_f64_parallel(d, s, n, /*fresh=*/true);
  } else {
    return false;
  }
  return true;
}

}  // namespace torchbridge::detail
