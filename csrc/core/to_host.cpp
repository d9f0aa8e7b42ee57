// torchbridge::to_host: any tensor -> a detached, dense CPU tensor NumPy can
// describe. The Python to_numpy and the torchbridge::to_host operator both
// run this code.

#include "internal.h"
#include "sparse.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>
#include <vector>

namespace torchbridge {
namespace detail {

bool has_readable_storage(const at::Tensor& t) {
  if (!t.has_storage()) return false;
  if (t.numel() == 0) return true;
  // Wrapper subclasses (DTensor, _make_wrapper_subclass), fake and functional
  // tensors carry a placeholder storage with no data, or one on another
  // device (a fake CPU tensor's storage is meta). Reading it would export
  // whatever happens to be at (or be allocated for) a null pointer.
  const auto& s = t.unsafeGetTensorImpl()->unsafe_storage();
  return s && s.data() != nullptr && s.device_type() == t.device().type();
}

bool exportable(const at::Tensor& t) {
  return t.layout() == at::kStrided && t.device().is_cpu() && !t.is_conj() &&
         !t.is_neg() && !t.is_quantized() && !t.is_nested() && has_readable_storage(t);
}

bool exportable_as(const at::Tensor& t, std::optional<at::ScalarType> want,
                   std::optional<bool> copy) {
  if (copy.value_or(false) || !t.defined() || !exportable(t)) return false;
  return want ? *want == t.scalar_type() : has_numpy_dtype(t.scalar_type());
}

bool packable(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.layout() == at::kStrided &&
         !t.is_quantized() && t.has_storage() &&
         !(t.requires_grad() && at::GradMode::is_enabled());
}

void check_has_data(const at::Tensor& t, const char* api) {
  TORCH_CHECK_VALUE(t.defined(), api,
      ": got an undefined tensor (a default-constructed at::Tensor); pass a "
      "tensor that holds data.");
  TORCH_CHECK_VALUE(!t.is_meta(), api,
      ": meta tensors have a shape but no data, so there is nothing to "
      "convert; create the tensor on a real device (e.g. device='cpu') first.");
  TORCH_CHECK_VALUE(!t.is_nested(), api,
      ": nested tensors have no single array shape; convert their components "
      "one by one (t.unbind()) or pad them first (t.to_padded_tensor(0)).");
  TORCH_CHECK_VALUE(t.layout() != at::kStrided || has_readable_storage(t), api,
      ": this tensor has no storage of its own (a wrapper subclass such as "
      "DTensor, or a functional or fake tensor), so its data cannot be read; "
      "convert it to a plain tensor first (for a DTensor: t.full_tensor()).");
}

void check_pin_available(const char* api) {
  TORCH_CHECK(at::hasCUDA(), api,
      ": pin_memory=True needs a CUDA device to page-lock host memory, and "
      "none is available here; pass pin_memory=False.");
}

void check_target_dtype(at::ScalarType t, const char* api) {
  TORCH_CHECK_TYPE(!c10::isQIntType(t), api, ": dtype=torch.", dtype_name(t),
      " is a quantized dtype, which torchbridge does not produce; convert to "
      "float32, then quantize with torch.quantize_per_tensor.");
  // Not c10::isBarebonesUnsignedType: it also covers uint16/32/64, which
  // are ordinary targets (the README's dtype map, Python API "dtypes";
  // torch casts to them).
  bool castable = !c10::isBitsType(t) && t != at::ScalarType::Undefined;
  switch (t) {
    case at::ScalarType::UInt1: case at::ScalarType::UInt2:
    case at::ScalarType::UInt3: case at::ScalarType::UInt4:
    case at::ScalarType::UInt5: case at::ScalarType::UInt6:
    case at::ScalarType::UInt7:
    case at::ScalarType::Int1: case at::ScalarType::Int2:
    case at::ScalarType::Int3: case at::ScalarType::Int4:
    case at::ScalarType::Int5: case at::ScalarType::Int6:
    case at::ScalarType::Int7:
    case at::ScalarType::Float4_e2m1fn_x2:
      castable = false;
      break;
    default:
      break;
  }
  TORCH_CHECK_TYPE(castable, api, ": dtype=torch.", dtype_name(t),
      " cannot be a conversion target (torch has no casts to it); pick a "
      "dtype such as torch.uint8 or torch.float32.");
}

at::Tensor fresh_copy(const at::Tensor& src, at::ScalarType dtype, bool pin) {
  // Dense CPU sources without a graph or bits to resolve: a direct copy or
  // policy cast into fresh memory laid out like the source.
  if (!pin && src.is_cpu() && src.layout() == at::kStrided &&
      !src.is_conj() && !src.is_neg() && !src.is_quantized() &&
      !(src.requires_grad() && at::GradMode::is_enabled()) &&
      src.is_non_overlapping_and_dense()) {
    auto out = empty_host(src.sizes(), src.strides(), dtype);
    // The lowest address of a dense tensor with non-negative strides is its
    // first element.
    if (src.numel() == 0 ||
        cast_dense(out.data_ptr(), dtype, src.const_data_ptr(),
                   src.scalar_type(), src.numel()))
      return out;
    copy_into(out, src);
    return out;
  }
  auto opts = src.options().dtype(dtype);
  if (pin) opts = opts.pinned_memory(true);
  // Preserve the layout of dense inputs: a linear pass instead of a
  // transposing one, as NumPy's astype(order='K') does.
  auto out = at::empty_like(src, opts, at::MemoryFormat::Preserve);
  // copy_ resolves conj/neg bits into the plain result
  if (src.is_cpu()) {
    copy_into(out, src);
  } else {
    out.copy_(src);
  }
  return out;
}

namespace {

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) s += (i + 1 == parts.size()) ? " and " : ", ";
    s += parts[i];
  }
  return s;
}

// The layout as Python spells it (c10 prints "Sparse", "SparseCsr").
std::string layout_name(const at::Tensor& t) {
  switch (t.layout()) {
    case at::kStrided: return "torch.strided";
    case at::kSparse: return "torch.sparse_coo";
    case at::kSparseCsr: return "torch.sparse_csr";
    case at::kSparseCsc: return "torch.sparse_csc";
    case at::kSparseBsr: return "torch.sparse_bsr";
    case at::kSparseBsc: return "torch.sparse_bsc";
    case at::kMkldnn: return "torch._mkldnn";
    case at::kJagged: return "torch.jagged";
    default: {
      std::string s = c10::str(t.layout());  // a name: no numbers streamed
      for (auto& c : s) c = static_cast<char>(std::tolower(c));
      return "torch." + s;
    }
  }
}

}  // namespace

HostPlan plan_host(const at::Tensor& t, const HostOptions& o, const char* api) {
  check_has_data(t, api);
  const bool dense = t.layout() == at::kStrided;
  const bool quantized = t.is_quantized();
  const bool on_device = !t.device().is_cpu();
  if (o.dtype) check_target_dtype(*o.dtype, api);
  // Quantized values reach the host dequantized, as float32.
  const auto value_dtype = quantized ? at::kFloat : t.scalar_type();
  const auto target = o.dtype ? *o.dtype : host_dtype(t.scalar_type());
  const bool cast = target != value_dtype;
  const bool unpinned = o.pin_memory && !(!on_device && t.is_pinned());

  if (o.copy.has_value() && !*o.copy) {
    std::vector<std::string> why;
    if (on_device) why.push_back("it lives on " + t.device().str());
    if (!dense) why.push_back("its layout is " + layout_name(t));
    if (quantized)
      why.push_back("it is quantized (torch." + dtype_name(t.scalar_type()) +
                    ") and must be dequantized");
    if (cast && !quantized)
      why.push_back("its dtype torch." + dtype_name(value_dtype) +
                    " becomes " + dtype_name(target));
    if (t.is_conj()) why.push_back("its conjugate bit is set");
    if (t.is_neg()) why.push_back("its negative bit is set");
    if (unpinned) why.push_back("pin_memory=True needs page-locked memory");
    TORCH_CHECK_VALUE(why.empty(), api,
        "(copy=False): the tensor cannot be shared without a copy because ",
        join(why), "; pass copy=None to let torchbridge copy it.");
  }
  if (o.pin_memory) check_pin_available(api);

  // Detach first: it is a free view, and nothing below then records autograd.
  at::Tensor x = t.requires_grad() ? t.detach() : t;
  if (!dense) x = densify(x, api);  // refuses what cannot fit (sparse.cpp)
  if (quantized) x = x.dequantize();
  if (on_device) {
    // Narrow before leaving the device, widen after: fewer bytes on the bus.
    // Conj/neg bits are resolved on the device, so the bus moves plain data.
    x = x.to(bus_dtype(x.scalar_type(), target));
    if (x.is_conj()) x = x.resolve_conj();
    if (x.is_neg()) x = x.resolve_neg();
  }
  return {x, target};
}

at::Tensor finish_host(const at::Tensor& t, at::Tensor x, at::ScalarType target,
                       const HostOptions& o) {
  if (x.scalar_type() != target || x.is_conj() || x.is_neg() ||
      (o.pin_memory && !x.is_pinned())) {
    x = fresh_copy(x, target, o.pin_memory);
  } else if (o.copy.value_or(false) && x.is_alias_of(t)) {
    x = fresh_copy(x, target, o.pin_memory);
  }
  return x;
}

at::Tensor to_host(const at::Tensor& t, const HostOptions& o, const char* api) {
  auto [x, target] = plan_host(t, o, api);
  if (!x.device().is_cpu()) x = device_to_host(x, target, o.pin_memory);
  return finish_host(t, std::move(x), target, o);
}

}  // namespace detail

at::Tensor to_host(const at::Tensor& t, const HostOptions& options) {
  return detail::to_host(t, options, "to_host");
}

}  // namespace torchbridge
