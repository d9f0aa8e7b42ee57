#pragma once
// torchbridge core: the tensor-side rules shared by the Python extension, the
// torch.ops operators and C++ programs. Needs LibTorch only, never Python.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torchbridge/error.h>  // Error

#include <optional>
#include <string>

namespace torchbridge {

// The dtype policy, the one place it is written down. An explicit `dtype`
// wins. Otherwise float64 becomes `float_dtype` and complex128 becomes the
// complex type whose parts are `float_dtype`; every other dtype is kept.
// `float_dtype = nullopt` keeps float64/complex128. Throws TypeError when
// `float_dtype` is not a floating dtype, or when a complex128 input meets a
// `float_dtype` that has no complex counterpart (bfloat16, float8).
at::ScalarType policy_dtype(
    at::ScalarType src,
    std::optional<at::ScalarType> dtype = std::nullopt,
    std::optional<at::ScalarType> float_dtype = at::kFloat);

// True when NumPy has a dtype with the same bits as `t` (bool, int8..64,
// uint8..64, float16/32/64, complex64/128).
bool has_numpy_dtype(at::ScalarType t);

// The dtype `to_host` produces by default: the input's own when NumPy has it;
// bfloat16 and float8 kinds -> float32, complex32 -> complex64, quantized ->
// float32 (dequantized). Throws TypeError for dtypes with no faithful host
// form (bits, sub-byte and packed float4 types).
at::ScalarType host_dtype(at::ScalarType src);

struct HostOptions {
  // Target dtype; nullopt means host_dtype(input).
  std::optional<at::ScalarType> dtype;
  // Place the result in page-locked memory (needs a CUDA device).
  bool pin_memory = false;
  // nullopt: return the input (or a view of it) when nothing must change.
  // true: always return fresh memory. false: never copy; throw ValueError
  // naming why a copy would be needed.
  std::optional<bool> copy;
};

// A detached, dense, CPU tensor with conj/neg bits resolved, in `dtype` or a
// NumPy-representable dtype. Sparse and mkldnn tensors are densified,
// quantized ones dequantized; device tensors are copied to the host and the
// copy is complete on return. A cast that narrows runs before leaving the
// device, one that widens after (fewer bytes cross the bus). Meta and other
// storage-less tensors throw ValueError. May return `t` itself.
at::Tensor to_host(const at::Tensor& t, const HostOptions& options = {});

struct CoerceOptions {
  // Explicit target dtype; nullopt applies policy_dtype with float_dtype.
  std::optional<at::ScalarType> dtype;
  std::optional<at::ScalarType> float_dtype = at::kFloat;
  // Target device; nullopt keeps the input's. "cuda" means the current one.
  std::optional<at::Device> device;
  // With a device copy, may return before the copy finishes (see README).
  bool non_blocking = false;
  // A CPU result in page-locked memory.
  bool pin_memory = false;
  // Same meaning as HostOptions::copy.
  std::optional<bool> copy;
  // The result is a new autograd leaf that requires grad (ValueError
  // unless its dtype is floating or complex).
  bool requires_grad = false;
};

// `t` in the policy dtype on the target device, like Tensor.to: the autograd
// graph is kept. A narrowing cast runs before a device transfer, a widening
// one after it. Returns `t` itself when nothing changes (unless copy=true).
at::Tensor coerce(const at::Tensor& t, const CoerceOptions& options = {});

// The device `d` names, with "cuda" resolved to the current CUDA device.
// Throws a clear error when the device type is unavailable.
at::Device resolve_device(at::Device d);

// A short name for a dtype, as users write it: "float32", "bfloat16".
std::string dtype_name(at::ScalarType t);

}  // namespace torchbridge
