#pragma once
// The torchbridge operators, called through the PyTorch dispatcher: the same
// kernels, autograd and schemas as torch.ops.torchbridge.* in Python.
// Unlike torchbridge::to_host / torchbridge::coerce (core.h), which may
// return their input, the operators always return a new tensor (custom ops
// must not alias their inputs under torch.compile).
//
// Schemas:
//   torchbridge::to_host(Tensor self, ScalarType? dtype=None,
//                        bool pin_memory=False) -> Tensor
//   torchbridge::coerce(Tensor self, ScalarType? dtype=None,
//                       Device? device=None, bool non_blocking=False) -> Tensor

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <optional>

namespace torchbridge::ops {

// A detached, dense CPU copy in `dtype` (default: the NumPy-representable
// host dtype). The result never requires grad.
at::Tensor to_host(const at::Tensor& self,
                   std::optional<at::ScalarType> dtype = std::nullopt,
                   bool pin_memory = false);

// A copy in `dtype` (default: the float policy, float64 -> float32) on
// `device` (default: self's). Gradients pass through like Tensor.to.
at::Tensor coerce(const at::Tensor& self,
                  std::optional<at::ScalarType> dtype = std::nullopt,
                  std::optional<at::Device> device = std::nullopt,
                  bool non_blocking = false);

}  // namespace torchbridge::ops
