// ndarray (or array-like) -> tensor: tb.to_tensor. Translation only: an
// ndarray becomes an ArrayView, and core (core/array_view.cpp) decides
// whether to share, copies, uploads and names what blocks copy=False.

#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/internal.h"

#include <torchbridge/array_view.h>

#include <ATen/ATen.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <string>
#include <vector>

namespace torchbridge::python {
namespace {

constexpr const char* kApi = "to_tensor";
constexpr const char* kBuiltByNumPy =
    "NumPy had to build a new array from it, as for Python lists and scalars";

// NumPy's name of its long double types on this platform, for copy=False.
const char* long_double_name(PyArray_Descr* d) {
  const bool complex = d->type_num == NPY_CLONGDOUBLE;
  switch (PyDataType_ELSIZE(d)) {
    case 8: return complex ? "clongdouble" : "longdouble";
    case 12: return complex ? "complex192" : "float96";
    case 16: return complex ? "complex256" : "float128";
    case 32: return "complex256";
    default: return complex ? "clongdouble" : "longdouble";
  }
}

// For a dtype torch lacks: returns when it is long double with dtype= (which
// NumPy casts); anything else raises TypeError with its reason and fix.
void check_long_double_cast(PyArray_Descr* d, const ToTensorOptions& o, PyArrayObject* arr) {
  const bool long_double = d->type_num == NPY_LONGDOUBLE || d->type_num == NPY_CLONGDOUBLE;
  if (o.dtype) detail::check_target_dtype(*o.dtype, kApi);
  if (!long_double || !o.dtype) raise_unsupported_dtype(d, kApi, arr);
}

bool worth_releasing(const ArrayView& v, const ToTensorOptions& o) {
  return (o.device && !o.device->is_cpu()) ||
         v.numel() * v.dtype.itemsize >= kReleaseGilBytes;
}

// A list or tuple whose items are all ndarrays: stacked in one copy.
bool is_array_sequence(PyObject* obj) {
  if (!PyList_Check(obj) && !PyTuple_Check(obj)) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
  if (n == 0) return false;
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!PyArray_Check(PySequence_Fast_GET_ITEM(obj, i))) return false;
  return true;
}

at::Tensor array_to_tensor(PyArrayObject* arr, const ToTensorOptions& o, bool fresh) {
  THPObjectPtr keep;
  ArrayView v = array_view(arr, o, /*own=*/true, fresh, keep);
  at::Tensor out;
  {
    GilRelease nogil((o.device && !o.device->is_cpu()) ||
                     PyArray_NBYTES(arr) >= kReleaseGilBytes);
    out = detail::to_tensor(v, o, kApi);
  }
  return out;  // `v` (which may still own the array) dies with the GIL held
}

at::Tensor stack_arrays(PyObject* seq, const ToTensorOptions& o) {
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  std::vector<PyArrayObject*> arrays(n);
  for (Py_ssize_t i = 0; i < n; ++i)
    arrays[i] = reinterpret_cast<PyArrayObject*>(PySequence_Fast_GET_ITEM(seq, i));
  for (Py_ssize_t i = 1; i < n; ++i) {
    if (!PyArray_SAMESHAPE(arrays[0], arrays[i])) check_not_ragged(seq, kApi);
  }
  // The common type is NumPy's (result_type), as np.stack would pick.
  PyArray_Descr* common = PyArray_ResultType(n, arrays.data(), 0, nullptr);
  if (!common) throw python_error();
  THPObjectPtr common_ref(reinterpret_cast<PyObject*>(common));
  auto st = scalar_type_of(common);
  if (!st) {
    // Long double items are cast by NumPy one by one (below).
    check_long_double_cast(common, o, nullptr);
    st = *o.dtype;
  }
  std::vector<THPObjectPtr> keep(n);
  std::vector<ArrayView> views;
  views.reserve(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    // The caller's tuple snapshot holds every array: views borrow them.
    views.push_back(array_view(arrays[i], o, /*own=*/false, false, keep[i]));
  }
  int64_t bytes = 0;
  for (const auto& v : views) bytes += v.numel() * v.dtype.itemsize;
  GilRelease nogil((o.device && !o.device->is_cpu()) || bytes >= kReleaseGilBytes);
  return detail::stack(views, *st, o, kApi);
}

at::Tensor convert(PyObject* obj, const ToTensorOptions& o) {
  if (PyArray_Check(obj))
    return array_to_tensor(reinterpret_cast<PyArrayObject*>(obj), o, false);
  if (PyArray_IsScalar(obj, Generic)) {
    THPObjectPtr a(PyArray_FromScalar(obj, nullptr));
    if (!a) throw python_error();
    return array_to_tensor(reinterpret_cast<PyArrayObject*>(a.get()), o, true);
  }
  if (is_array_sequence(obj)) {
    // The copies drop the GIL: another thread may then empty or refill the
    // list. A tuple snapshot holds every array for the whole stacking.
    THPObjectPtr items(PySequence_Tuple(obj));
    if (!items) throw python_error();
    return stack_arrays(items.get(), o);
  }
  if (holds_tensor(obj)) return stack_tensors(obj, o, kApi);
  if (is_scipy_sparse(obj)) return scipy_to_tensor(obj, o, kApi);
  // Tables and columns before DLPack: pyarrow arrays have __dlpack__ too,
  // but only the Arrow path knows their nulls and dictionaries.
  if (is_pandas(obj)) {
    if (auto t = pandas_to_tensor(obj, o, kApi, nullptr)) return *t;
  } else if (is_arrow_producer(obj)) {
    return arrow_to_tensor(obj, o, kApi, nullptr);
  }
  if (is_dlpack_producer(obj)) {
    if (auto v = dlpack_view(obj, kApi)) {
      at::Tensor out;
      {
        GilRelease nogil(!v->device.is_cpu() || worth_releasing(*v, o));
        out = detail::to_tensor(*v, o, kApi);
      }
      return out;  // `v` (which may still own the buffer) dies with the GIL held
    }
  }
  bool fresh = false;
  THPObjectPtr a = as_array(obj, kApi, fresh);
  return array_to_tensor(reinterpret_cast<PyArrayObject*>(a.get()), o, fresh);
}

}  // namespace

ArrayView array_view(PyArrayObject* arr, const ToTensorOptions& o, bool own,
                     bool fresh, THPObjectPtr& keep) {
  PyArray_Descr* d = PyArray_DESCR(arr);
  auto st = scalar_type_of(d);
  const char* cast_from = nullptr;
  if (!st) {
    // NumPy casts long double to the requested dtype (one rounding).
    check_long_double_cast(d, o, arr);
    PyArray_Descr* to = descr_of(*o.dtype);
    if (!to) to = PyArray_DescrFromType(d->type_num == NPY_CLONGDOUBLE ? NPY_CDOUBLE : NPY_DOUBLE);
    cast_from = long_double_name(d);
    keep = THPObjectPtr(PyArray_FromArray(
        arr, to, NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST | NPY_ARRAY_ENSURECOPY));
    if (!keep) throw python_error();
    arr = reinterpret_cast<PyArrayObject*>(keep.get());
    d = PyArray_DESCR(arr);
    st = scalar_type_of(d);
    own = false;  // `keep` holds it for the caller
  }
  ArrayView v;
  v.data = PyArray_DATA(arr);
  const int nd = PyArray_NDIM(arr);
  // Element by element: assign() goes through memmove, a call per axis
  // list that costs more than the copy on this path.
  v.shape.resize_for_overwrite(nd);
  v.strides.resize_for_overwrite(nd);
  const npy_intp* dims = PyArray_DIMS(arr);
  const npy_intp* strides = PyArray_STRIDES(arr);
  for (int i = 0; i < nd; ++i) {
    v.shape[i] = dims[i];
    v.strides[i] = strides[i];
  }
  v.dtype.scalar = st;
  v.dtype.itemsize = PyDataType_ELSIZE(d);
  v.dtype.swapped = v.dtype.itemsize > 1 && !PyArray_ISNBO(d->byteorder);
  v.writable = PyArray_ISWRITEABLE(arr);
  v.temporary = fresh;
  v.temporary_from = kBuiltByNumPy;
  v.cast_from = cast_from;
  if (own) {
    Py_INCREF(arr);  // released with the tensor's storage, or with the view
    v.owner = BufferOwner(arr, &release_pyobject);
  }
  return v;
}

// np.asarray(obj), with a TypeError naming the element of a ragged list.
// `fresh` tells whether NumPy built new memory (nothing to share).
THPObjectPtr as_array(PyObject* obj, const char* api, bool& fresh) {
  PyObject* a = PyArray_FromAny(obj, nullptr, 0, 0, 0, nullptr);
  if (!a) {
    if ((PyList_Check(obj) || PyTuple_Check(obj)) &&
        PyErr_ExceptionMatches(PyExc_ValueError)) {
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      try {
        check_not_ragged(obj, api);
      } catch (...) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        throw;
      }
      PyErr_Restore(type, value, tb);
    }
    throw python_error();
  }
  auto* arr = reinterpret_cast<PyArrayObject*>(a);
  // Fresh memory: NumPy's own allocation that nothing else references.
  fresh = Py_REFCNT(a) == 1 && PyArray_BASE(arr) == nullptr &&
          PyArray_CHKFLAGS(arr, NPY_ARRAY_OWNDATA) && a != obj;
  return THPObjectPtr(a);
}

PyObject* ndarray_to_tensor(PyArrayObject* arr, const ToTensorOptions& o) {
  return THPVariable_Wrap(array_to_tensor(arr, o, false));
}

PyObject* to_tensor(PyObject* obj, const ToTensorOptions& o) {
  at::Tensor result;
  // ndarrays first: THPVariable_Check on a non-tensor falls through to a
  // full isinstance() against torch.Tensor's metaclass, which costs more
  // than the rest of the zero-copy path.
  if (!PyArray_Check(obj) && THPVariable_Check(obj)) {
    const at::Tensor& t = THPVariable_Unpack(obj);
    {
      GilRelease nogil(o.device.has_value() || worth_releasing_gil(t));
      result = detail::coerce(t, o, kApi);
    }
    if (!o.requires_grad && result.unsafeGetTensorImpl() ==
                                t.unsafeGetTensorImpl()) {
      Py_INCREF(obj);  // nothing changed: the same object, as torch.as_tensor
      return obj;
    }
  } else {
    result = convert(obj, o);
  }
  return THPVariable_Wrap(std::move(result));
}

}  // namespace torchbridge::python
