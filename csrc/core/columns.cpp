// Columns -> one tensor (include/torchbridge/columns.h): the common dtype,
// the missing-value rules, and the one gathering copy, cast in the same pass.

#include "../format/util.h"
#include "internal.h"
#include "parallel.h"

#include <torchbridge/columns.h>

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace torchbridge {

int64_t Column::length() const {
  int64_t n = 0;
  for (const auto& s : segments) n += s.length();
  return n;
}

at::ScalarType Column::type() const {
  if (as_type) return *as_type;
  TORCH_INTERNAL_ASSERT(!segments.empty() && segments[0].values.dtype.scalar,
                        "Column::type: a column with typed values");
  return *segments[0].values.dtype.scalar;
}

namespace {

// NumPy's smallest float that holds every value of an integer of `bytes`
// bytes (int8 -> float16, int16 -> float32, wider -> float64).
at::ScalarType float_for_int(int64_t bytes) {
  return bytes == 1 ? at::kHalf : bytes == 2 ? at::kFloat : at::kDouble;
}

bool is_unsigned(at::ScalarType t) {
  return t == at::kByte || t == at::kUInt16 || t == at::kUInt32 || t == at::kUInt64;
}

}  // namespace

at::ScalarType numpy_result_type(at::ScalarType a, at::ScalarType b) {
  if (a == b) return a;
  if (!has_numpy_dtype(a) || !has_numpy_dtype(b)) return c10::promoteTypes(a, b);
  if (a == at::kBool) return b;
  if (b == at::kBool) return a;
  const bool ca = c10::isComplexType(a), cb = c10::isComplexType(b);
  const bool fa = c10::isFloatingType(a) || ca, fb = c10::isFloatingType(b) || cb;
  const auto size = [](at::ScalarType t) { return static_cast<int64_t>(c10::elementSize(t)); };
  if (!fa && !fb) {
    const bool ua = is_unsigned(a), ub = is_unsigned(b);
    if (ua == ub) return size(a) >= size(b) ? a : b;
    const at::ScalarType s = ua ? b : a, u = ua ? a : b;
    if (size(s) > size(u)) return s;
    switch (size(u)) {  // a signed type twice the unsigned one's size
      case 1: return at::kShort;
      case 2: return at::kInt;
      case 4: return at::kLong;
      default: return at::kDouble;  // no signed type holds uint64
    }
  }
  // A float (or complex) with anything: the widest float part either needs.
  const auto float_part = [&](at::ScalarType t) {
    if (c10::isComplexType(t)) return t == at::kComplexFloat ? at::kFloat : at::kDouble;
    if (c10::isFloatingType(t)) return t;
    return float_for_int(size(t));
  };
  const auto pa = float_part(a), pb = float_part(b);
  const auto part = size(pa) >= size(pb) ? pa : pb;
  if (!ca && !cb) return part;
  return part == at::kDouble ? at::kComplexDouble : at::kComplexFloat;
}

namespace {

// ---- missing values --------------------------------------------------------

bool bit(const uint8_t* bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

// Whether row i (of the segment) is missing.
bool missing(const Validity& v, int64_t i) {
  switch (v.kind) {
    case Validity::Kind::kBitmap: return !bit(v.data, v.offset + i);
    case Validity::Kind::kByteMask: return v.data[i * v.stride] != 0;
    case Validity::Kind::kNone: break;
  }
  return false;
}

int64_t count_missing(const Validity& v, int64_t n) {
  if (v.kind == Validity::Kind::kNone || n == 0) return 0;
  if (v.null_count >= 0) return v.null_count;
  int64_t valid = 0;
  if (v.kind == Validity::Kind::kBitmap) {
    int64_t i = 0;
    for (; i < n && ((v.offset + i) & 7); ++i) valid += bit(v.data, v.offset + i);
    const uint8_t* p = v.data + ((v.offset + i) >> 3);
    for (; i + 64 <= n; i += 64, p += 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      valid += __builtin_popcountll(w);
    }
    for (; i < n; ++i) valid += bit(v.data, v.offset + i);
    return n - valid;
  }
  int64_t gone = 0;
  if (v.stride == 1) {
    for (int64_t i = 0; i < n; ++i) gone += v.data[i] != 0;
  } else {
    for (int64_t i = 0; i < n; ++i) gone += v.data[i * v.stride] != 0;
  }
  return gone;
}

// ---- the typed copy --------------------------------------------------------

template <typename T>
constexpr bool kReduced = std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;

// NumPy's cast of one value: through float for the 16-bit floats; to bool,
// nonzero (NaN too) is true.
template <typename D, typename S>
inline D cast_value(S s) {
  using W = std::conditional_t<kReduced<S>, float, S>;
  const W w = static_cast<W>(s);
  if constexpr (std::is_same_v<D, bool>) {
    return w != W(0);
  } else if constexpr (kReduced<D>) {
    return D(static_cast<float>(w));
  } else {
    return static_cast<D>(w);
  }
}

template <typename D, typename S>
void cast_run(D* __restrict dst, int64_t step, const char* src, int64_t stride, int64_t n) {
  if (stride == static_cast<int64_t>(sizeof(S))) {
    const S* s = reinterpret_cast<const S*>(src);
    if (step == 1) {
      // A column-major output's column: the common pairs take the
      // vectorised loops (this file is built for the baseline ISA).
      if constexpr (std::is_same_v<D, S> && !std::is_same_v<D, bool>) {  // bools: 0 or 1
        std::memcpy(dst, s, static_cast<size_t>(n) * sizeof(S));
        return;
      } else if constexpr (std::is_same_v<D, float> && std::is_same_v<S, double>) {
        detail::narrow_f64_run(dst, s, n);
        return;
      }
      for (int64_t i = 0; i < n; ++i) dst[i] = cast_value<D>(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i * step] = cast_value<D>(s[i]);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    S v;
    std::memcpy(&v, src + i * stride, sizeof(S));  // any alignment
    dst[i * step] = cast_value<D>(v);
  }
}

template <typename D>
void bits_run(D* dst, int64_t step, const uint8_t* bits, int64_t first, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i * step] = cast_value<D>(bit(bits, first + i));
}

// The element types of the typed copy: every real type NumPy has, and
// bfloat16. Complex and float8 go through ATen (copy_into).
#define TORCHBRIDGE_COLUMN_TYPES(X) \
  X(Bool, bool)                     \
  X(Byte, uint8_t)                  \
  X(Char, int8_t)                   \
  X(Short, int16_t)                 \
  X(Int, int32_t)                   \
  X(Long, int64_t)                  \
  X(UInt16, uint16_t)               \
  X(UInt32, uint32_t)               \
  X(UInt64, uint64_t)               \
  X(Half, c10::Half)                \
  X(BFloat16, c10::BFloat16)        \
  X(Float, float)                   \
  X(Double, double)

bool typed(at::ScalarType t) {
  switch (t) {
#define TORCHBRIDGE_CASE(Name, T) case at::k##Name:
    TORCHBRIDGE_COLUMN_TYPES(TORCHBRIDGE_CASE)
#undef TORCHBRIDGE_CASE
    return true;
    default: return false;
  }
}

// Whether the typed copy takes a column of `src` into `dst`. float64 to
// float16/bfloat16 goes through copy_into, which rounds once as NumPy does.
bool typed_pair(at::ScalarType src, at::ScalarType dst) {
  if (!typed(src) || !typed(dst)) return false;
  return !(src == at::kDouble && (dst == at::kHalf || dst == at::kBFloat16));
}

// Rows [i0, i0 + n) of segment `s` into dst[0], dst[step], ...
template <typename D>
void segment_run(D* dst, int64_t step, const Segment& s, int64_t i0, int64_t n) {
  if (s.bit_offset >= 0) {
    bits_run(dst, step, static_cast<const uint8_t*>(s.values.data), s.bit_offset + i0, n);
    return;
  }
  const int64_t stride = s.values.strides.empty() ? s.values.dtype.itemsize : s.values.strides[0];
  const char* src = static_cast<const char*>(s.values.data) + i0 * stride;
  switch (*s.values.dtype.scalar) {
#define TORCHBRIDGE_CASE(Name, T) \
  case at::k##Name: cast_run<D, T>(dst, step, src, stride, n); return;
    TORCHBRIDGE_COLUMN_TYPES(TORCHBRIDGE_CASE)
#undef TORCHBRIDGE_CASE
    default: TORCH_INTERNAL_ASSERT(false, "columns: an untyped segment");
  }
}

template <typename D>
void nan_run(D* dst, int64_t step, const Validity& v, int64_t i0, int64_t n) {
  D nan;
  if constexpr (c10::is_complex<D>::value) {
    using R = typename D::value_type;
    nan = D(std::numeric_limits<R>::quiet_NaN(), std::numeric_limits<R>::quiet_NaN());
  } else {
    nan = std::numeric_limits<D>::quiet_NaN();
  }
  for (int64_t i = 0; i < n; ++i)
    if (missing(v, i0 + i)) dst[i * step] = nan;
}

// NaN at the missing rows of a floating or complex output.
void fill_nan(void* dst, at::ScalarType t, int64_t step, const Validity& v, int64_t i0,
              int64_t n) {
  switch (t) {
#define TORCHBRIDGE_CASE(Name, T) \
  case at::k##Name: nan_run(static_cast<T*>(dst), step, v, i0, n); return;
    TORCHBRIDGE_CASE(Half, c10::Half)
    TORCHBRIDGE_CASE(BFloat16, c10::BFloat16)
    TORCHBRIDGE_CASE(Float, float)
    TORCHBRIDGE_CASE(Double, double)
    TORCHBRIDGE_CASE(ComplexFloat, c10::complex<float>)
    TORCHBRIDGE_CASE(ComplexDouble, c10::complex<double>)
#undef TORCHBRIDGE_CASE
    default: TORCH_INTERNAL_ASSERT(false, "fill_nan: a floating output");
  }
}

// Rows [i0, i0 + n) of a typed segment into `dst` (the output element of its
// first row; `step` elements apart), missing ones as NaN.
void copy_run(char* dst, at::ScalarType t, int64_t step, const Segment& s, int64_t i0,
              int64_t n, bool nan) {
  switch (t) {
#define TORCHBRIDGE_CASE(Name, T) \
  case at::k##Name: segment_run(reinterpret_cast<T*>(dst), step, s, i0, n); break;
    TORCHBRIDGE_COLUMN_TYPES(TORCHBRIDGE_CASE)
#undef TORCHBRIDGE_CASE
    default: TORCH_INTERNAL_ASSERT(false, "columns: an untyped segment");
  }
  if (nan) fill_nan(dst, t, step, s.validity, i0, n);
}

std::string column_words(const Column& c, const ColumnsOptions& l) {
  if (c.name.empty() || !l.two_d) return l.what;
  // As Python shows a str ('price'), bounded, never a control byte.
  constexpr format::EscapeStyle kName{'\'', true, false, true, 200};
  return "column " + format::escape(c.name, kName) + " of " + l.what;
}

// A segment as a tensor for copy_into: borrowing its memory where a tensor
// can (a borrowed view of negative strides or swapped bytes would read the
// wrong memory, or none), else a native C-order copy of it; bit-packed
// bools unpacked into a fresh one.
at::Tensor segment_tensor(const Segment& s) {
  if (s.bit_offset < 0) {
    ArrayView v;
    v.data = s.values.data;
    v.shape = s.values.shape;
    v.strides = s.values.strides;
    v.dtype = s.values.dtype;
    if (layout_blocker(v) != ShareBlocker::kNone) return detail::copy_view(v, *v.dtype.scalar, false);
    return detail::borrow(v);
  }
  auto out = at::empty({s.length()}, at::kBool);
  bits_run(out.data_ptr<bool>(), 1, static_cast<const uint8_t*>(s.values.data), s.bit_offset,
           s.length());
  return out;
}

}  // namespace

at::Tensor columns_to_tensor(std::vector<Column>& columns, const ColumnsOptions& layout,
                             const CoerceOptions& options) {
  return detail::columns_to_tensor(columns, layout, options, "torchbridge::columns_to_tensor");
}

namespace detail {

at::Tensor columns_to_tensor(std::vector<Column>& columns, const ColumnsOptions& l,
                             const CoerceOptions& o, const char* api) {
  const int64_t k = static_cast<int64_t>(columns.size());
  TORCH_INTERNAL_ASSERT(l.two_d || k == 1, "columns_to_tensor: 1-D needs one column");
  const int64_t n = k ? columns[0].length() : l.rows;
  // Validate before anything is read: one element type per column, the
  // same length everywhere, 1-D values.
  for (const auto& c : columns) {
    TORCH_CHECK_VALUE(c.length() == n, api, ": ", column_words(c, l), " has ",
        std::to_string(c.length()), " rows, but ", column_words(columns[0], l), " has ",
        std::to_string(n), "; every column must have the same length.");
    for (const auto& s : c.segments) {
      TORCH_INTERNAL_ASSERT(s.values.shape.size() == 1 && s.values.dtype.scalar &&
                                s.values.dtype.scalar == c.segments[0].values.dtype.scalar,
                            "columns_to_tensor: 1-D segments of one type");
      TORCH_CHECK_VALUE(s.values.device.is_cpu(), api, ": ", column_words(c, l),
          " is on ", s.values.device.str(), "; columns are read on the CPU.");
    }
  }
  at::ScalarType common = at::kDouble;  // a table with no columns: NumPy's float64
  for (int64_t j = 0; j < k; ++j) {
    const auto t = columns[j].type();
    common = j == 0 ? t : numpy_result_type(common, t);
  }
  const at::ScalarType target = target_dtype(common, o, api);
  const bool nan_ok = c10::isFloatingType(target) || c10::isComplexType(target);

  // Missing values: NaN for a floating target, else an error naming the
  // first column that has any, before anything is copied.
  std::vector<std::vector<int64_t>> gone(k);
  int64_t any_missing = 0;
  for (int64_t j = 0; j < k; ++j) {
    int64_t col = 0;
    for (const auto& s : columns[j].segments) {
      gone[j].push_back(count_missing(s.validity, s.length()));
      col += gone[j].back();
    }
    TORCH_CHECK_VALUE(col == 0 || nan_ok, api, ": ", column_words(columns[j], l), " has ",
        std::to_string(col), " missing value", col == 1 ? "" : "s", " (of ",
        std::to_string(n), "), and the target dtype ", dtype_name(target),
        " has no NaN to hold them; pass dtype=torch.float32 (or float64) to get NaN "
        "there, or ", l.fill_hint, ".");
    any_missing += col;
  }

  // One segment of one column, nothing missing: the ArrayView rules (share
  // when safe, read-only buffers copied unless copy=False).
  if (k == 1 && columns[0].segments.size() == 1 && columns[0].segments[0].bit_offset < 0 &&
      any_missing == 0) {
    Segment& s = columns[0].segments[0];
    ArrayView& v = s.values;
    if (l.two_d) {
      v.shape.push_back(1);
      v.strides.push_back(v.dtype.itemsize);
    }
    CoerceOptions co = o;
    if (*v.dtype.scalar != common && !o.dtype) co.dtype = target;  // as_type (codes)
    return to_tensor(v, co, api);
  }

  if (o.copy.has_value() && !*o.copy) {
    std::string why;
    if (k > 1) {
      why = "its " + std::to_string(k) + " columns are separate buffers, and one (" +
            std::to_string(n) + ", " + std::to_string(k) + ") tensor of them is a copy";
    } else if (k == 1) {
      const Column& c = columns[0];
      if (any_missing)
        why = std::to_string(any_missing) + " of its values are missing, and writing NaN "
              "there is a copy";
      else if (c.segments.size() > 1)
        why = "it is in " + std::to_string(c.segments.size()) +
              " chunks, and one tensor of them is a copy";
      else
        why = "it holds booleans as bits (Arrow's layout), and tensors hold a byte per bool";
    }
    if (!why.empty())
      TORCH_CHECK_VALUE(false, api, "(copy=False): ", l.what, " cannot share its memory "
          "with one tensor because ", why, "; pass copy=None to let torchbridge copy it.");
  }

  const bool to_cpu = !o.device || o.device->is_cpu();
  const bool pin = o.pin_memory && to_cpu;
  if (pin) check_pin_available(api);
  const auto device = to_cpu ? at::Device(at::kCPU) : resolve_device(*o.device);
  // Narrow on the host, widen on the device; but NaN needs a floating type.
  at::ScalarType host = to_cpu ? target : bus_dtype(common, target);
  if (any_missing && !(c10::isFloatingType(host) || c10::isComplexType(host))) host = target;
  std::vector<int64_t> shape{n};
  if (l.two_d) shape.push_back(k);
  // A 2-D result on the host is column-major, (n, k) with strides (1, n):
  // the layout pandas' own to_numpy() gives (its blocks are column-major)
  // and the one a table's columns fill fastest (each column one sequential
  // run). Like any Fortran-ordered array it is dense; .contiguous() gives
  // rows. Staging for a device stays row-major.
  const bool by_column = l.two_d && !pin && !device.is_cuda();
  at::Tensor out;
  if (pin || device.is_cuda()) {
    out = at::empty(shape, at::TensorOptions().dtype(host).pinned_memory(true));
  } else {
    out = empty_host(shape,
                     format::contiguous_strides<std::vector<int64_t>>(shape, !by_column),
                     host);
  }

  // Columns the typed copy does not take (complex, float8, float64 to
  // float16) go through copy_into, column by column.
  // Nor columns in another byte order or misaligned: the typed loops read
  // native, aligned values (segment_tensor gathers those first).
  std::vector<char> fast(k);
  for (int64_t j = 0; j < k; ++j) {
    fast[j] = columns[j].segments.empty() ||  // no rows: nothing to copy
              typed_pair(*columns[j].segments[0].values.dtype.scalar, host);
    for (const auto& seg : columns[j].segments) {
      if (seg.bit_offset >= 0) continue;
      const auto why = layout_blocker(seg.values);
      if (why == ShareBlocker::kByteOrder || why == ShareBlocker::kMisaligned) fast[j] = 0;
    }
  }
  const int64_t item = static_cast<int64_t>(c10::elementSize(host));
  char* base = static_cast<char*>(out.data_ptr());
  // Element (r, j) is at base + (r * step + j * col_step) * item.
  const int64_t step = by_column ? 1 : (l.two_d ? k : 1);
  const int64_t col_step = by_column ? n : 1;
  const int64_t width = l.two_d ? k : 1;
  for (int64_t j = 0; j < k; ++j) {
    if (fast[j]) continue;
    int64_t row = 0;
    for (size_t g = 0; g < columns[j].segments.size(); ++g) {
      const Segment& s = columns[j].segments[g];
      const int64_t len = s.length();
      auto dst = (l.two_d ? out.select(1, j) : out).narrow(0, row, len);
      copy_into(dst, segment_tensor(s));
      if (gone[j][g])
        fill_nan(base + (row * step + j * col_step) * item, host, step, s.validity, 0, len);
      row += len;
    }
  }
  // The rest in one pass over pieces of rows: each piece writes its rows of
  // every column (a block of the output that stays in cache), reading each
  // column's segments where they overlap it.
  bool any_fast = false;
  for (char f : fast) any_fast |= f != 0;
  if (any_fast && n > 0) {
    std::vector<std::vector<int64_t>> starts(k);
    for (int64_t j = 0; j < k; ++j) {
      int64_t row = 0;
      for (const auto& s : columns[j].segments) {
        starts[j].push_back(row);
        row += s.length();
      }
    }
    const bool fresh = n * width * item >= (int64_t{32} << 20) && !pin && !device.is_cuda();
    // Row-major: pieces of rows whose output block stays in cache. Column-
    // major: each piece writes one run per column, so pieces are as long as
    // a fresh output's prefault unit (1 MB a column; 128 KB otherwise):
    // short runs would cost a madvise each (k per piece).
    const int64_t grain =
        by_column ? std::max<int64_t>(256, (fresh ? int64_t{1} << 20 : int64_t{128} << 10) / item)
                  : std::max<int64_t>(256, (int64_t{128} << 10) / (width * item));
    parallel_compute(n, grain, [&](int64_t r0, int64_t r1) {
      if (fresh) {
        if (by_column) {
          for (int64_t j = 0; j < k; ++j)
            prefault(base + (j * n + r0) * item, static_cast<size_t>((r1 - r0) * item));
        } else {
          prefault(base + r0 * step * item, static_cast<size_t>((r1 - r0) * step * item));
        }
      }
      for (int64_t j = 0; j < k; ++j) {
        if (!fast[j]) continue;
        const auto& segs = columns[j].segments;
        const auto& st = starts[j];
        size_t g = static_cast<size_t>(
            std::upper_bound(st.begin(), st.end(), r0) - st.begin() - 1);
        for (int64_t r = r0; r < r1 && g < segs.size(); ++g) {
          const int64_t i0 = r - st[g];
          const int64_t len = std::min(r1 - r, segs[g].length() - i0);
          if (len <= 0) continue;
          copy_run(base + (r * step + j * col_step) * item, host, step, segs[g], i0, len,
                   gone[j][g] != 0);
          r += len;
        }
      }
    });
  }
  if (!to_cpu) out = upload({out, host}, target, device, o.non_blocking);
  return o.requires_grad ? new_leaf(out, api) : out;
}

}  // namespace detail
}  // namespace torchbridge
