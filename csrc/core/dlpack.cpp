// DLPack tensors -> ArrayView (include/torchbridge/array_view.h): the
// translation every DLPack producer needs, Python-free, so C++ programs
// can consume DLPack too. The Python front-end (python/dlpack.cpp) only
// runs the __dlpack__ protocol and supplies a GIL-safe owner.

#include <torchbridge/array_view.h>

#include "../format/dtypes.h"

#include <c10/util/Exception.h>

#include <string>

namespace torchbridge {
namespace {

constexpr const char* kApi = "to_tensor";

// DLPack (code, bits) -> torch: the NumPy types through the one dtype
// table (DLPack's int/uint/float/complex/bool codes are NumPy's kinds, its
// bits 8 x the item size); the types NumPy lacks by DLPack's own codes.
// Float8 codes are DLPack 1.1's (numbers, so an older dlpack.h compiles).
char kind_of(uint8_t code) {
  switch (code) {
    case kDLInt: return 'i';
    case kDLUInt: return 'u';
    case kDLFloat: return 'f';
    case kDLComplex: return 'c';
    case kDLBool: return 'b';
    default: return 0;
  }
}

std::optional<at::ScalarType> scalar_of(DLDataType t) {
  const char kind = kind_of(t.code);
#define TORCHBRIDGE_DLPACK_ROW(Id, name, k, size, Torch, Npy) \
  if (kind == (k) && t.bits == (size) * 8) return at::ScalarType::Torch;
  if (kind) {
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DLPACK_ROW)
  }
#undef TORCHBRIDGE_DLPACK_ROW
  if (t.bits == 16 && t.code == kDLBfloat) return at::kBFloat16;
  if (t.bits == 32 && t.code == kDLComplex) return at::kComplexHalf;
  if (t.bits == 8) {
    switch (t.code) {
      case 10: return at::kFloat8_e4m3fn;
      case 11: return at::kFloat8_e4m3fnuz;
      case 12: return at::kFloat8_e5m2;
      case 13: return at::kFloat8_e5m2fnuz;
      case 14: return at::kFloat8_e8m0fnu;
      default: break;
    }
  }
  return std::nullopt;
}

c10::Device device_of(DLDevice d) {
  switch (d.device_type) {
    case kDLCPU:
    case kDLCUDAHost:  // page-locked host memory
    case kDLROCMHost:
      return c10::Device(c10::kCPU);
    case kDLCUDA:
    case kDLCUDAManaged:
    case kDLROCM:  // torch's ROCm builds present HIP devices as "cuda"
      return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(d.device_id));
    default:
      break;
  }
  TORCH_CHECK_VALUE(false, kApi, ": the DLPack producer's memory is on device type ",
      std::to_string(static_cast<int>(d.device_type)),
      " (DLDeviceType), which torchbridge cannot read; copy it to the CPU or a "
      "CUDA device first.");
  return c10::Device(c10::kCPU);  // not reached
}

}  // namespace

ArrayView view_of_dlpack(const DLTensor& t, uint64_t flags, BufferOwner owner) {
  TORCH_CHECK_TYPE(t.dtype.lanes == 1, kApi, ": the DLPack producer's elements are "
      "vectors of ", std::to_string(t.dtype.lanes), " lanes; only scalar elements "
      "(lanes == 1) have a tensor form.");
  const auto st = scalar_of(t.dtype);
  TORCH_CHECK_TYPE(st.has_value(), kApi, ": the DLPack producer's element type (code ",
      std::to_string(t.dtype.code), ", ", std::to_string(t.dtype.bits),
      " bits) has no torch dtype; cast it to a numeric type the producer and "
      "torch share (e.g. float32) first.");
  TORCH_CHECK_VALUE(t.ndim >= 0, kApi, ": the DLPack tensor has ndim ",
      std::to_string(t.ndim), ".");
  ArrayView v;
  v.device = device_of(t.device);
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  v.dtype.scalar = st;
  v.dtype.itemsize = c10::elementSize(*st);
  v.shape.assign(t.shape, t.shape + t.ndim);
  v.strides.resize(t.ndim);
  int64_t step = v.dtype.itemsize;
  for (int i = t.ndim - 1; i >= 0; --i) {
    TORCH_CHECK_VALUE(t.shape[i] >= 0, kApi, ": the DLPack tensor has a negative "
        "extent (", std::to_string(t.shape[i]), ") on axis ", std::to_string(i), ".");
    // No strides: compact and row-major (DLPack's rule).
    v.strides[i] = t.strides ? t.strides[i] * v.dtype.itemsize : step;
    step *= t.shape[i];
  }
  v.writable = (flags & DLPACK_FLAG_BITMASK_READ_ONLY) == 0;
  if (flags & DLPACK_FLAG_BITMASK_IS_COPIED) {
    v.temporary = true;
    v.temporary_from = "the DLPack producer copied it for this call (IS_COPIED)";
  }
  v.owner = std::move(owner);
  return v;
}

ArrayView view_of_dlpack(DLManagedTensorVersioned* m) {
  TORCH_CHECK_VALUE(m, kApi, ": null DLManagedTensorVersioned.");
  BufferOwner owner(m, [](void* p) {
    auto* mt = static_cast<DLManagedTensorVersioned*>(p);
    if (mt->deleter) mt->deleter(mt);
  });
  TORCH_CHECK_VALUE(m->version.major == DLPACK_MAJOR_VERSION, kApi,
      ": the DLPack producer speaks version ", std::to_string(m->version.major), ".",
      std::to_string(m->version.minor), "; torchbridge reads major version ",
      std::to_string(DLPACK_MAJOR_VERSION), ".");
  return view_of_dlpack(m->dl_tensor, m->flags, std::move(owner));
}

ArrayView view_of_dlpack(DLManagedTensor* m) {
  TORCH_CHECK_VALUE(m, kApi, ": null DLManagedTensor.");
  BufferOwner owner(m, [](void* p) {
    auto* mt = static_cast<DLManagedTensor*>(p);
    if (mt->deleter) mt->deleter(mt);
  });
  return view_of_dlpack(m->dl_tensor, 0, std::move(owner));
}

}  // namespace torchbridge
