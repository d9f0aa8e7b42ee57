#pragma once
// The dtype table: every dtype torchbridge maps between NumPy, .npy files and
// torch, written once. Torch-free (no includes), so csrc/format, csrc/core,
// csrc/python and test/cpp all read it; each consumer defines X to pick the
// columns it needs (the pattern of c10's AT_FORALL_SCALAR_TYPES), so a
// column it does not use (a torch or NumPy name) is never expanded.
//
// TORCHBRIDGE_FORALL_NUMPY_DTYPES(X): the dtypes NumPy holds natively and
// .npy files store, each with a torch dtype of the same name. A row:
//   X(Id, name, kind, size, Torch, Npy)
//   Id     format::DType::k<Id>
//   name   the name NumPy and torch share ("float32"): dtype_name
//   kind   the .npy descr's kind character; the descr is byte order + kind +
//          size ("<f4", "|b1", "<c16"), see format::native_descr
//   size   the item size in bytes
//   Torch  the torch dtype, c10::ScalarType::<Torch>
//   Npy    the NumPy type number, NPY_<Npy> (csrc/python only)
// Rows are in format::DType's order, which is the order of its enumerators.
#define TORCHBRIDGE_FORALL_NUMPY_DTYPES(X)                   \
  X(Bool, "bool", 'b', 1, Bool, BOOL)                        \
  X(Int8, "int8", 'i', 1, Char, INT8)                        \
  X(Int16, "int16", 'i', 2, Short, INT16)                    \
  X(Int32, "int32", 'i', 4, Int, INT32)                      \
  X(Int64, "int64", 'i', 8, Long, INT64)                     \
  X(UInt8, "uint8", 'u', 1, Byte, UINT8)                     \
  X(UInt16, "uint16", 'u', 2, UInt16, UINT16)                \
  X(UInt32, "uint32", 'u', 4, UInt32, UINT32)                \
  X(UInt64, "uint64", 'u', 8, UInt64, UINT64)                \
  X(Float16, "float16", 'f', 2, Half, HALF)                  \
  X(Float32, "float32", 'f', 4, Float, FLOAT32)              \
  X(Float64, "float64", 'f', 8, Double, FLOAT64)             \
  X(Complex64, "complex64", 'c', 8, ComplexFloat, COMPLEX64) \
  X(Complex128, "complex128", 'c', 16, ComplexDouble, COMPLEX128)

// TORCHBRIDGE_FORALL_ML_DTYPES(X): torch dtypes NumPy holds only through
// ml_dtypes (user dtypes, numbered at import, so looked up by name; .npy
// files have no descr for them). A row: X(name, Torch), the name being
// ml_dtypes' attribute and torch's dtype name alike.
#define TORCHBRIDGE_FORALL_ML_DTYPES(X)    \
  X("bfloat16", BFloat16)                  \
  X("float8_e4m3fn", Float8_e4m3fn)        \
  X("float8_e5m2", Float8_e5m2)            \
  X("float8_e4m3fnuz", Float8_e4m3fnuz)    \
  X("float8_e5m2fnuz", Float8_e5m2fnuz)    \
  X("float8_e8m0fnu", Float8_e8m0fnu)

namespace torchbridge::format {

// The dtypes torchbridge reads and writes in .npy files: one per row of
// TORCHBRIDGE_FORALL_NUMPY_DTYPES, in its order.
enum class DType : unsigned char {
#define TORCHBRIDGE_DTYPE_ENUM(Id, name, kind, size, Torch, Npy) k##Id,
  TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_ENUM)
#undef TORCHBRIDGE_DTYPE_ENUM
};

}  // namespace torchbridge::format
