// ArrayView -> tensor: the sharing rules and the copies, for every front-end
// (include/torchbridge/array_view.h).

#include "../format/npy.h"
#include "../format/util.h"
#include "internal.h"
#include "parallel.h"

#include <torchbridge/array_view.h>

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/TensorImpl.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace torchbridge {
namespace {

bool is_complex(const ArrayView& v) {
  return v.dtype.scalar && c10::isComplexType(*v.dtype.scalar);
}

// The alignment NumPy asks of an item, and the unit its bytes are swapped
// in: its size, or a part's for complex.
int64_t alignment(const ArrayView& v) {
  const int64_t item = v.dtype.itemsize;
  return is_complex(v) ? item / 2 : item;
}

// NumPy's spelling of a byte-swapped type (">f8"), which users see there.
std::string swapped_name(const ArrayView& v) {
  const std::string n = std::to_string(v.dtype.itemsize);
  if (!v.dtype.scalar) return v.dtype.name ? v.dtype.name : "?";
  const auto t = *v.dtype.scalar;
  const char order = '>';  // the non-native order of a little-endian host
  if (c10::isComplexType(t)) return order + std::string("c") + n;
  if (c10::isFloatingType(t) && t != at::kBFloat16 && !at::isFloat8Type(t))
    return order + std::string("f") + n;
  if (t == at::kBool) return "bool";
  if (c10::isIntegralType(t, /*includeBool=*/false))
    return order + std::string(c10::isSignedType(t) ? "i" : "u") + n;
  return order + dtype_name(t);
}

std::string view_dtype_name(const ArrayView& v) {
  if (v.cast_from) return v.cast_from;
  if (v.dtype.swapped && v.dtype.itemsize > 1) return swapped_name(v);
  if (v.dtype.scalar) return dtype_name(*v.dtype.scalar);
  return v.dtype.name ? v.dtype.name : "an unknown type";
}

// Element strides for a torch-representable layout. Extent-0/1 axes (and
// empty views) get C-order strides, so that is_contiguous() holds wherever
// NumPy would call the buffer contiguous. Returns the bytes the view spans
// from its first element (0 when empty): the storage size. No overflow
// check is needed (computeStorageNbytes' cost on the per-call path): the
// strides are non-negative here and the producer's buffer exists.
int64_t element_strides(const ArrayView& v, bool empty, c10::SmallVector<int64_t, 6>& out) {
  const int nd = static_cast<int>(v.shape.size());
  out.resize_for_overwrite(nd);
  int64_t contiguous = 1;
  int64_t last = 0;  // the offset of the last element, in elements
  for (int i = nd - 1; i >= 0; --i) {
    out[i] = (empty || v.shape[i] <= 1) ? contiguous : v.strides[i] / v.dtype.itemsize;
    contiguous *= std::max<int64_t>(v.shape[i], 1);
    if (!empty) last += (v.shape[i] - 1) * out[i];
  }
  return empty ? 0 : (last + 1) * v.dtype.itemsize;
}

// A tensor over the view's memory (no layout blocker) whose storage holds
// `ptr`: the view's owner (shared) or nothing (borrowed: the tensor must
// not outlive the view).
at::Tensor wrap(const ArrayView& v, c10::DataPtr ptr) {
  c10::SmallVector<int64_t, 6> strides;
  const bool empty = v.numel() == 0;
  const int64_t nbytes = element_strides(v, empty, strides);
  const at::ScalarType st = *v.dtype.scalar;
  if (!v.device.is_cpu()) {
    void* ctx = ptr.release_context();
    return at::for_blob(v.data, v.shape)
        .strides(strides)
        .context(ctx, ptr.get_deleter())
        .options(at::TensorOptions().dtype(st).device(v.device))
        .make_tensor();
  }
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr),
                       /*allocator=*/nullptr, /*resizable=*/false);
  auto t = at::detail::make_tensor<c10::TensorImpl>(
      std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
      c10::scalarTypeToTypeMeta(st));
  t.unsafeGetTensorImpl()->set_sizes_and_strides(v.shape, strides);
  return t;
}

at::Tensor wrap_borrowed(const ArrayView& v) {
  return wrap(v, c10::DataPtr(v.data, v.device));
}

at::Tensor wrap_owned(ArrayView& v) {
  c10::DataPtr ptr = std::move(v.owner).into_data_ptr(v.data, v.device);
  return wrap(v, std::move(ptr));
}

// Whether the view is dense in C (or Fortran) order; extent-1 axes aside.
bool dense_in_order(const ArrayView& v, bool c_order) {
  const int nd = static_cast<int>(v.shape.size());
  int64_t step = v.dtype.itemsize;
  for (int k = 0; k < nd; ++k) {
    const int i = c_order ? nd - 1 - k : k;
    if (v.shape[i] != 1 && v.strides[i] != step) return false;
    step *= v.shape[i];
  }
  return true;
}

// Copies any layout (negative, odd or unaligned strides, swapped bytes)
// into `dst`: dense, C order, native, the view's own type. Rows (the last
// axis) are the unit of work: one row's source offset is computed once.
void gather(const ArrayView& v, char* dst) {
  const int nd = static_cast<int>(v.shape.size());
  const int64_t item = v.dtype.itemsize;
  const int64_t n = v.numel();
  if (n == 0) return;
  const int64_t cols = nd ? v.shape[nd - 1] : 1;
  const int64_t col_stride = nd ? v.strides[nd - 1] : item;
  const int64_t rows = n / cols;
  const int64_t unit = alignment(v);
  const bool swap = v.dtype.swapped && unit > 1;
  const auto* base = static_cast<const char*>(v.data);
  const int64_t row_bytes = cols * item;
  const int64_t rows_per_piece = std::max<int64_t>(1, (int64_t{128} << 10) / row_bytes);
  detail::parallel_compute(rows, rows_per_piece, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t off = 0, rest = r;
      for (int i = nd - 2; i >= 0; --i) {
        off += (rest % v.shape[i]) * v.strides[i];
        rest /= v.shape[i];
      }
      const char* s = base + off;
      char* d = dst + r * row_bytes;
      if (col_stride == item) {
        std::memcpy(d, s, static_cast<size_t>(row_bytes));
      } else {
        for (int64_t c = 0; c < cols; ++c)
          std::memcpy(d + c * item, s + c * col_stride, static_cast<size_t>(item));
      }
      if (swap)
        format::swap_units(d, static_cast<uint64_t>(row_bytes / unit), static_cast<size_t>(unit));
    }
  });
}

c10::SmallVector<int64_t, 6> ordered_strides(const ArrayView& v, bool c_order) {
  return format::contiguous_strides<c10::SmallVector<int64_t, 6>>(v.shape, c_order);
}

}  // namespace

namespace {

// One pass over the axes; `n` is v.numel().
ShareBlocker layout_blocker_n(const ArrayView& v, int64_t n) {
  if (n == 0) return ShareBlocker::kNone;  // nothing to read
  const int64_t item = v.dtype.itemsize;
  if (item > 1 && v.dtype.swapped) return ShareBlocker::kByteOrder;
  uint64_t bits = reinterpret_cast<uintptr_t>(v.data);
  ShareBlocker first = ShareBlocker::kNone;  // of the strides, axis by axis
  for (size_t i = 0; i < v.shape.size(); ++i) {
    if (v.shape[i] <= 1) continue;  // the stride of an extent-1 axis is moot
    const int64_t s = v.strides[i];
    bits |= static_cast<uint64_t>(s);
    if (first == ShareBlocker::kNone) {
      if (s < 0) {
        first = ShareBlocker::kNegativeStride;
      } else if (s % item != 0) {
        first = ShareBlocker::kOddStride;
      }
    }
  }
  const int64_t align = alignment(v);
  if (align > 1 && bits % static_cast<uint64_t>(align) != 0) return ShareBlocker::kMisaligned;
  return first;
}

ShareBlocker share_blocker_n(const ArrayView& v, at::ScalarType target,
                             const CoerceOptions& o, int64_t n) {
  if (!v.dtype.scalar || *v.dtype.scalar != target || v.cast_from)
    return ShareBlocker::kDtype;
  if (o.device && (v.device.is_cpu() ? !o.device->is_cpu()
                                      : resolve_device(*o.device) != v.device))
    return ShareBlocker::kDevice;
  if (o.pin_memory && v.device.is_cpu()) return ShareBlocker::kPin;
  const ShareBlocker layout = layout_blocker_n(v, n);
  if (layout != ShareBlocker::kNone) return layout;
  if (!v.writable && n > 0 && !(o.copy.has_value() && !*o.copy))
    return ShareBlocker::kReadOnly;
  return ShareBlocker::kNone;
}

}  // namespace

ShareBlocker layout_blocker(const ArrayView& v) { return layout_blocker_n(v, v.numel()); }

at::ScalarType target_dtype(const ArrayView& v, const CoerceOptions& o) {
  return detail::target_dtype(v, o, "torchbridge::to_tensor");
}

ShareBlocker share_blocker(const ArrayView& v, at::ScalarType target,
                           const CoerceOptions& o) {
  return share_blocker_n(v, target, o, v.numel());
}

std::string share_blocker_reason(ShareBlocker why, const ArrayView& v,
                                 at::ScalarType target, const CoerceOptions& o) {
  switch (why) {
    case ShareBlocker::kDtype: {
      // Only a change the float policy made is undone by float_dtype=None;
      // not dtype=, nor a producer's own cast (cast_from). It keeps the
      // view's type, which may be complex128.
      const bool policy = !o.dtype && !v.cast_from && v.dtype.scalar;
      return "its dtype " + view_dtype_name(v) + " becomes " + dtype_name(target) +
             (policy ? " (the float policy; pass float_dtype=None to keep " +
                           dtype_name(*v.dtype.scalar) + ")"
                     : std::string());
    }
    case ShareBlocker::kDevice:
      return "the result goes to " + o.device->str();
    case ShareBlocker::kPin:
      return "pin_memory=True needs a copy in page-locked memory";
    case ShareBlocker::kByteOrder:
      return "it is byte-swapped (" + view_dtype_name(v) +
             ") and tensors hold native byte order";
    case ShareBlocker::kMisaligned:
      return "its data is not aligned to its " + std::to_string(v.dtype.itemsize) +
             "-byte items";
    case ShareBlocker::kNegativeStride:
      return "it has negative strides " + format::tuple_str(v.strides) +
             ", which tensors cannot represent";
    case ShareBlocker::kOddStride:
      return "its strides " + format::tuple_str(v.strides) +
             " are not multiples of its item size (" +
             std::to_string(v.dtype.itemsize) + " bytes)";
    case ShareBlocker::kReadOnly:
      return "it is read-only, and a tensor sharing it could be written";
    case ShareBlocker::kNone:
      break;
  }
  return "";
}

at::Tensor to_tensor(ArrayView view, const CoerceOptions& options) {
  return detail::to_tensor(view, options, "torchbridge::to_tensor");
}

namespace detail {

at::ScalarType target_dtype(const ArrayView& v, const CoerceOptions& o, const char* api) {
  if (o.dtype) check_target_dtype(*o.dtype, api);
  TORCH_CHECK_TYPE(v.dtype.scalar.has_value(), api, ": cannot convert a buffer of ",
      v.dtype.name ? v.dtype.name : "an unknown element type",
      " (torch has no such dtype); convert it to a numeric type first.");
  return policy_dtype(*v.dtype.scalar, o.dtype, o.float_dtype);
}

at::ScalarType target_dtype(at::ScalarType src, const CoerceOptions& o, const char* api) {
  if (o.dtype) check_target_dtype(*o.dtype, api);
  return policy_dtype(src, o.dtype, o.float_dtype);
}

at::Tensor borrow(const ArrayView& v) { return wrap_borrowed(v); }

at::Tensor copy_view(const ArrayView& v, at::ScalarType target, bool pin) {
  TORCH_INTERNAL_ASSERT(v.device.is_cpu() && v.dtype.scalar, "copy_view: a CPU view");
  const at::ScalarType st = *v.dtype.scalar;
  const bool plain = layout_blocker(v) == ShareBlocker::kNone;
  if (!pin && plain) {
    // C- or F-contiguous in a plain copy or a policy cast: straight from the
    // buffer into fresh memory of the same order, with no dispatch.
    const bool c_order = dense_in_order(v, true);
    if (c_order || dense_in_order(v, false)) {
      auto out = empty_host(v.shape, ordered_strides(v, c_order), target);
      const int64_t n = v.numel();
      if (n == 0 || cast_dense(out.data_ptr(), target, v.data, st, n)) return out;
      copy_into(out, wrap_borrowed(v));
      return out;
    }
  }
  auto opts = at::TensorOptions().dtype(target);
  if (pin) opts = opts.pinned_memory(true);
  if (plain) {
    auto src = wrap_borrowed(v);
    auto out = at::empty_like(src, opts, at::MemoryFormat::Preserve);
    copy_into(out, src);
    return out;
  }
  // Byte-swapped, negative or odd strides, misaligned: gathered into C
  // order (as NumPy's copy does), then cast if the type changes.
  auto out = at::empty(v.shape, opts);
  if (target == st) {
    gather(v, static_cast<char*>(out.data_ptr()));
    return out;
  }
  auto mid = empty_host(v.shape, ordered_strides(v, true), st);
  gather(v, static_cast<char*>(mid.data_ptr()));
  copy_into(out, mid);
  return out;
}

HostSource host_source(ArrayView& v, at::ScalarType target, at::Device device,
                       bool pin_copies) {
  const auto st = *v.dtype.scalar;
  // Narrow on the host (in the staging copy) before the transfer, widen on
  // the device after it, so fewer bytes cross the bus.
  const auto bus = bus_dtype(st, target);
  if (layout_blocker(v) == ShareBlocker::kNone) return {wrap_borrowed(v), bus};
  return {copy_view(v, bus, pin_copies && device.is_cuda()), bus};
}

at::Tensor upload(const HostSource& src, at::ScalarType target, at::Device device,
                  bool non_blocking) {
  auto out = host_to_device(src.host, src.bus, device, non_blocking);
  return out.scalar_type() == target ? out : out.to(target);  // widen on device
}

at::Tensor new_leaf(const at::Tensor& t, const char* api) {
  check_requires_grad(t.scalar_type(), api, "the result is");
  return t.detach().requires_grad_(true);
}

void check_requires_grad(at::ScalarType t, const char* api, const char* what) {
  TORCH_CHECK_VALUE(c10::isFloatingType(t) || c10::isComplexType(t), api,
      "(requires_grad=True): only floating and complex tensors can require "
      "gradients, but ", what, " ", dtype_name(t),
      "; pass dtype=torch.float32 (or another floating dtype).");
}

at::Tensor to_tensor(ArrayView& v, const CoerceOptions& o, const char* api) {
  const auto target = target_dtype(v, o, api);
  const bool on_host = v.device.is_cpu();
  const bool to_host = on_host ? (!o.device || o.device->is_cpu())
                               : (o.device && o.device->is_cpu());
  const ShareBlocker why = share_blocker_n(v, target, o, v.numel());
  if (o.copy.has_value() && !*o.copy) {
    TORCH_CHECK_VALUE(!v.temporary, api,
        "(copy=False): the input has no memory to share (",
        v.temporary_from ? v.temporary_from : "it was built for this call",
        "); pass copy=None to let torchbridge copy it.");
    TORCH_CHECK_VALUE(why == ShareBlocker::kNone, api,
        "(copy=False): the array's memory cannot be shared because ",
        share_blocker_reason(why, v, target, o),
        "; pass copy=None to let torchbridge copy it.");
  }
  at::Tensor out;
  if (why == ShareBlocker::kNone && !(o.copy.value_or(false) && !v.temporary)) {
    out = wrap_owned(v);  // a read-only buffer only on copy=False
  } else if (on_host) {
    const bool pin = o.pin_memory && to_host;
    if (pin) check_pin_available(api);
    if (to_host) {
      out = copy_view(v, target, pin);
    } else {
      const auto device = resolve_device(*o.device);
      out = upload(host_source(v, target, device, /*pin_copies=*/true), target, device,
                   o.non_blocking);
    }
  } else {
    // A device buffer: torch moves and casts it (narrowing before a
    // transfer, widening after), as for any device tensor.
    const ShareBlocker layout = layout_blocker(v);
    TORCH_CHECK_VALUE(layout == ShareBlocker::kNone, api,
        ": the ", v.device.str(), " buffer cannot be read because ",
        share_blocker_reason(layout, v, target, o),
        "; make it contiguous on its device first.");
    CoerceOptions co = o;
    co.dtype = target;
    co.copy = true;
    co.requires_grad = false;
    out = coerce(wrap_borrowed(v), co, api);
  }
  return o.requires_grad ? new_leaf(out, api) : out;
}

ArrayResult array_result(bool temporary, bool cast, std::optional<bool> copy,
                         const char* api, const char* temporary_from,
                         const std::function<std::string()>& cast_words) {
  const bool no_copy = copy.has_value() && !*copy;
  TORCH_CHECK_VALUE(!(no_copy && temporary), api,
      "(copy=False): the input has no memory to share (", temporary_from,
      "); pass copy=None.");
  if (cast) {
    TORCH_CHECK_VALUE(!no_copy, api, "(copy=False): ", cast_words(),
        " needs a copy; pass copy=None.");
    return ArrayResult::kCast;
  }
  // A temporary is already the caller's own: copy=True copies nothing more.
  return copy.value_or(false) && !temporary ? ArrayResult::kCopy : ArrayResult::kItself;
}

at::Tensor stack(std::vector<ArrayView>& views, at::ScalarType common,
                 const CoerceOptions& o, const char* api) {
  const int64_t n = static_cast<int64_t>(views.size());
  TORCH_CHECK_VALUE(n > 0, api, ": cannot stack an empty list of arrays.");
  for (int64_t i = 1; i < n; ++i) {
    TORCH_CHECK_VALUE(views[i].shape == views[0].shape, api,
        ": cannot stack the list: element [", std::to_string(i), "] has shape ",
        format::tuple_str(views[i].shape), ", but element [0] has shape ",
        format::tuple_str(views[0].shape), "; arrays stack only when their shapes are equal.");
  }
  const auto target = target_dtype(common, o, api);
  TORCH_CHECK_VALUE(!(o.copy.has_value() && !*o.copy), api,
      "(copy=False): a list of ", std::to_string(n), " arrays cannot share memory with one "
      "tensor; stacking them is a copy. Pass copy=None.");
  const bool to_cpu = !o.device || o.device->is_cpu();
  const bool pin = o.pin_memory && to_cpu;
  if (pin) check_pin_available(api);
  const auto device = to_cpu ? at::Device(at::kCPU) : resolve_device(*o.device);
  // Narrow on the host; widen on the device.
  const auto host_dtype = to_cpu ? target : bus_dtype(common, target);
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), views[0].shape.begin(), views[0].shape.end());
  auto opts = at::TensorOptions().dtype(host_dtype);
  // Straight into pinned memory when it is going to CUDA: one copy on the
  // host, then one DMA.
  if (pin || device.is_cuda()) opts = opts.pinned_memory(true);
  at::Tensor out = at::empty(shape, opts);
  stack_into(views, common, out, api);
  if (to_cpu) return out;
  return upload({out, host_dtype}, target, device, o.non_blocking);
}

void stack_into(std::vector<ArrayView>& views, at::ScalarType common,
                const at::Tensor& out, const char* api) {
  const int64_t n = static_cast<int64_t>(views.size());
  TORCH_INTERNAL_ASSERT(n > 0 && out.is_cpu() && out.is_contiguous() && out.dim() >= 1 &&
                        out.size(0) == n, "stack_into: a dense CPU output of ",
                        std::to_string(n), " items");
  const auto host_dtype = out.scalar_type();
  // The common case of a batch: every item of the common type, C-contiguous
  // and sharable, in a plain copy or a policy cast: one pass over raw
  // pointers (no tensor per item).
  bool dense = true;
  std::vector<const void*> ptrs(n);
  for (int64_t i = 0; i < n && dense; ++i) {
    const ArrayView& v = views[i];
    dense = v.device.is_cpu() && v.dtype.scalar == common && !v.cast_from &&
            dense_in_order(v, true) && layout_blocker(v) == ShareBlocker::kNone;
    ptrs[i] = v.data;
  }
  if (!(dense && stack_dense(out.data_ptr(), host_dtype, ptrs, common, views[0].numel()))) {
    for (int64_t i = 0; i < n; ++i) {
      ArrayView& v = views[i];
      TORCH_CHECK_VALUE(v.device.is_cpu(), api, ": cannot stack a ", v.device.str(),
          " buffer with host arrays; convert it on its own.");
      auto dst = out.select(0, i);
      const auto st = *v.dtype.scalar;
      if (layout_blocker(v) == ShareBlocker::kNone) {
        copy_into(dst, wrap_borrowed(v));
      } else {
        copy_into(dst, copy_view(v, st, false));
      }
    }
  }
}

}  // namespace detail
}  // namespace torchbridge
