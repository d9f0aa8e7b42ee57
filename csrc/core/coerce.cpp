// torchbridge::coerce: a tensor in the policy dtype on the target device.
// Used by to_tensor for tensor inputs, by the torchbridge::coerce operator and
// by C++ programs.

#include "internal.h"

#include "../format/util.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace torchbridge {

at::Device resolve_device(at::Device d) {
  if (d.is_cpu()) return at::Device(at::kCPU);
  if (d.is_meta()) return d;
  const auto type = d.type();
  if (type == at::kCUDA) {
    TORCH_CHECK(c10::impl::hasDeviceGuardImpl(at::kCUDA),
        "device='", d.str(), "' was requested, but this PyTorch build has no "
        "CUDA support (torch.version.cuda is None); pass device='cpu' or "
        "install a CUDA build of PyTorch.");
    TORCH_CHECK(at::hasCUDA(), "device='", d.str(), "' was requested, but no "
        "CUDA device is visible (torch.cuda.is_available() is False); pass "
        "device='cpu', or check CUDA_VISIBLE_DEVICES and the driver.");
  }
  TORCH_CHECK(c10::impl::hasDeviceGuardImpl(type), "device='", d.str(),
      "' was requested, but this PyTorch build does not support that device "
      "type; pass device='cpu'.");
  const auto* impl = c10::impl::getDeviceGuardImpl(type);
  if (!d.has_index()) return at::Device(type, impl->getDevice().index());
  const auto count = impl->deviceCount();
  TORCH_CHECK_VALUE(d.index() < count, "device='", d.str(),
      "' does not exist: ", std::to_string(count), " ",
      c10::DeviceTypeName(type, /*lower_case=*/true),
      " device(s) are visible (indices 0..", std::to_string(count - 1), ").");
  return d;
}

namespace detail {

at::Tensor coerce(const at::Tensor& t, const CoerceOptions& o,
                  const char* api) {
  if (o.requires_grad) {
    CoerceOptions plain = o;
    plain.requires_grad = false;
    return new_leaf(coerce(t, plain, api), api);
  }
  TORCH_CHECK_VALUE(t.defined(), api,
      ": got an undefined tensor (a default-constructed at::Tensor); pass a "
      "tensor that holds data.");
  const auto src = t.scalar_type();
  const auto target = target_dtype(src, o, api);
  const at::Device device = o.device ? resolve_device(*o.device) : t.device();
  const bool move = device != t.device();
  const bool cast = target != src;
  const bool unpinned =
      o.pin_memory && device.is_cpu() && !(t.is_cpu() && t.is_pinned());

  TORCH_CHECK_VALUE(!(t.is_meta() && move && !device.is_meta()), api,
      ": meta tensors have a shape but no data, so they cannot move to ",
      device.str(), "; create the tensor on a real device first.");
  if (o.copy.has_value() && !*o.copy) {
    std::vector<std::string> why;
    if (move) why.push_back("it must move from " + t.device().str() + " to " +
                            device.str());
    if (cast) why.push_back("its dtype torch." + dtype_name(src) +
                            " becomes " + dtype_name(target));
    if (unpinned) why.push_back("pin_memory=True needs page-locked memory");
    std::string reasons;
    for (size_t i = 0; i < why.size(); ++i)
      reasons += (i ? " and " : "") + why[i];
    TORCH_CHECK_VALUE(why.empty(), api,
        "(copy=False): the tensor cannot be returned without a copy because ",
        reasons, "; pass copy=None to let torchbridge copy it.");
  }
  if (!move && !cast && !unpinned) {
    return o.copy.value_or(false) ? fresh_copy(t, target, o.pin_memory) : t;
  }
  if (unpinned) check_pin_available(api);

  at::Tensor x = t;
  if (x.is_quantized() && !c10::isQIntType(target)) x = x.dequantize();
  if (move) {
    // Narrow before the transfer, widen after it: fewer bytes on the bus.
    if (!x.is_cpu()) x = x.to(bus_dtype(x.scalar_type(), target));
    if (x.requires_grad() && at::GradMode::is_enabled()) {
      // Keep the autograd graph, as Tensor.to does (the engine's in-place
      // chunk copies are not meant to be differentiated through).
      x = x.to(device, x.scalar_type(), o.non_blocking);
    } else if (device.is_cpu() && !x.is_meta()) {
      if (x.is_conj()) x = x.resolve_conj();
      if (x.is_neg()) x = x.resolve_neg();
      x = device_to_host(x, target, unpinned);
    } else if (x.is_cpu() && !x.is_meta()) {
      // The staging copy on the host does the (narrowing) cast for free.
      x = host_to_device(x, bus_dtype(x.scalar_type(), target), device,
                         o.non_blocking);
    } else {
      x = move_to_device(x, device, o.non_blocking);
    }
  }
  if (unpinned && !x.is_pinned()) {
    x = fresh_copy(x, target, true);  // cast and pin in one pass
  } else if (x.scalar_type() != target) {
    // On the host through copy_into: no stall on a busy machine, and
    // float64 -> float16 rounds once (Tensor.to rounds through float32).
    x = x.is_cpu() ? fresh_copy(x, target, false) : x.to(target);
  }
  if (o.copy.value_or(false) && x.is_alias_of(t))
    x = fresh_copy(x, target, o.pin_memory && device.is_cpu());
  return x;
}

at::Tensor stack_tensors(std::vector<at::Tensor> items, const CoerceOptions& o,
                         const char* api) {
  const size_t n = items.size();
  TORCH_CHECK_VALUE(n > 0, api, ": cannot stack an empty list.");
  for (size_t i = 1; i < n; ++i) {
    TORCH_CHECK_VALUE(items[i].sizes() == items[0].sizes(), api,
        ": cannot stack the list: element [", std::to_string(i),
        "] has shape ", format::tuple_str(items[i].sizes()), ", but element [0] has shape ",
        format::tuple_str(items[0].sizes()), "; tensors stack only when their shapes are "
        "equal (pad them, or convert them one by one).");
  }
  // One device to stack on: the items' own, or device= when they differ.
  at::Device src = items[0].device();
  bool mixed = false;
  for (size_t i = 1; i < n; ++i) {
    if (items[i].device() == src) continue;
    TORCH_CHECK_VALUE(o.device.has_value(), api,
        ": cannot stack the list: element [", std::to_string(i), "] is on ",
        items[i].device().str(), ", but element [0] is on ", src.str(),
        "; move them to one device first, or pass device= to gather them "
        "there.");
    mixed = true;
  }
  const auto dst = o.device ? resolve_device(*o.device) : src;
  at::ScalarType common = items[0].scalar_type();
  bool graph = false, dense = true;
  for (const auto& t : items) {
    common = c10::promoteTypes(common, t.scalar_type());
    graph |= t.requires_grad();
    dense &= t.layout() == at::kStrided;
  }
  graph &= at::GradMode::is_enabled();
  const auto target = policy_dtype(common, o.dtype, o.float_dtype);

  CoerceOptions co;
  co.dtype = target;
  co.device = dst;
  co.non_blocking = o.non_blocking;
  co.pin_memory = o.pin_memory;
  co.requires_grad = o.requires_grad;
  at::Tensor out;
  {
    if (mixed) {
      src = dst;
      for (auto& t : items) t = t.to(dst);  // Tensor.to keeps the graph
    }
    // Without a graph to keep, the cast (narrowing before a transfer, the
    // whole cast otherwise) happens inside the stacking copy: one pass.
    const auto stack_dtype =
        src == dst ? target : bus_dtype(common, target);
    if (graph || !dense || !c10::canCast(common, stack_dtype)) {
      out = at::stack(items);  // autograd records it
    } else {
      std::vector<int64_t> shape{static_cast<int64_t>(n)};
      shape.insert(shape.end(), items[0].sizes().begin(), items[0].sizes().end());
      out = at::empty(shape, at::TensorOptions().dtype(stack_dtype).device(src));
      at::stack_out(out, items);
    }
    out = coerce(out, co, api);
  }
  return out;
}


}  // namespace detail

at::Tensor coerce(const at::Tensor& t, const CoerceOptions& options) {
  return detail::coerce(t, options, "coerce");
}

}  // namespace torchbridge
