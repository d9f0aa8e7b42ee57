// The dtype policy and the host-dtype rule: the only place either is written.
// The Python extension, the operators and their fake kernels all call these.

#include <torchbridge/core.h>

#include "../format/dtypes.h"

#include <c10/util/Exception.h>

namespace torchbridge {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
#define TORCHBRIDGE_DTYPE_NAME(Id, name, kind, size, Torch, Npy) \
  case at::ScalarType::Torch: return name;
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_NAME)
#undef TORCHBRIDGE_DTYPE_NAME
#define TORCHBRIDGE_ML_DTYPE_NAME(name, Torch) \
  case at::ScalarType::Torch: return name;
    TORCHBRIDGE_FORALL_ML_DTYPES(TORCHBRIDGE_ML_DTYPE_NAME)
#undef TORCHBRIDGE_ML_DTYPE_NAME
    // torch-only; c10 calls it "ComplexHalf", torch's Python name differs.
    case at::kComplexHalf: return "complex32";
    default: {
      // c10's names for the rest ("QInt8", "Float4_e2m1fn_x2") match
      // torch's Python names once lower-cased.
      std::string s = c10::toString(t);
      for (auto& c : s) c = static_cast<char>(std::tolower(c));
      return s;
    }
  }
}

namespace {

at::ScalarType complex_with_parts(at::ScalarType f) {
  switch (f) {
    case at::kHalf: return at::kComplexHalf;
    case at::kFloat: return at::kComplexFloat;
    case at::kDouble: return at::kComplexDouble;
    default:
      TORCH_CHECK_TYPE(false,
          "float_dtype=torch.", dtype_name(f), " has no complex counterpart, so "
          "a complex128 input cannot follow it; pass dtype=torch.complex64 for "
          "that input (or float_dtype=torch.float32).");
  }
}

}  // namespace

at::ScalarType policy_dtype(
    at::ScalarType src,
    std::optional<at::ScalarType> dtype,
    std::optional<at::ScalarType> float_dtype) {
  if (dtype) return *dtype;
  if (!float_dtype) return src;
  const auto f = *float_dtype;
  // Checked for every input, not only float64 ones, so that a bad setting
  // fails on the first call rather than on the first float64 array.
  TORCH_CHECK_TYPE(c10::isFloatingType(f),
      "float_dtype must be a floating dtype (float16, bfloat16, float32, "
      "float64), got torch.", dtype_name(f), "; pass float_dtype=None to keep "
      "float64, or dtype=torch.", dtype_name(f), " to cast every input.");
  if (src == at::kDouble) return f;
  if (src == at::kComplexDouble) return complex_with_parts(f);
  return src;
}

bool has_numpy_dtype(at::ScalarType t) {
  switch (t) {
#define TORCHBRIDGE_DTYPE_CASE(Id, name, kind, size, Torch, Npy) \
  case at::ScalarType::Torch:
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_CASE)
#undef TORCHBRIDGE_DTYPE_CASE
      return true;
    default:
      return false;
  }
}

at::ScalarType host_dtype(at::ScalarType src) {
  if (has_numpy_dtype(src)) return src;
  if (src == at::kBFloat16 || c10::isFloat8Type(src) || c10::isQIntType(src))
    return at::kFloat;  // exact for bf16/float8; the dequantized value
  if (src == at::kComplexHalf) return at::kComplexFloat;
  if (src == at::ScalarType::Float4_e2m1fn_x2) {
    TORCH_CHECK_TYPE(false,
        "torch.float4_e2m1fn_x2 packs two 4-bit floats per byte and has no "
        "NumPy form; take the raw bytes with t.view(torch.uint8), or pass "
        "dtype= to say what to convert to.");
  }
  // bits*, uint1..7, int1..7: torch has no casts for these, so the only
  // faithful export is their raw bytes.
  TORCH_CHECK_TYPE(false,
      "torch.", dtype_name(src), " has no NumPy equivalent and torch cannot "
      "cast it; export its raw bytes with t.view(torch.uint8).");
}

}  // namespace torchbridge
