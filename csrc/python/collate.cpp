// _collate_stack: the stacking step of tb.collate (torchbridge/_collate.py
// walks the samples; this file stacks the leaves found at one key path).
// Translation only: every sample's array, NumPy scalar or CPU tensor
// becomes an ArrayView, the output comes from the caller's allocator
// (shared memory in a DataLoader worker, pinned memory, or ours), and core
// (detail::stack_into) fills it in one pass with the float policy applied.

#include "args.h"
#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/internal.h"
#include "../format/util.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <string>
#include <vector>

namespace torchbridge::python {
namespace {

constexpr const char* kApi = "collate";

// A CPU tensor whose memory a view may borrow for the stacking copy: dense
// or strided with readable storage, no conj/neg bit, no graph to keep, a
// dtype the copy handles. Others (device, sparse, requires_grad) are
// stacked by torch (stack_tensors), which keeps their graph.
bool viewable(const at::Tensor& t) {
  if (!t.defined() || !t.is_cpu() || t.layout() != at::kStrided || t.is_quantized() ||
      t.is_nested() || t.is_conj() || t.is_neg() || !detail::has_readable_storage(t))
    return false;
  if (t.requires_grad() && at::GradMode::is_enabled()) return false;
  const auto st = t.scalar_type();
  return c10::isIntegralType(st, /*includeBool=*/true) || c10::isFloatingType(st) ||
         c10::isComplexType(st);
}

ArrayView tensor_view(const at::Tensor& t) {
  ArrayView v;
  v.data = t.data_ptr();
  const int64_t item = static_cast<int64_t>(t.element_size());
  const int nd = static_cast<int>(t.dim());
  v.shape.resize_for_overwrite(nd);
  v.strides.resize_for_overwrite(nd);
  for (int i = 0; i < nd; ++i) {
    v.shape[i] = t.size(i);
    v.strides[i] = t.stride(i) * item;
  }
  v.dtype.scalar = t.scalar_type();
  v.dtype.itemsize = item;
  return v;
}

std::string kind_of(PyObject* o) {
  if (PyArray_Check(o)) return "an array";
  if (PyArray_IsScalar(o, Generic)) return "a NumPy scalar";
  if (THPVariable_Check(o)) return "a tensor";
  return std::string("a ") + Py_TYPE(o)->tp_name;
}

c10::SmallVector<int64_t, 6> shape_of(PyObject* o, const at::Tensor* t) {
  if (t) return c10::SmallVector<int64_t, 6>(t->sizes().begin(), t->sizes().end());
  if (PyArray_Check(o)) {
    auto* a = reinterpret_cast<PyArrayObject*>(o);
    return c10::SmallVector<int64_t, 6>(PyArray_DIMS(a), PyArray_DIMS(a) + PyArray_NDIM(a));
  }
  return {};  // a NumPy scalar
}

// Calls the caller's allocator(shape, dtype) and checks what it returns.
at::Tensor allocate(PyObject* alloc, const std::vector<int64_t>& shape,
                    at::ScalarType dtype) {
  THPObjectPtr dims(PyTuple_New(static_cast<Py_ssize_t>(shape.size())));
  if (!dims) throw python_error();
  for (size_t i = 0; i < shape.size(); ++i) {
    PyObject* d = PyLong_FromLongLong(shape[i]);
    if (!d) throw python_error();
    PyTuple_SET_ITEM(dims.get(), static_cast<Py_ssize_t>(i), d);
  }
  PyObject* dt = reinterpret_cast<PyObject*>(torch::getTHPDtype(dtype));
  THPObjectPtr r(PyObject_CallFunctionObjArgs(alloc, dims.get(), dt, nullptr));
  if (!r) throw python_error();
  TORCH_CHECK_TYPE(THPVariable_Check(r.get()), kApi,
      ": the output allocator returned ", Py_TYPE(r.get())->tp_name,
      "; it must return a torch.Tensor.");
  at::Tensor out = THPVariable_Unpack(r.get());
  TORCH_CHECK_VALUE(out.is_cpu() && out.layout() == at::kStrided && out.is_contiguous() &&
                    out.scalar_type() == dtype && out.sizes() == at::IntArrayRef(shape),
      kApi, ": the output allocator must return a contiguous CPU tensor of shape ",
      format::tuple_str(shape), " and dtype ", dtype_name(dtype), ", not one of shape ",
      format::tuple_str(out.sizes()), " and dtype ", dtype_name(out.scalar_type()),
      " on ", out.device().str(), ".");
  return out;
}

PyObject* py_collate_stack(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                           PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<4> sig("_collate_stack",
                                {"items", "where", "float_dtype", "alloc"}, 4, 3);
  std::array<PyObject*, 4> a;
  sig.parse(args, nargs, kwnames, a);
  drain_pending_releases();
  TORCH_CHECK_TYPE(PyList_Check(a[0]) || PyTuple_Check(a[0]),
                   "_collate_stack expects a list of samples' leaves");
  TORCH_CHECK_TYPE(PyUnicode_Check(a[1]), "_collate_stack: where must be a str");
  const std::string where = py_str(a[1]);
  ToTensorOptions o;
  o.float_dtype = parse_torch_dtype(a[2], kApi, "float_dtype");
  PyObject* alloc = a[3] && a[3] != Py_None ? a[3] : nullptr;

  // Conversions drop the GIL: a snapshot holds every item for the stacking.
  THPObjectPtr snap(PySequence_Tuple(a[0]));
  if (!snap) throw python_error();
  const Py_ssize_t n = PyTuple_GET_SIZE(snap.get());
  TORCH_CHECK_VALUE(n > 0, kApi, ": cannot stack ", where, ": there are no samples.");

  std::vector<at::Tensor> tensors(n);  // tensor items (undefined for arrays)
  std::vector<THPObjectPtr> keep(n);   // NumPy scalars' temporary arrays
  bool by_torch = false;               // a tensor that torch must stack
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyTuple_GET_ITEM(snap.get(), i);
    if (PyArray_Check(item)) {
      PyArray_Descr* d = PyArray_DESCR(reinterpret_cast<PyArrayObject*>(item));
      TORCH_CHECK_TYPE(scalar_type_of(d).has_value(), kApi, ": cannot stack ", where,
          ": sample [", std::to_string(i), "] is an array of dtype ",
          py_str(reinterpret_cast<PyObject*>(d)), ", which has no tensor form; convert "
          "it to a numeric array in the dataset (text: return a Python str, which "
          "collate gathers into a list).");
    } else if (PyArray_IsScalar(item, Generic)) {
      keep[i] = THPObjectPtr(PyArray_FromScalar(item, nullptr));
      if (!keep[i]) throw python_error();
      PyArray_Descr* d = PyArray_DESCR(reinterpret_cast<PyArrayObject*>(keep[i].get()));
      TORCH_CHECK_TYPE(scalar_type_of(d).has_value(), kApi, ": cannot stack ", where,
          ": sample [", std::to_string(i), "] is a NumPy scalar of dtype ",
          py_str(reinterpret_cast<PyObject*>(d)), ", which has no tensor form.");
    } else if (THPVariable_Check(item)) {
      tensors[i] = THPVariable_Unpack(item);
      by_torch |= !viewable(tensors[i]);
    } else {
      PyObject* first = PyTuple_GET_ITEM(snap.get(), 0);
      TORCH_CHECK_TYPE(false, kApi, ": cannot stack ", where, ": sample [",
          std::to_string(i), "] is ", kind_of(item), ", but sample [0] is ", kind_of(first),
          "; every sample must hold the same kind of value at each key.");
    }
  }
  const auto shape0 = shape_of(PyTuple_GET_ITEM(snap.get(), 0),
                               tensors[0].defined() ? &tensors[0] : nullptr);
  for (Py_ssize_t i = 1; i < n; ++i) {
    const auto shape = shape_of(PyTuple_GET_ITEM(snap.get(), i),
                                tensors[i].defined() ? &tensors[i] : nullptr);
    TORCH_CHECK_VALUE(shape == shape0, kApi, ": cannot stack ", where, ": sample [",
        std::to_string(i), "] has shape ", format::tuple_str(shape), ", but sample [0] "
        "has shape ", format::tuple_str(shape0), "; samples stack only when their shapes "
        "are equal (pad or crop them in the dataset, or keep this key out of the batch).");
  }
  if (by_torch) {
    // Device, sparse or grad-carrying tensors: torch stacks them (graph
    // kept), under the same policy.
    at::Tensor out = stack_tensors(snap.get(), o, kApi);
    return THPVariable_Wrap(std::move(out));
  }

  std::vector<ArrayView> views;
  views.reserve(n);
  at::ScalarType common = at::kBool;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (tensors[i].defined()) {
      views.push_back(tensor_view(tensors[i]));
    } else {
      PyObject* item = keep[i] ? keep[i].get() : PyTuple_GET_ITEM(snap.get(), i);
      THPObjectPtr unused;
      views.push_back(array_view(reinterpret_cast<PyArrayObject*>(item), o,
                                 /*own=*/false, false, unused));
    }
    if (i == 0) {
      common = *views[0].dtype.scalar;
      continue;
    }
    const auto st = *views[i].dtype.scalar;
    // torch.stack's promotion (what default_collate does), but c10's error
    // for pairs it refuses (uint64 with int64) names neither key nor fix.
    bool ok = true;
    try {
      common = c10::promoteTypes(common, st);
    } catch (const c10::Error&) {
      ok = false;
    }
    TORCH_CHECK_TYPE(ok, kApi, ": cannot stack ", where, ": sample [", std::to_string(i),
        "] is ", dtype_name(st), " and the samples before it are ", dtype_name(common),
        ", which torch does not promote to a common dtype; give every sample the "
        "same dtype in the dataset.");
  }
  const auto target = detail::target_dtype(common, o, kApi);
  std::vector<int64_t> shape{static_cast<int64_t>(n)};
  shape.insert(shape.end(), shape0.begin(), shape0.end());
  at::Tensor out = alloc ? allocate(alloc, shape, target)
                         : detail::empty_host(shape, format::contiguous_strides<std::vector<int64_t>>(
                                                         shape, true),
                                              target);
  {
    GilRelease nogil(static_cast<int64_t>(out.nbytes()) >= kReleaseGilBytes);
    detail::stack_into(views, common, out, kApi);
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

PyMethodDef collate_methods[] = {
    {"_collate_stack", reinterpret_cast<PyCFunction>(py_collate_stack),
     METH_FASTCALL | METH_KEYWORDS,
     "_collate_stack(items, where, float_dtype, alloc=None)\n\n"
     "Stack the samples' leaves at one key path in one copy, the float policy "
     "applied in it; alloc(shape, dtype) -> Tensor gives the output (private)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

void init_collate(PyObject* module) {
  if (PyModule_AddFunctions(module, collate_methods) < 0) throw python_error();
}

}  // namespace torchbridge::python
