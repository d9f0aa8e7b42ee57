#pragma once
// The operators' backend kernels. Every backend runs the same core rules
// (csrc/core): the kernels differ only in the dispatch key they serve, and
// in always returning fresh memory (custom ops must not alias their inputs).

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <optional>

namespace torchbridge::ops {

at::Tensor to_host_kernel(const at::Tensor& self,
                          std::optional<at::ScalarType> dtype, bool pin_memory);

at::Tensor coerce_kernel(const at::Tensor& self,
                         std::optional<at::ScalarType> dtype,
                         std::optional<at::Device> device, bool non_blocking);

}  // namespace torchbridge::ops
