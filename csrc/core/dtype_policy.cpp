// The dtype policy and the host-dtype rule: the only place either is written.
// The Python extension, the operators and their fake kernels all call these.

#include <torchbridge/core.h>

#include <c10/util/Exception.h>

namespace torchbridge {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kBool: return "bool";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kUInt16: return "uint16";
    case at::kUInt32: return "uint32";
    case at::kUInt64: return "uint64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kComplexHalf: return "complex32";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: {
      // c10's names for the rest ("Float8_e4m3fn", "QInt8") match torch's
      // Python names once lower-cased.
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
    case at::kBool:
    case at::kByte:
    case at::kChar:
    case at::kShort:
    case at::kInt:
    case at::kLong:
    case at::kUInt16:
    case at::kUInt32:
    case at::kUInt64:
    case at::kHalf:
    case at::kFloat:
    case at::kDouble:
    case at::kComplexFloat:
    case at::kComplexDouble:
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
