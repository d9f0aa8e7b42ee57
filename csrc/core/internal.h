#pragma once
// Private helpers of the core, shared by its .cpp files and by the Python
// extension (which names its own entry point in error messages).

#include <torchbridge/core.h>

namespace torchbridge::detail {

// `api` is the entry point users called ("to_numpy", "coerce"); every error
// message starts with it.
at::Tensor to_host(const at::Tensor& t, const HostOptions& o, const char* api);
at::Tensor coerce(const at::Tensor& t, const CoerceOptions& o, const char* api);

// Whether a strided tensor's storage holds its data here: false for
// placeholder storages (wrapper subclasses, fake and functional tensors).
bool has_readable_storage(const at::Tensor& t);

// Throws ValueError unless `t` holds readable data (defined, not meta, not
// nested, has readable storage when strided).
void check_has_data(const at::Tensor& t, const char* api);

// Throws unless page-locked memory can be had (a CUDA device is present).
void check_pin_available(const char* api);

// Throws TypeError when `t` cannot be a conversion target (quantized, bits).
void check_target_dtype(at::ScalarType t, const char* api);

// A fresh tensor with `src`'s values in `dtype` on `src`'s device, laid out
// like `src` when it is dense (torch's preserve_format), page-locked when
// `pin` is set. Resolves conj/neg bits. Records autograd like copy_.
at::Tensor fresh_copy(const at::Tensor& src, at::ScalarType dtype, bool pin);

// Copies a device tensor to the host, complete on return, into page-locked
// memory when `pin` is set. Keeps dtype and (dense) layout. The transfer
// engine's one entry for device -> host.
at::Tensor device_to_host(const at::Tensor& src, bool pin);

// Moves `src` to `device` (any direction) keeping its dtype; with
// `non_blocking` the call may return before the copy is done.
at::Tensor move_to_device(const at::Tensor& src, at::Device device,
                          bool non_blocking);

}  // namespace torchbridge::detail
