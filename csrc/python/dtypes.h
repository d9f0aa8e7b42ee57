#pragma once
// NumPy dtype <-> torch dtype, ml_dtypes included, and the parsing of the
// `dtype=` / `device=` arguments of the Python API.

#include "numpy.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <optional>
#include <string>

namespace torchbridge::python {

// The torch dtype with the same bits as `d` (byte order aside), or nullopt
// when torch has none (object, str, longdouble, ...).
std::optional<at::ScalarType> scalar_type_of(PyArray_Descr* d);

// The NumPy descriptor for `t` (a new reference), using ml_dtypes for
// bfloat16/float8 when it is installed; nullptr when NumPy has none.
PyArray_Descr* descr_of(at::ScalarType t);

// Throws TypeError saying why arrays of dtype `d` have no tensor form and
// what to do instead. With `arr`, object arrays are inspected to name the
// element whose shape differs.
[[noreturn]] void raise_unsupported_dtype(PyArray_Descr* d, const char* api,
                                          PyArrayObject* arr);

// Throws TypeError for a ragged nested sequence, naming the first element
// whose shape differs; returns normally when `seq` is not ragged.
void check_not_ragged(PyObject* seq, const char* api);

// str(obj), for messages.
std::string py_str(PyObject* obj);

// `dtype=` of to_tensor / to_host: a torch dtype, a NumPy dtype (or type,
// e.g. np.float32, float) or a name ("float32", "bfloat16"). None -> nullopt.
std::optional<at::ScalarType> parse_torch_dtype(PyObject* o, const char* api,
                                                const char* arg);

// `dtype=` of to_numpy: a NumPy dtype, its name, or a torch dtype. Returns a
// new reference, or nullptr for None.
PyArray_Descr* parse_numpy_dtype(PyObject* o, const char* api);

// `device=`: None, torch.device, "cuda:1", or an int (a CUDA index).
std::optional<at::Device> parse_device(PyObject* o, const char* api);

}  // namespace torchbridge::python
