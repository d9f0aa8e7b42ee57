// scipy.sparse -> SparseView: translation only. The matrix's parts (format,
// shape, indptr/indices/data or coordinate arrays) become ArrayViews that
// hold references to those ndarrays; core (core/sparse.cpp) validates,
// decides what to share, canonicalises and builds the tensor. SciPy is
// never imported: an input is recognised by its type's module.

#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/sparse.h"

#include <torchbridge/sparse.h>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/object_ptr.h>

#include <string>
#include <vector>

namespace torchbridge::python {
namespace {

THPObjectPtr attr(PyObject* obj, const char* name) {
  THPObjectPtr a(PyObject_GetAttrString(obj, name));
  if (!a) throw python_error();
  return a;
}

std::string type_name(PyObject* obj) { return Py_TYPE(obj)->tp_name; }

// The ndarray m.<name> (a strong reference, so another thread rebinding
// the attribute meanwhile cannot free what the conversion reads).
THPObjectPtr array_attr(PyObject* m, const char* name, const char* shown) {
  THPObjectPtr a = attr(m, name);
  TORCH_CHECK_TYPE(PyArray_Check(a.get()), "to_tensor: the scipy.sparse ", type_name(m),
      "'s ", shown, " is a ", type_name(a.get()), ", not an ndarray; rebuild the "
      "matrix from ndarrays.");
  return a;
}

}  // namespace

bool is_scipy_sparse(PyObject* obj) {
  // "scipy.sparse._csr", ...: subclasses of SciPy's classes count.
  return defined_in(obj, "scipy.sparse");
}

at::Tensor scipy_to_tensor(PyObject* obj, const ToTensorOptions& o, const char* api) {
  ToTensorOptions opts = o;
  THPObjectPtr m(obj);
  Py_INCREF(obj);
  std::string fmt = py_str(attr(obj, "format").get());
  const int64_t ndim = PyLong_AsLongLong(attr(obj, "ndim").get());
  if (ndim == -1 && PyErr_Occurred()) throw python_error();
  const bool compressed = (fmt == "csr" || fmt == "csc") && ndim == 2;
  if (!compressed && fmt != "coo") {
    // BSR, DIA, LIL, DOK (and 1-D CSR, which torch's 2-D CSR cannot hold)
    // go through SciPy's own conversion: a copy.
    const char* via = (fmt == "csr" || fmt == "csc") ? "tocoo" : "tocsr";
    TORCH_CHECK_VALUE(!(o.copy.has_value() && !*o.copy), api, "(copy=False): a scipy.sparse ",
        type_name(obj), " (format '", fmt, "'", ndim != 2 ? ", " + std::to_string(ndim) + "-D" : "",
        ") has no torch layout of its own, so it converts through m.", via,
        "(), which copies; pass copy=None, or convert it yourself first.");
    m = THPObjectPtr(PyObject_CallMethod(obj, via, nullptr));
    if (!m) throw python_error();
    fmt = py_str(attr(m.get(), "format").get());
    TORCH_CHECK_TYPE(fmt == "csr" || fmt == "coo", api, ": m.", via, "() of the scipy.sparse ",
        type_name(obj), " gave format '", fmt, "'; convert it to CSR or COO yourself first.");
    // Its buffers are fresh and nobody else's: copy=True needs no second copy.
    if (opts.copy.value_or(false)) opts.copy.reset();
  }
  SparseView v;
  v.layout = fmt == "csr" ? at::kSparseCsr : fmt == "csc" ? at::kSparseCsc : at::kSparse;
  {
    THPObjectPtr shape = attr(m.get(), "shape");
    THPObjectPtr seq(PySequence_Tuple(shape.get()));
    if (!seq) throw python_error();
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(seq.get()); ++i) {
      const long long d = PyLong_AsLongLong(PyTuple_GET_ITEM(seq.get(), i));
      if (d == -1 && PyErr_Occurred()) throw python_error();
      v.shape.push_back(d);
    }
  }
  // Index arrays take no dtype= (indices are never cast by the policy).
  const ToTensorOptions index_opts;
  std::vector<THPObjectPtr> arrays, keep;
  auto add_index = [&](THPObjectPtr a) {
    keep.emplace_back();
    v.indices.push_back(array_view(reinterpret_cast<PyArrayObject*>(a.get()), index_opts,
                                   /*own=*/true, /*fresh=*/false, keep.back()));
    arrays.push_back(std::move(a));
  };
  if (v.layout != at::kSparse) {
    add_index(array_attr(m.get(), "indptr", "indptr"));
    add_index(array_attr(m.get(), "indices", "indices"));
  } else if (PyObject_HasAttrString(m.get(), "coords")) {
    // SciPy >= 1.13: one array per dimension (any rank).
    THPObjectPtr coords = attr(m.get(), "coords");
    THPObjectPtr seq(PySequence_Tuple(coords.get()));
    if (!seq) throw python_error();
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(seq.get()); ++i) {
      PyObject* a = PyTuple_GET_ITEM(seq.get(), i);
      TORCH_CHECK_TYPE(PyArray_Check(a), api, ": the scipy.sparse ", type_name(m.get()),
          "'s coords[", std::to_string(i), "] is a ", type_name(a), ", not an ndarray; "
          "rebuild the matrix from ndarrays.");
      Py_INCREF(a);
      add_index(THPObjectPtr(a));
    }
  } else {
    add_index(array_attr(m.get(), "row", "row"));
    add_index(array_attr(m.get(), "col", "col"));
  }
  THPObjectPtr data = array_attr(m.get(), "data", "data");
  keep.emplace_back();
  v.values = array_view(reinterpret_cast<PyArrayObject*>(data.get()), opts, /*own=*/true,
                        /*fresh=*/false, keep.back());
  int64_t bytes = v.values.numel() * v.values.dtype.itemsize;
  for (const auto& i : v.indices) bytes += i.numel() * i.dtype.itemsize;
  at::Tensor out;
  {
    // The views hold the arrays: another thread may rebind m's attributes
    // meanwhile; writes into the arrays themselves are caught by core's
    // checks where they could break the result (or they are writes to the
    // shared tensor, as after the call).
    GilRelease nogil((opts.device && !opts.device->is_cpu()) || bytes >= kReleaseGilBytes);
    out = detail::sparse_to_tensor(v, opts, api);
  }
  return out;  // `v` (which may still own arrays) dies with the GIL held
}

}  // namespace torchbridge::python
