// A LibTorch program that uses torchbridge without Python: the float policy,
// to_host, and the operators through the dispatcher.

#include <torchbridge/torchbridge.h>

#include <ATen/ATen.h>

#include <iostream>

int main() {
  // Data often arrives as float64; models want float32.
  at::Tensor x = at::arange(6, at::kDouble).reshape({2, 3});
  at::Tensor y = torchbridge::coerce(x);
  std::cout << "coerce: " << x.scalar_type() << " -> " << y.scalar_type()
            << "\n";

  // A bfloat16 activation that requires grad, to the host in a dtype NumPy
  // can hold: detached, float32, values exact.
  at::Tensor act = at::tensor({1.5, -2.0, 0.25}).to(at::kBFloat16).requires_grad_();
  at::Tensor host = torchbridge::to_host(act);
  std::cout << "to_host: " << act.scalar_type() << " -> " << host.scalar_type()
            << ", requires_grad=" << host.requires_grad() << "\n";

  // The registered operator, found by the dispatcher: always a new tensor.
  at::Tensor z = torchbridge::ops::coerce(x, at::kHalf);

  const bool ok = y.scalar_type() == at::kFloat &&
                  at::equal(y, x.to(at::kFloat)) &&
                  host.scalar_type() == at::kFloat && !host.requires_grad() &&
                  host[1].item<float>() == -2.0f &&
                  z.scalar_type() == at::kHalf && !z.is_alias_of(x);
  std::cout << (ok ? "ok" : "FAILED") << "\n";
  return ok ? 0 : 1;
}
