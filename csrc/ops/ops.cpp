// The public C++ entry points to the operators (torchbridge/ops.h): calls
// through the dispatcher, so C++ gets the same backend and autograd choice
// as torch.ops.torchbridge.* in Python.

#include <torchbridge/ops.h>

#include "dispatch.h"

namespace torchbridge::ops {

at::Tensor to_host(const at::Tensor& self, std::optional<at::ScalarType> dtype,
                   bool pin_memory) {
  return to_host_op().call(self, dtype, pin_memory);
}

at::Tensor coerce(const at::Tensor& self, std::optional<at::ScalarType> dtype,
                  std::optional<at::Device> device, bool non_blocking) {
  return coerce_op().call(self, dtype, device, non_blocking);
}

}  // namespace torchbridge::ops
