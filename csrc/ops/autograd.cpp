// Autograd kernels of the operators, in C++ so that gradients behave the
// same from Python, torch.compile and C++ programs:
// - coerce passes gradients through like Tensor.to (cast and move back);
// - to_host returns a tensor that does not require grad.

#include "dispatch.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace torchbridge::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CoerceFunction : public torch::autograd::Function<CoerceFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& self,
                            std::optional<at::ScalarType> dtype,
                            std::optional<at::Device> device,
                            bool non_blocking) {
    ctx->saved_data["dtype"] = self.scalar_type();
    ctx->saved_data["device"] = self.device();
    at::AutoDispatchBelowADInplaceOrView guard;
    return coerce_op().call(self, dtype, device, non_blocking);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto dtype = ctx->saved_data["dtype"].toScalarType();
    const auto device = ctx->saved_data["device"].toDevice();
    at::Tensor g = grads[0];
    if (g.defined()) {
      // As Tensor.to's backward: a real input gets the real part.
      if (g.is_complex() && !c10::isComplexType(dtype)) g = at::real(g);
      g = g.to(device, dtype);
    }
    return {g, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor coerce_autograd(const at::Tensor& self,
                           std::optional<at::ScalarType> dtype,
                           std::optional<at::Device> device,
                           bool non_blocking) {
  return CoerceFunction::apply(self, dtype, device, non_blocking);
}

at::Tensor to_host_autograd(const at::Tensor& self,
                            std::optional<at::ScalarType> dtype,
                            bool pin_memory) {
  // Below autograd the result carries no graph: to_host detaches.
  at::AutoDispatchBelowADInplaceOrView guard;
  return to_host_op().call(self, dtype, pin_memory);
}

}  // namespace
}  // namespace torchbridge::ops

TORCH_LIBRARY_IMPL(torchbridge, Autograd, m) {
  m.impl("to_host", &torchbridge::ops::to_host_autograd);
  m.impl("coerce", &torchbridge::ops::coerce_autograd);
}
