#pragma once
// The NumPy <-> tensor bridge of the Python extension.

#include "numpy.h"
#include "pyref.h"  // GilRelease

#include <torchbridge/array_view.h>
#include <torchbridge/arrow.h>
#include <torchbridge/columns.h>
#include <torchbridge/core.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/csrc/utils/object_ptr.h>

#include <optional>
#include <string>
#include <vector>

namespace torchbridge::python {

// Arrays at least this large are copied with the GIL released, so other
// Python threads run meanwhile; below it the release costs more than it buys.
constexpr int64_t kReleaseGilBytes = int64_t{1} << 18;

// Whether converting `t` touches enough bytes (or a device) to be worth
// dropping the GIL. Counts numel() * element_size(), not nbytes(): nbytes()
// throws for sparse COO tensors ("nbytes is not defined for sparse tensors").
inline bool worth_releasing_gil(const at::Tensor& t) {
  return t.defined() &&
         (!t.device().is_cpu() ||
          t.numel() * static_cast<int64_t>(t.element_size()) >= kReleaseGilBytes);
}

// to_tensor's options are core's (dtype, float_dtype, device, copy,
// pin_memory, non_blocking, requires_grad).
using ToTensorOptions = CoerceOptions;

// tb.to_tensor. Returns a new reference.
PyObject* to_tensor(PyObject* obj, const ToTensorOptions& o);

// tb.to_tensor of an ndarray (the per-call path, without the dispatch).
PyObject* ndarray_to_tensor(PyArrayObject* arr, const ToTensorOptions& o);

// tb.to_numpy; `dtype` is borrowed and may be null. Returns a new reference.
PyObject* to_numpy(PyObject* obj, PyArray_Descr* dtype,
                   std::optional<bool> copy);

// An ndarray viewing `t` (a dense CPU tensor) whose base keeps t's storage
// alive; makes the storage non-resizable so the array's pointer stays valid.
// Steals `descr`. Returns a new reference.
PyObject* export_tensor(const at::Tensor& t, PyArray_Descr* descr);

// The ArrayView of an ndarray (the translation every ndarray conversion
// starts with). With `own` the view holds a reference to `arr` (the tensor
// takes it over when it shares the memory; released GIL-safely). `fresh`:
// NumPy built the array for this call. Types torch lacks: long double with
// o.dtype is cast by NumPy first (`keep` then holds the cast array, which
// the view borrows); anything else raises TypeError naming the fix.
ArrayView array_view(PyArrayObject* arr, const ToTensorOptions& o, bool own,
                     bool fresh, THPObjectPtr& keep);

// DLPack producers (dlpack.cpp): whether `obj` has __dlpack__ (lists,
// numbers, str, dicts and None are never asked), and its view: DLPack 1.x
// first (max_version=(1, 0), which carries the read-only flag), the old
// protocol when the producer rejects the keyword; CUDA producers get the
// current stream. nullopt when the producer refuses this buffer but has an
// array form (__array__, __array_interface__, the buffer protocol) to use
// instead.
bool is_dlpack_producer(PyObject* obj);
std::optional<ArrayView> dlpack_view(PyObject* obj, const char* api);

// Tables and columns. pandas (pandas.cpp): whether `obj`'s type (or a base)
// comes from pandas, and its tensor through torchbridge/_pandas.py (nullopt
// for pandas objects that hold no values, such as a Timestamp). Arrow
// (arrow.cpp): whether `obj`'s type has __arrow_c_array__ or
// __arrow_c_stream__, and its tensor. `shared_readonly` (may be null) tells
// whether the result shares a read-only buffer (to_numpy then marks its
// array read-only).
bool is_pandas(PyObject* obj);
std::optional<at::Tensor> pandas_to_tensor(PyObject* obj, const ToTensorOptions& o,
                                           const char* api, bool* shared_readonly);
bool is_arrow_producer(PyObject* obj);
at::Tensor arrow_to_tensor(PyObject* obj, const ToTensorOptions& o, const char* api,
                           bool* shared_readonly);
// The Arrow producer's columns (`what` names it in errors), and columns to
// a tensor with the GIL released for large gathers.
arrow::Table arrow_table(PyObject* obj, const std::string& what, const char* api);
at::Tensor columns_tensor(std::vector<Column>& columns, const ColumnsOptions& layout,
                          const ToTensorOptions& o, const char* api, bool* shared_readonly);
// "the Table" for a pyarrow.lib.Table: what errors call an input.
std::string type_words(PyObject* obj);

// Batched conversions for tree_to_tensor / tree_to_numpy (batch.cpp):
// `leaves` is a list; returns a list of the same length.
PyObject* to_tensor_batch(PyObject* leaves, const ToTensorOptions& o);
PyObject* to_numpy_batch(PyObject* leaves, PyArray_Descr* dtype,
                         std::optional<bool> copy);

// Whether `obj` is a list or tuple holding a tensor (at any depth of nested
// lists/tuples): such sequences are stacked by torch, not by NumPy.
bool holds_tensor(PyObject* obj);

// Stacks such a sequence with at::stack (batch.cpp): the autograd graph and
// dtypes NumPy lacks (bfloat16) are kept; arrays and numbers among the items
// convert by to_tensor's rules first. dtype/float_dtype/device/pin_memory/
// non_blocking follow coerce; copy=False raises (a stack is a copy). Equal
// shapes are required (ValueError naming the element otherwise).
at::Tensor stack_tensors(PyObject* seq, const ToTensorOptions& o,
                         const char* api);

// np.asarray(obj), with a TypeError naming the element of a ragged list.
// `fresh` tells whether NumPy built new memory (nothing to share).
THPObjectPtr as_array(PyObject* obj, const char* api, bool& fresh);

// scipy.sparse (sparse.cpp): whether `obj`'s type (or a base) comes from a
// scipy.sparse module (SciPy is never imported), and the torch sparse
// tensor of the same layout by core's rules (other formats through CSR).
bool is_scipy_sparse(PyObject* obj);
at::Tensor scipy_to_tensor(PyObject* obj, const ToTensorOptions& o, const char* api);

// Registers the StorageRef type (the base object of exported arrays).
void init_storage_ref(PyObject* module);

// Adds load() and save(), the .npy/.npz functions (npy.cpp).
void init_npy(PyObject* module);

// Adds _collate_stack, the stacking step of tb.collate (collate.cpp).
void init_collate(PyObject* module);

}  // namespace torchbridge::python
