// The kernel bodies shared by every backend registration.

#include "kernels.h"

#include "../core/internal.h"

namespace torchbridge::ops {

at::Tensor to_host_kernel(const at::Tensor& self,
                          std::optional<at::ScalarType> dtype,
                          bool pin_memory) {
  HostOptions o;
  o.dtype = dtype;
  o.pin_memory = pin_memory;
  o.copy = true;  // functional: never an alias of the input
  return detail::to_host(self, o, "torchbridge::to_host");
}

at::Tensor coerce_kernel(const at::Tensor& self,
                         std::optional<at::ScalarType> dtype,
                         std::optional<at::Device> device, bool non_blocking) {
  CoerceOptions o;
  o.dtype = dtype;  // nullopt: the float policy (float64 -> float32)
  o.device = device;
  o.non_blocking = non_blocking;
  o.copy = true;  // functional: never an alias of the input
  return detail::coerce(self, o, "torchbridge::coerce");
}

}  // namespace torchbridge::ops
