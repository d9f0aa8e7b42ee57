// SparseView -> torch sparse tensor (include/torchbridge/sparse.h): what is
// validated, shared, copied and canonicalised; and densify, the size check
// before a sparse tensor becomes dense.

#include "sparse.h"

#include "../format/dtypes.h"
#include "../format/util.h"
#include "internal.h"
#include "parallel.h"

#include <ATen/ATen.h>
#include <ATen/ops/_sparse_coo_tensor_unsafe.h>
#include <ATen/ops/_sparse_csc_tensor_unsafe.h>
#include <ATen/ops/_sparse_csr_tensor_unsafe.h>
#include <c10/util/Exception.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace torchbridge {
namespace {

constexpr const char* kMalformed =
    "; the matrix is malformed (SciPy's m.check_format() names the fault): "
    "rebuild it from consistent arrays.";
constexpr const char* kCopyFix = "; pass copy=None to let torchbridge copy it.";

// Entries per piece of the parallel passes: large enough that a piece
// outweighs claiming it, small enough that two cores share the work.
constexpr int64_t kGrain = int64_t{1} << 16;

const char* format_name(at::Layout l) {
  switch (l) {
    case at::kSparseCsr: return "CSR";
    case at::kSparseCsc: return "CSC";
    default: return "COO";
  }
}

std::string type_name(const ArrayView& v) {
  if (v.dtype.scalar) return dtype_name(*v.dtype.scalar);
  return v.dtype.name ? v.dtype.name : "an unknown type";
}

// A 1-D buffer torch can take as it is: contiguous, native, aligned.
bool plain(const ArrayView& v) {
  if (v.shape.size() != 1) return false;
  const int64_t n = v.shape[0];
  if (n == 0) return true;
  if (v.dtype.swapped && v.dtype.itemsize > 1) return false;
  if (n > 1 && v.strides[0] != v.dtype.itemsize) return false;
  return reinterpret_cast<uintptr_t>(v.data) % static_cast<uintptr_t>(v.dtype.itemsize) == 0;
}

// Why a 1-D buffer cannot be shared as `target` (empty: it can).
std::string buffer_blocker(const ArrayView& v, at::ScalarType target,
                           const CoerceOptions& o) {
  const ShareBlocker why = share_blocker(v, target, o);
  if (why != ShareBlocker::kNone) return share_blocker_reason(why, v, target, o);
  if (!plain(v))
    return "it is strided (a step of " + std::to_string(v.strides[0]) +
           " bytes between " + std::to_string(v.dtype.itemsize) +
           "-byte items), and torch's sparse tensors hold contiguous buffers";
  return "";
}

bool no_copy(const CoerceOptions& o) { return o.copy.has_value() && !*o.copy; }

bool to_device(const CoerceOptions& o) {
  return o.device.has_value() && !o.device->is_cpu();
}

// The options the host-side build runs under: no device, no pinning.
CoerceOptions on_host(const CoerceOptions& o) {
  CoerceOptions h = o;
  h.device.reset();
  h.pin_memory = false;
  return h;
}

// copy=False with a device or pin_memory: the result is a copy.
void refuse_move(const CoerceOptions& o, const char* api, const char* fmt) {
  if (!no_copy(o)) return;
  TORCH_CHECK_VALUE(!to_device(o), api, "(copy=False): the ", fmt, " matrix's buffers "
      "cannot be shared because the result goes to ", o.device->str(), kCopyFix);
  TORCH_CHECK_VALUE(!o.pin_memory, api, "(copy=False): the ", fmt, " matrix's buffers "
      "cannot be shared because pin_memory=True needs a copy in page-locked memory",
      kCopyFix);
}

void check_host(const ArrayView& v, const char* api, const char* fmt, const char* name) {
  TORCH_CHECK_VALUE(v.device.is_cpu(), api, ": the ", fmt, " matrix's ", name,
      " is on ", v.device.str(), "; sparse matrices convert from host memory. "
      "Copy it to the host first.");
}

void check_1d(const ArrayView& v, const char* api, const char* fmt, const char* name) {
  TORCH_CHECK_VALUE(v.shape.size() == 1, api, ": the ", fmt, " matrix's ", name,
      " has shape ", format::tuple_str(v.shape), ", but it must be 1-D", kMalformed);
  check_host(v, api, fmt, name);
}

void check_index_type(const ArrayView& v, const char* api, const char* fmt,
                      const char* name) {
  TORCH_CHECK_TYPE(v.dtype.scalar && c10::isIntegralType(*v.dtype.scalar, false), api,
      ": the ", fmt, " matrix's ", name, " are ", type_name(v),
      ", but indices must be integers; rebuild the matrix with integer "
      "(int32 or int64) indices.");
}

// An index buffer as the passes read it: int32 or int64, contiguous and
// native. Anything else (other integer types, strides, swapped bytes) is
// first copied to int64, which `hold` keeps.
struct Source {
  const void* data = nullptr;
  at::ScalarType type = at::kLong;
  at::Tensor hold;
};

Source readable(const ArrayView& v) {
  const auto st = *v.dtype.scalar;
  if ((st == at::kInt || st == at::kLong) && plain(v)) return {v.data, st, {}};
  Source s;
  s.hold = detail::copy_view(v, at::kLong, false);
  s.data = s.hold.const_data_ptr();
  s.type = at::kLong;
  return s;
}

// Calls fn(T*) with the pointer typed by `type` (int32 or int64).
template <class P, class F>
decltype(auto) with_index(P* p, at::ScalarType type, F&& fn) {
  using I32 = std::conditional_t<std::is_const_v<P>, const int32_t, int32_t>;
  using I64 = std::conditional_t<std::is_const_v<P>, const int64_t, int64_t>;
  if (type == at::kInt) return fn(static_cast<I32*>(p));
  return fn(static_cast<I64*>(p));
}

// The smaller of `pos` and what `best` holds, kept in `best`.
void keep_min(std::atomic<int64_t>& best, int64_t pos) {
  int64_t cur = best.load(std::memory_order_relaxed);
  while (pos < cur && !best.compare_exchange_weak(cur, pos, std::memory_order_relaxed)) {
  }
}

constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

int64_t read_at(const void* p, at::ScalarType t, int64_t i) {
  return with_index(p, t, [&](auto* q) { return static_cast<int64_t>(q[i]); });
}

// ---------------------------------------------------------------------------
// CSR / CSC

// Entries per block of the flat pass: a block stays in L2 between the copy
// and the scan of it.
constexpr int64_t kBlock = int64_t{1} << 14;

// Over d[b0, b1) (at most kBlock entries): the smallest and largest value
// and the number of descents d[k] <= d[k-1] (k > first). Written so that
// the compiler vectorises it (no loop-carried value but the reductions):
// the pass is memory-bound, as NumPy's max is.
template <class T>
void scan_block(const T* d, int64_t b0, int64_t b1, int64_t first, int64_t& lo, int64_t& hi,
                int64_t& descents) {
  T l = d[b0], h = d[b0];
  T count = 0;  // < kBlock: fits every index type
  const int64_t k0 = std::max(b0, first + 1);
  for (int64_t k = b0; k < b1; ++k) {
    const T x = d[k];
    l = x < l ? x : l;
    h = x > h ? x : h;
  }
  for (int64_t k = k0; k < b1; ++k) count += static_cast<T>(d[k] <= d[k - 1]);
  if (hi < lo) {  // the first block
    lo = l;
    hi = h;
  } else {
    lo = std::min<int64_t>(lo, l);
    hi = std::max<int64_t>(hi, h);
  }
  descents += static_cast<int64_t>(count);
}

struct Compressed {
  at::Tensor ptr, idx;  // final index tensors (idx: nnz entries)
  int64_t nnz = 0;
  bool canonical = true;
};

// Sums duplicates in `dst` (fresh, zeroed) at `dest[k]` from `src[k]`, in
// the values' own type (as SciPy's sum_duplicates does).
void scatter_add(const at::Tensor& dst, const at::Tensor& src, const int64_t* dest) {
  const int64_t n = src.numel();
  switch (src.scalar_type()) {
#define TORCHBRIDGE_SUM(Id, name, kind, size, Torch, Npy)                          \
  case at::ScalarType::Torch: {                                                    \
    using T = c10::impl::ScalarTypeToCPPTypeT<at::ScalarType::Torch>;              \
    const T* s = src.const_data_ptr<T>();                                          \
    T* d = dst.mutable_data_ptr<T>();                                              \
    for (int64_t k = 0; k < n; ++k) d[dest[k]] = static_cast<T>(d[dest[k]] + s[k]); \
    return;                                                                        \
  }
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_SUM)
#undef TORCHBRIDGE_SUM
    default: {
      // Types NumPy lacks (C++ callers' bfloat16, ...): torch's own kernel.
      auto index = at::from_blob(const_cast<int64_t*>(dest), {n}, at::kLong);
      dst.index_add_(0, index, src);
    }
  }
}

// A canonical copy (indices sorted and unique within each major slice,
// duplicates summed) of a validated compressed matrix; values in their own
// type. Returns {ptr, idx, values}.
std::tuple<at::Tensor, at::Tensor, at::Tensor> canonicalise(
    const Compressed& c, const at::Tensor& values, int64_t major, int64_t minor,
    const char* api) {
  const auto it = c.ptr.scalar_type();
  const int64_t nnz = c.nnz;
  // Where each entry lands, first as a rank within its slice's unique
  // indices, then (after the prefix sum) as a position in the output.
  std::vector<int64_t> dest(static_cast<size_t>(nnz));
  std::vector<int64_t> unique(static_cast<size_t>(major) + 1, 0);
  std::vector<int64_t> sorted_idx(static_cast<size_t>(nnz));
  std::atomic<bool> changed{false};
  const int64_t grain = std::max<int64_t>(1, major * kGrain / std::max<int64_t>(nnz, 1));
  detail::parallel_compute(major, grain, [&](int64_t r0, int64_t r1) {
    std::vector<std::pair<int64_t, int64_t>> row;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t a = read_at(c.ptr.const_data_ptr(), it, r);
      const int64_t b = read_at(c.ptr.const_data_ptr(), it, r + 1);
      if (!(0 <= a && a <= b && b <= nnz)) {
        changed.store(true, std::memory_order_relaxed);
        continue;
      }
      row.clear();
      // Each index read once: the sort sees what was range-checked.
      for (int64_t k = a; k < b; ++k) {
        const int64_t x = read_at(c.idx.const_data_ptr(), it, k);
        if (x < 0 || x >= minor) changed.store(true, std::memory_order_relaxed);
        row.emplace_back(x, k);
      }
      std::sort(row.begin(), row.end());
      int64_t u = -1;
      for (size_t j = 0; j < row.size(); ++j) {
        if (j == 0 || row[j].first != row[j - 1].first) {
          ++u;
          sorted_idx[static_cast<size_t>(a + u)] = row[j].first;
        }
        dest[static_cast<size_t>(row[j].second)] = u;
      }
      unique[static_cast<size_t>(r) + 1] = u + 1;
    }
  });
  // Only another thread writing to the shared buffers meanwhile gets here.
  TORCH_CHECK_VALUE(!changed.load(), api,
      ": the matrix's indptr or indices changed while being converted (another "
      "thread wrote to them); convert it when no other thread writes to it.");
  for (int64_t r = 0; r < major; ++r)
    unique[static_cast<size_t>(r) + 1] += unique[static_cast<size_t>(r)];
  const int64_t out_nnz = unique[static_cast<size_t>(major)];
  auto ptr = at::empty({major + 1}, at::TensorOptions().dtype(it));
  auto idx = at::empty({out_nnz}, at::TensorOptions().dtype(it));
  with_index(ptr.mutable_data_ptr(), it, [&](auto* p) {
    for (int64_t r = 0; r <= major; ++r)
      p[r] = static_cast<std::remove_pointer_t<decltype(p)>>(unique[static_cast<size_t>(r)]);
  });
  detail::parallel_compute(major, grain, [&](int64_t r0, int64_t r1) {
    with_index(idx.mutable_data_ptr(), it, [&](auto* out) {
      using T = std::remove_pointer_t<decltype(out)>;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t a = read_at(c.ptr.const_data_ptr(), it, r);
        const int64_t b = read_at(c.ptr.const_data_ptr(), it, r + 1);
        const int64_t base = unique[static_cast<size_t>(r)];
        const int64_t n = unique[static_cast<size_t>(r) + 1] - base;
        for (int64_t j = 0; j < n; ++j)
          out[base + j] = static_cast<T>(sorted_idx[static_cast<size_t>(a + j)]);
        for (int64_t k = a; k < b; ++k) dest[static_cast<size_t>(k)] += base;
      }
    });
  });
  auto vals = at::zeros({out_nnz}, values.options());
  scatter_add(vals, values.narrow(0, 0, nnz).contiguous(), dest.data());
  return {ptr, idx, vals};
}

// Checks a compressed matrix's indices in one parallel pass over the major
// slices, copying `src` into `out` (when defined) as it reads it: every
// index in [0, minor), each slice's bounds (read once, from the final
// indptr) monotone and within [0, nnz], the slices covering [0, nnz)
// exactly; `canonical` tells whether every slice is sorted and unique.
void check_indices(const at::Tensor& ptr, const Source& src, const at::Tensor& out,
                   int64_t major, int64_t minor, int64_t nnz, bool& canonical,
                   const char* api, const char* fmt) {
  const auto pt = ptr.scalar_type();
  const int64_t grain = std::max<int64_t>(1, major * kGrain / std::max<int64_t>(nnz, 1));
  // Each piece reads its bounds once; consecutive pieces must agree. (Piece
  // boundaries are parallel_compute's: not multiples of the grain.)
  struct Piece {
    int64_t r0, r1, first, last;
  };
  std::vector<Piece> pieces;
  std::mutex pieces_mutex;
  std::atomic<int64_t> bad_slice{kNone}, bad_index{kNone};
  std::atomic<bool> unsorted{false};
  detail::parallel_compute(major, grain, [&](int64_t r0, int64_t r1) {
    with_index(ptr.const_data_ptr(), pt, [&](auto* p) {
      with_index(src.data, src.type, [&](auto* in) {
        auto run = [&](auto o) {
          using In = std::remove_const_t<std::remove_pointer_t<decltype(in)>>;
          constexpr bool copying = !std::is_same_v<decltype(o), std::nullptr_t>;
          // Bounds read once each; neighbours' must agree (checked after).
          const int64_t first = static_cast<int64_t>(p[r0]);
          const int64_t last = static_cast<int64_t>(p[r1]);
          if (!(0 <= first && first <= last && last <= nnz)) {
            keep_min(bad_slice, r0);
            return;
          }
          // One flat pass over the piece's entries, block by block: copy
          // (when copying), then range and the descents x[k] <= x[k-1] of
          // what the tensor will hold. Sorted and unique rows have descents
          // only where a row starts (counted below).
          int64_t lo = 0, hi = -1, descents = 0;
          if (first < last) {
            if constexpr (copying) {
              using Out = std::remove_pointer_t<decltype(o)>;
              for (int64_t b0 = first; b0 < last; b0 += kBlock) {
                const int64_t b1 = std::min(last, b0 + kBlock);
                for (int64_t k = b0; k < b1; ++k) o[k] = static_cast<Out>(in[k]);
                scan_block<Out>(o, b0, b1, first, lo, hi, descents);
              }
            } else {
              for (int64_t b0 = first; b0 < last; b0 += kBlock)
                scan_block<In>(in, b0, std::min(last, b0 + kBlock), first, lo, hi, descents);
            }
          }
          // What was checked is what the tensor holds: the copy when copying.
          auto at = [&](int64_t k) -> int64_t {
            if constexpr (copying) return static_cast<int64_t>(o[k]);
            return static_cast<int64_t>(in[k]);
          };
          int64_t a = first, starts = 0;
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r + 1 == r1 ? last : static_cast<int64_t>(p[r + 1]);
            if (!(a <= b && b <= last)) {
              keep_min(bad_slice, r);
              return;
            }
            if (a > first && a < b) starts += at(a) <= at(a - 1);
            a = b;
          }
          if (first < last && (lo < 0 || hi >= minor)) {
            for (int64_t k = first; k < last; ++k) {
              const int64_t x = at(k);
              if (x < 0 || x >= minor) {
                keep_min(bad_index, k);
                break;
              }
            }
          }
          if (descents != starts) unsorted.store(true, std::memory_order_relaxed);
          std::lock_guard<std::mutex> lock(pieces_mutex);
          pieces.push_back({r0, r1, first, last});
        };
        if (!out.defined()) return run(nullptr);
        with_index(out.mutable_data_ptr(), out.scalar_type(), run);
      });
    });
  });
  const char* minors = std::strcmp(fmt, "CSR") == 0 ? "columns" : "rows";
  if (bad_slice.load() != kNone) {
    // Name the first decrease as the buffer holds it now, if there is one
    // (the more telling fault), else the first bound beyond nnz.
    int64_t r = bad_slice.load();
    for (int64_t i = 0; i < major; ++i) {
      if (read_at(ptr.const_data_ptr(), pt, i + 1) < read_at(ptr.const_data_ptr(), pt, i)) {
        r = i;
        break;
      }
    }
    int64_t a = read_at(ptr.const_data_ptr(), pt, r);
    int64_t b = read_at(ptr.const_data_ptr(), pt, r + 1);
    if (a <= b) {
      for (int64_t i = 0; i <= major; ++i) {
        const int64_t x = read_at(ptr.const_data_ptr(), pt, i);
        if (x < 0 || x > nnz) {
          r = i - 1;  // reported as indptr[r + 1]
          b = x;
          break;
        }
      }
    }
    TORCH_CHECK_VALUE(a <= b, api, ": the ", fmt, " matrix's indptr decreases: indptr[",
        std::to_string(r), "] = ", std::to_string(a), " > indptr[", std::to_string(r + 1),
        "] = ", std::to_string(b), " (indptr must never decrease)", kMalformed);
    TORCH_CHECK_VALUE(false, api, ": the ", fmt, " matrix's indptr[", std::to_string(r + 1),
        "] = ", std::to_string(b), " lies outside [0, ", std::to_string(nnz),
        "] (indptr[-1], the number of stored entries)", kMalformed);
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& x, const Piece& y) { return x.r0 < y.r0; });
  bool covered = major == 0 || (!pieces.empty() && pieces.front().r0 == 0 &&
                                pieces.front().first == 0 && pieces.back().r1 == major &&
                                pieces.back().last == nnz);
  for (size_t i = 1; i < pieces.size(); ++i)
    covered &= pieces[i - 1].r1 == pieces[i].r0 && pieces[i - 1].last == pieces[i].first;
  TORCH_CHECK_VALUE(covered, api, ": the ", fmt, " matrix's indptr changed while being "
      "converted (another thread wrote to it); convert it when no other thread writes to it.");
  if (bad_index.load() != kNone) {
    const int64_t k = bad_index.load();
    const int64_t x = out.defined() ? read_at(out.const_data_ptr(), out.scalar_type(), k)
                                    : read_at(src.data, src.type, k);
    TORCH_CHECK_VALUE(false, api, ": the ", fmt, " matrix's indices[", std::to_string(k),
        "] = ", std::to_string(x), " is out of range for its ", std::to_string(minor), " ",
        minors, " (each index must be in [0, ", std::to_string(minor), "))", kMalformed);
  }
  canonical = !unsorted.load();
}

at::Tensor compressed_to_tensor(SparseView& v, const CoerceOptions& o, const char* api) {
  const char* fmt = format_name(v.layout);
  TORCH_CHECK_VALUE(v.shape.size() == 2, api, ": a ", fmt, " matrix is 2-D, but the view "
      "has shape ", format::tuple_str(v.shape), "; convert other ranks as COO.");
  TORCH_CHECK_VALUE(v.indices.size() == 2, api, ": a ", fmt, " view needs two index "
      "buffers (indptr, indices), got ", std::to_string(v.indices.size()), ".");
  ArrayView& indptr = v.indices[0];
  ArrayView& indices = v.indices[1];
  ArrayView& values = v.values;
  check_1d(indptr, api, fmt, "indptr");
  check_1d(indices, api, fmt, "indices");
  check_1d(values, api, fmt, "data");
  check_index_type(indptr, api, fmt, "indptr");
  check_index_type(indices, api, fmt, "indices");
  const bool csr = v.layout == at::kSparseCsr;
  const int64_t major = csr ? v.shape[0] : v.shape[1];
  const int64_t minor = csr ? v.shape[1] : v.shape[0];
  const char* majors = csr ? "rows" : "columns";
  TORCH_CHECK_VALUE(v.shape[0] >= 0 && v.shape[1] >= 0, api, ": the ", fmt,
      " matrix has shape ", format::tuple_str(v.shape), kMalformed);
  TORCH_CHECK_VALUE(indptr.shape[0] == major + 1, api, ": the ", fmt, " matrix's indptr has ",
      std::to_string(indptr.shape[0]), " entries, but its ", std::to_string(major), " ",
      majors, " need ", std::to_string(major + 1), kMalformed);
  TORCH_CHECK_VALUE(indices.shape[0] == values.shape[0], api, ": the ", fmt,
      " matrix has ", std::to_string(indices.shape[0]), " indices but ",
      std::to_string(values.shape[0]), " values (data); they must be as many", kMalformed);

  // Index dtype: both int32 stay int32; otherwise int64 (torch wants one
  // dtype for both, int32 or int64).
  const auto idx_type = indptr.dtype.scalar == at::kInt && indices.dtype.scalar == at::kInt
                            ? at::kInt : at::kLong;
  const auto target = detail::target_dtype(values, o, api);
  const bool force = o.copy.value_or(false);
  refuse_move(o, api, fmt);
  // Built on the host, then moved as a whole: the device and pin_memory
  // (refused above for copy=False) do not decide what is shared here.
  const CoerceOptions host = on_host(o);
  const std::string ptr_why = buffer_blocker(indptr, idx_type, host);
  const std::string idx_why = buffer_blocker(indices, idx_type, host);
  const std::string val_why = buffer_blocker(values, target, host);
  if (no_copy(o)) {
    auto refuse = [&](const std::string& why, const char* name, const ArrayView& b,
                      bool index) {
      if (why.empty()) return;
      // An index dtype change is torch's rule, not the float policy.
      const bool retyped = index && share_blocker(b, idx_type, host) == ShareBlocker::kDtype;
      TORCH_CHECK_VALUE(false, api, "(copy=False): the ", fmt, " matrix's ", name,
          " cannot be shared because ",
          retyped ? "its dtype " + type_name(b) + " becomes " + dtype_name(idx_type) +
                        " (torch's " + fmt + " holds both index arrays in one dtype, "
                        "int32 or int64)"
                  : why,
          kCopyFix);
    };
    refuse(ptr_why, "indptr", indptr, true);
    refuse(idx_why, "indices", indices, true);
    refuse(val_why, "data", values, false);
  }
  const bool share_ptr = ptr_why.empty() && !force;
  const bool share_idx = idx_why.empty() && !force;

  // indptr: its final buffer first (shared, or a copy taken now), so the
  // pass over the indices reads the bounds the tensor will hold.
  at::Tensor ptr = share_ptr ? detail::borrow(indptr) : detail::copy_view(indptr, idx_type, false);
  const int64_t limit = indices.shape[0];
  const int64_t start = read_at(ptr.const_data_ptr(), idx_type, 0);
  TORCH_CHECK_VALUE(start == 0, api, ": the ", fmt, " matrix's indptr starts at ",
      std::to_string(start), ", but indptr[0] must be 0", kMalformed);
  const int64_t nnz = read_at(ptr.const_data_ptr(), idx_type, major);
  TORCH_CHECK_VALUE(nnz >= 0 && nnz <= limit, api, ": the ", fmt, " matrix's indptr ends at ",
      std::to_string(nnz), " (indptr[-1], the number of stored entries), but only ",
      std::to_string(limit), " indices are stored", kMalformed);

  Source src = readable(indices);
  at::Tensor idx_out;  // a fresh copy the pass fills, unless shared
  if (!share_idx) {
    if (src.hold.defined() && idx_type == at::kLong) {
      idx_out = src.hold.narrow(0, 0, nnz);  // already a private int64 copy
    } else {
      idx_out = at::empty({nnz}, at::TensorOptions().dtype(idx_type));
    }
  }
  bool canonical = true;
  check_indices(ptr, src, idx_out.defined() && idx_out.data_ptr() != src.data ? idx_out
                                                                              : at::Tensor(),
                major, minor, nnz, canonical, api, fmt);
  TORCH_CHECK_VALUE(canonical || !no_copy(o), api, "(copy=False): the ", fmt,
      " matrix is not in canonical form (within a ", csr ? "row" : "column",
      " its indices are unsorted or repeat; torch's ", fmt, " requires them sorted and "
      "unique), so it must be canonicalised in a copy; call m.sum_duplicates() (which "
      "also sorts, in place) first", kCopyFix);

  at::Tensor out_ptr, out_idx, out_val;
  if (canonical) {
    out_ptr = share_ptr ? detail::to_tensor(indptr, [&] {
      CoerceOptions io;
      io.dtype = idx_type;
      io.copy = false;  // decided above: it shares
      return io;
    }(), api) : ptr;
    out_idx = share_idx ? detail::to_tensor(indices, [&] {
      CoerceOptions io;
      io.dtype = idx_type;
      io.copy = false;
      return io;
    }(), api).narrow(0, 0, nnz) : idx_out;
    values.shape[0] = nnz;  // SciPy may keep spare capacity past indptr[-1]
    CoerceOptions vo;
    vo.dtype = target;
    vo.copy = val_why.empty() ? o.copy : std::optional<bool>(true);
    out_val = detail::to_tensor(values, vo, api);
  } else {
    values.shape[0] = nnz;
    Compressed c{ptr, idx_out.defined() ? idx_out : detail::borrow(indices), nnz, false};
    // Borrowed (valid during this call, while the view holds the buffer).
    auto vals_src = plain(values) ? detail::borrow(values)
                                  : detail::copy_view(values, *values.dtype.scalar, false);
    auto [p, i, vals] = canonicalise(c, vals_src, major, minor, api);
    out_ptr = p;
    out_idx = i;
    out_val = vals.scalar_type() == target ? vals : detail::fresh_copy(vals, target, false);
  }
  const auto opts = at::TensorOptions().dtype(out_val.scalar_type());
  const std::vector<int64_t> size{v.shape[0], v.shape[1]};
  return csr ? at::_sparse_csr_tensor_unsafe(out_ptr, out_idx, out_val, size, opts)
             : at::_sparse_csc_tensor_unsafe(out_ptr, out_idx, out_val, size, opts);
}

// ---------------------------------------------------------------------------
// COO

at::Tensor coo_to_tensor(SparseView& v, const CoerceOptions& o, const char* api) {
  const int64_t nd = static_cast<int64_t>(v.shape.size());
  TORCH_CHECK_VALUE(nd >= 1, api, ": a COO matrix needs at least one dimension.");
  TORCH_CHECK_VALUE(static_cast<int64_t>(v.indices.size()) == nd, api, ": the COO matrix "
      "has shape ", format::tuple_str(v.shape), " but ", std::to_string(v.indices.size()),
      " index arrays; it needs one per dimension", kMalformed);
  check_1d(v.values, api, "COO", "data");
  const int64_t nnz = v.values.shape[0];
  auto name = [&](int64_t d) {
    if (nd == 2) return std::string(d == 0 ? "row" : "col");
    return "coords[" + std::to_string(d) + "]";
  };
  for (int64_t d = 0; d < nd; ++d) {
    const std::string n = name(d);
    check_1d(v.indices[d], api, "COO", n.c_str());
    check_index_type(v.indices[d], api, "COO", n.c_str());
    TORCH_CHECK_VALUE(v.shape[d] >= 0, api, ": the COO matrix has shape ",
        format::tuple_str(v.shape), kMalformed);
    TORCH_CHECK_VALUE(v.indices[d].shape[0] == nnz, api, ": the COO matrix's ", n, " has ",
        std::to_string(v.indices[d].shape[0]), " entries but data has ", std::to_string(nnz),
        "; they must be as many", kMalformed);
  }
  const auto target = detail::target_dtype(v.values, o, api);
  refuse_move(o, api, "COO");
  const std::string val_why = buffer_blocker(v.values, target, on_host(o));
  if (no_copy(o)) {
    TORCH_CHECK_VALUE(nnz == 0, api, "(copy=False): the COO matrix's indices cannot be "
        "shared because torch's sparse_coo holds them as one (ndim, nnz) int64 tensor "
        "and SciPy keeps one array per dimension, so they are copied (once); pass "
        "copy=None, or convert a CSR/CSC matrix (m.tocsr()), whose buffers are shared.");
    TORCH_CHECK_VALUE(val_why.empty(), api, "(copy=False): the COO matrix's data cannot be "
        "shared because ", val_why, kCopyFix);
  }
  // One pass: each index read once, range-checked and written into the
  // (ndim, nnz) int64 tensor; the order check then reads only that copy.
  auto idx = at::empty({nd, nnz}, at::TensorOptions().dtype(at::kLong));
  int64_t* out = idx.mutable_data_ptr<int64_t>();
  std::vector<Source> srcs;
  for (int64_t d = 0; d < nd; ++d) srcs.push_back(readable(v.indices[d]));
  std::vector<std::atomic<int64_t>> bad(static_cast<size_t>(nd));
  for (auto& b : bad) b.store(kNone);
  detail::parallel_compute(nnz, kGrain, [&](int64_t k0, int64_t k1) {
    for (int64_t d = 0; d < nd; ++d) {
      const int64_t extent = v.shape[d];
      int64_t* o = out + d * nnz;
      with_index(srcs[d].data, srcs[d].type, [&](auto* in) {
        for (int64_t k = k0; k < k1; ++k) {
          const int64_t x = static_cast<int64_t>(in[k]);
          o[k] = x;
          if (x < 0 || x >= extent) keep_min(bad[static_cast<size_t>(d)], k);
        }
      });
    }
  });
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t k = bad[static_cast<size_t>(d)].load();
    if (k == kNone) continue;
    TORCH_CHECK_VALUE(false, api, ": the COO matrix's ", name(d), "[", std::to_string(k),
        "] = ", std::to_string(out[d * nnz + k]), " is out of range for dimension ",
        std::to_string(d), " of extent ", std::to_string(v.shape[d]), " (each index must be in "
        "[0, ", std::to_string(v.shape[d]), "))", kMalformed);
  }
  // Coalesced: entries in strictly increasing lexicographic order (sorted
  // and unique), torch's meaning of the flag.
  std::atomic<bool> coalesced{true};
  detail::parallel_compute(nnz, kGrain, [&](int64_t k0, int64_t k1) {
    for (int64_t k = std::max<int64_t>(k0, 1); k < k1; ++k) {
      int cmp = 0;
      for (int64_t d = 0; d < nd && cmp == 0; ++d) {
        const int64_t a = out[d * nnz + k - 1], b = out[d * nnz + k];
        cmp = a < b ? -1 : (a > b ? 1 : 0);
      }
      if (cmp >= 0) {
        coalesced.store(false, std::memory_order_relaxed);
        return;
      }
    }
  });
  CoerceOptions vo;
  vo.dtype = target;
  vo.copy = val_why.empty() ? o.copy : std::optional<bool>(true);
  auto vals = detail::to_tensor(v.values, vo, api);
  return at::_sparse_coo_tensor_unsafe(idx, vals, std::vector<int64_t>(v.shape.begin(),
      v.shape.end()), at::TensorOptions().dtype(vals.scalar_type()), coalesced.load());
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"bytes", "KB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  uint64_t whole = n, tenths = 0;
  while (whole >= 1000 && u < 6) {
    tenths = (whole % 1000) / 100;
    whole /= 1000;
    ++u;
  }
  if (u == 0) return std::to_string(n) + " bytes";
  return std::to_string(whole) + "." + std::to_string(tenths) + " " + units[u];
}

}  // namespace

at::Tensor to_tensor(SparseView view, const CoerceOptions& options) {
  return detail::sparse_to_tensor(view, options, "torchbridge::to_tensor");
}

namespace detail {

at::Tensor sparse_to_tensor(SparseView& v, const CoerceOptions& o, const char* api) {
  at::Tensor out;
  if (v.layout == at::kSparseCsr || v.layout == at::kSparseCsc) {
    out = compressed_to_tensor(v, o, api);
  } else {
    TORCH_CHECK_VALUE(v.layout == at::kSparse, api, ": a SparseView's layout must be "
        "sparse_csr, sparse_csc or sparse_coo.");
    out = coo_to_tensor(v, o, api);
  }
  if (o.device) {
    const auto device = resolve_device(*o.device);
    if (!device.is_cpu()) out = out.to(device, /*non_blocking=*/o.non_blocking);
  }
  if (o.pin_memory && out.is_cpu()) {
    check_pin_available(api);
    out = out.pin_memory();
  }
  return o.requires_grad ? new_leaf(out, api) : out;
}

uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

at::Tensor densify(const at::Tensor& t, const char* api) {
  // The dense size, saturating: a shape's product can overflow 64 bits.
  uint64_t bytes = t.element_size();
  for (int64_t s : t.sizes()) {
    const auto u = static_cast<uint64_t>(s);
    if (u != 0 && bytes > std::numeric_limits<uint64_t>::max() / u) {
      bytes = std::numeric_limits<uint64_t>::max();
    } else {
      bytes *= u;
    }
  }
  if (t.numel() == 0) bytes = 0;
  const uint64_t phys = physical_memory_bytes();
  const std::string what = std::string(api) + ": the dense form of this sparse tensor of shape " +
      format::tuple_str(t.sizes()) + " and dtype " + dtype_name(t.scalar_type()) + " needs " +
      (bytes == std::numeric_limits<uint64_t>::max() ? std::string("more than 18 EB")
                                                      : human_bytes(bytes) + " (" +
                                                            std::to_string(bytes) + " bytes)");
  const char* fix =
      "; keep it sparse: torchbridge.to_scipy(tensor) gives a scipy.sparse array that "
      "shares its memory (or densify a slice at a time).";
  TORCH_CHECK_WITH(OutOfMemoryError, phys == 0 || bytes <= phys, what,
      ", more than this machine's ", human_bytes(phys), " of memory", fix);
  try {
    return t.to_dense();
  } catch (const c10::OutOfMemoryError&) {
  } catch (const std::bad_alloc&) {
  } catch (const c10::Error& e) {
    // c10's CPU allocator reports a failed allocation as a plain c10::Error.
    if (std::string(e.what_without_backtrace()).find("can't allocate memory") ==
        std::string::npos)
      throw;
  }
  TORCH_CHECK_WITH(OutOfMemoryError, false, what, ", which could not be allocated", fix);
}

}  // namespace detail
}  // namespace torchbridge
