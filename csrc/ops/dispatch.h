#pragma once
// Typed dispatcher handles of the operators (looked up once).

#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

namespace torchbridge::ops {

using ToHostSig = at::Tensor(const at::Tensor&, std::optional<at::ScalarType>,
                             bool);
using CoerceSig = at::Tensor(const at::Tensor&, std::optional<at::ScalarType>,
                             std::optional<at::Device>, bool);

inline const c10::TypedOperatorHandle<ToHostSig>& to_host_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("torchbridge::to_host", "")
                             .typed<ToHostSig>();
  return op;
}

inline const c10::TypedOperatorHandle<CoerceSig>& coerce_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("torchbridge::coerce", "")
                             .typed<CoerceSig>();
  return op;
}

}  // namespace torchbridge::ops
