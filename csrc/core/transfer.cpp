// Host <-> device moves. Every transfer in torchbridge goes through these two
// functions so that staging and stream rules live in one place.

#include "internal.h"

#include <ATen/ATen.h>

namespace torchbridge::detail {

at::Tensor device_to_host(const at::Tensor& src, bool pin) {
  if (!pin) return src.to(at::kCPU);
  auto out = at::empty_like(
      src, src.options().device(at::kCPU).pinned_memory(true),
      at::MemoryFormat::Preserve);
  out.copy_(src);
  return out;
}

at::Tensor move_to_device(const at::Tensor& src, at::Device device,
                          bool non_blocking) {
  return src.to(device, src.scalar_type(), non_blocking);
}

}  // namespace torchbridge::detail
