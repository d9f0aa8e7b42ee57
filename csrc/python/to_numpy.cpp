// tensor (or array-like) -> ndarray: tb.to_numpy.

#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/internal.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <atomic>
#include <new>
#include <string>

namespace torchbridge::python {
namespace {

constexpr const char* kApi = "to_numpy";

// Shared ownership of a storage's memory. Tensor.share_memory_() (like
// anything that calls StorageImpl::set_data_ptr) swaps new memory into the
// storage and frees the old, which an exported array still points at
// (torch's own Tensor.numpy() has that hole). The first export moves the
// storage's DataPtr into this refcounted holder; the storage and every
// StorageRef hold references, so the memory lives until all let go.
struct SharedMemory {
  std::atomic<int64_t> refs{1};
  c10::DataPtr original;
};

void release_shared(void* ctx) {
  auto* m = static_cast<SharedMemory*>(ctx);
  if (m->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete m;
}

// Only memory whose deleter nobody else inspects is moved into a holder:
// torch's CPU allocator and NumPy-backed storages (ours). Pinned memory
// (the CUDA host allocator finds its blocks by context), shared memory
// (torch recognises it by its deleter) and foreign deleters stay as they
// are, with torch's hole (README: "Lifetimes").
bool adoptable(const c10::DataPtr& p) {
  static const c10::DeleterFnPtr default_cpu =
      c10::GetDefaultCPUAllocator()->raw_deleter();
  const auto d = p.get_deleter();
  return d && p.get() &&
         (d == default_cpu || d == c10::GetCPUAllocator()->raw_deleter() ||
          d == &release_pyobject);
}

// A new reference to the holder of `s`'s memory, creating it on the first
// export; nullptr when the memory is not adoptable.
SharedMemory* hold_memory(c10::StorageImpl* s) {
  const c10::DataPtr& p = static_cast<const c10::StorageImpl*>(s)->data_ptr();
  if (p.get_deleter() == &release_shared) {
    auto* m = static_cast<SharedMemory*>(p.get_context());
    m->refs.fetch_add(1, std::memory_order_relaxed);
    return m;
  }
  if (!adoptable(p)) return nullptr;
  auto* m = new SharedMemory();  // the storage's reference
  void* data = p.get();
  const auto device = p.device();
  m->original = s->set_data_ptr(c10::DataPtr(data, m, &release_shared, device));
  m->refs.fetch_add(1, std::memory_order_relaxed);  // the StorageRef's
  return m;
}

// The base object of every exported array: it owns a reference to the
// tensor's *storage*, not to the tensor, so Tensor.set_() or the tensor's
// death cannot free memory the array still points at, and a reference to
// the memory itself (SharedMemory), so Tensor.share_memory_() cannot.
struct StorageRef {
  PyObject_HEAD
  c10::Storage storage;
  SharedMemory* memory;  // may be null (memory not adoptable)
};

void storage_ref_dealloc(PyObject* self) {
  // May free a NumPy-backed storage (round trips); its deleter sees the GIL
  // held and releases at once.
  auto* ref = reinterpret_cast<StorageRef*>(self);
  ref->storage.~Storage();
  if (ref->memory) release_shared(ref->memory);
  Py_TYPE(self)->tp_free(self);
}

PyObject* storage_ref_repr(PyObject* self) {
  const auto& s = reinterpret_cast<StorageRef*>(self)->storage;
  return PyUnicode_FromFormat("<torchbridge StorageRef: %zu bytes on %s>",
                              s.nbytes(), s.device().str().c_str());
}

PyObject* storage_ref_nbytes(PyObject* self, void*) {
  return PyLong_FromSize_t(reinterpret_cast<StorageRef*>(self)->storage.nbytes());
}

PyObject* storage_ref_data_ptr(PyObject* self, void*) {
  // The memory the arrays view, even after share_memory_() moved the storage.
  auto* ref = reinterpret_cast<StorageRef*>(self);
  return PyLong_FromVoidPtr(ref->memory ? ref->memory->original.get()
                                        : ref->storage.mutable_data());
}

PyGetSetDef storage_ref_getset[] = {
    {"nbytes", storage_ref_nbytes, nullptr, "Size of the storage in bytes.",
     nullptr},
    {"data_ptr", storage_ref_data_ptr, nullptr,
     "Address of the storage's first byte.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyTypeObject StorageRefType = [] {
  PyTypeObject t{PyVarObject_HEAD_INIT(nullptr, 0)};
  t.tp_name = "torchbridge._C.StorageRef";
  t.tp_basicsize = sizeof(StorageRef);
  t.tp_dealloc = storage_ref_dealloc;
  t.tp_repr = storage_ref_repr;
  t.tp_flags = Py_TPFLAGS_DEFAULT;
  t.tp_doc =
      "Keeps a tensor's storage alive for the NumPy arrays that view it "
      "(their .base).";
  t.tp_getset = storage_ref_getset;
  return t;
}();

PyObject* make_storage_ref(const c10::Storage& s) {
  auto* o = PyObject_New(StorageRef, &StorageRefType);
  if (!o) throw python_error();
  new (&o->storage) c10::Storage(s);
  o->memory = nullptr;
  try {
    o->memory = hold_memory(s.unsafeGetStorageImpl());
  } catch (...) {
    Py_DECREF(o);
    throw;
  }
  return reinterpret_cast<PyObject*>(o);
}

// The shared-memory path applies: a dense CPU tensor with plain bits whose
// storage holds its data (nested tensors report a strided layout but have no
// strides; wrapper subclasses and fake tensors have placeholder storages:
// both go to to_host, which raises ValueError for them).
// ndarray input (or np.asarray's result) with the dtype/copy rules.
PyObject* finish_array(THPObjectPtr arr, PyArray_Descr* want,
                       std::optional<bool> copy, bool fresh) {
  auto* a = reinterpret_cast<PyArrayObject*>(arr.get());
  const bool cast = want && !PyArray_EquivTypes(PyArray_DESCR(a), want);
  const auto how = detail::array_result(
      fresh, cast, copy, kApi,
      "NumPy had to build a new array from it, as for Python lists and scalars", [&] {
        return "casting the array from " +
               py_str(reinterpret_cast<PyObject*>(PyArray_DESCR(a))) + " to " +
               py_str(reinterpret_cast<PyObject*>(want));
      });
  if (how == detail::ArrayResult::kItself) return arr.release();
  if (how == detail::ArrayResult::kCopy) {
    PyObject* c = PyArray_NewCopy(a, NPY_KEEPORDER);
    if (!c) throw python_error();
    return c;
  }
  Py_INCREF(want);  // kCast: NumPy's cast into a new array of the same order
  PyObject* out = PyArray_NewLikeArray(a, NPY_KEEPORDER, want, 0);
  if (!out) throw python_error();
  if (PyArray_CopyInto(reinterpret_cast<PyArrayObject*>(out), a) < 0) {
    Py_DECREF(out);
    throw python_error();
  }
  return out;
}

// np.asarray wraps anything in a 0-d object array (None, a dict, any
// object) and lists of arbitrary objects in object arrays; to_numpy raises
// instead (README, Python API, "Anything in"). Objects whose __array__ gives an object array are
// array-likes and pass; a list passes with an explicit dtype=object.
void check_not_object(PyObject* obj, PyArrayObject* arr, PyArray_Descr* want) {
  if (PyArray_TYPE(arr) != NPY_OBJECT) return;
  const bool seq = PyList_Check(obj) || PyTuple_Check(obj);
  if (!seq && PyArray_NDIM(arr) == 0) {
    const bool mapping = PyDict_Check(obj) || [&] {
      THPObjectPtr abc(PyImport_ImportModule("collections.abc"));
      THPObjectPtr m(abc ? PyObject_GetAttrString(abc.get(), "Mapping") : nullptr);
      const int r = m ? PyObject_IsInstance(obj, m.get()) : -1;
      PyErr_Clear();
      return r == 1;
    }();
    TORCH_CHECK_TYPE(false, kApi, ": got ", Py_TYPE(obj)->tp_name,
        ", which is not a tensor or an array-like, so it has no array form. ",
        mapping ? "For a mapping of tensors, use torchbridge.tree_to_numpy, "
                  "which converts every leaf and keeps the keys."
                : "Pass a tensor, an ndarray, a NumPy scalar, a list of "
                  "numbers, or an object with __array__, __array_interface__ "
                  "or the buffer protocol (containers: "
                  "torchbridge.tree_to_numpy).");
  }
  if (!seq || (want && want->type_num == NPY_OBJECT)) return;
  // Name the first element that is no number, for the message.
  std::string odd;
  THPObjectPtr flat(PyArray_Ravel(arr, NPY_CORDER));
  if (flat) {
    auto* f = reinterpret_cast<PyArrayObject*>(flat.get());
    auto** items = static_cast<PyObject**>(PyArray_DATA(f));
    for (npy_intp i = 0; i < PyArray_SIZE(f); ++i) {
      PyObject* e = items[i];
      if (e && !PyNumber_Check(e)) {
        odd = Py_TYPE(e)->tp_name;
        break;
      }
    }
  }
  PyErr_Clear();
  const std::string what = odd.empty()
      ? "numbers no NumPy numeric dtype holds (e.g. integers beyond 64 bits)"
      : "Python objects that are not numbers (e.g. " + odd + ")";
  TORCH_CHECK_TYPE(false, kApi, ": the ", Py_TYPE(obj)->tp_name, " holds ",
      what, ", so NumPy could only build an object array; convert them "
      "first, or pass dtype=object to get an object array on purpose.");
}

PyObject* tensor_to_numpy(const at::Tensor& t, PyArray_Descr* want,
                          std::optional<bool> copy) {
  // A requested dtype torch can produce (native byte order) is made by
  // to_host; anything else (">f4", longdouble, object) is a final NumPy cast.
  std::optional<at::ScalarType> want_st;
  bool numpy_cast = false;
  if (want) {
    want_st = scalar_type_of(want);
    if (!want_st || (PyDataType_ELSIZE(want) > 1 &&
                     !PyArray_ISNBO(want->byteorder))) {
      want_st.reset();
      numpy_cast = true;
    }
  }
  // Fast path: share memory, no detach needed (the array reads raw memory).
  if (!numpy_cast && detail::exportable_as(t, want_st, copy)) {
    if (want) Py_INCREF(want);
    return export_tensor(t, want ? want : descr_of(t.scalar_type()));
  }
  TORCH_CHECK_VALUE(!(numpy_cast && copy.has_value() && !*copy), kApi,
      "(copy=False): dtype=", py_str(reinterpret_cast<PyObject*>(want)),
      " needs a NumPy cast, which copies; pass copy=None.");
  HostOptions ho;
  ho.dtype = want_st;
  ho.copy = numpy_cast ? std::nullopt : copy;
  at::Tensor host;
  {
    GilRelease nogil(worth_releasing_gil(t));
    host = detail::to_host(t, ho, kApi);
  }
  PyArray_Descr* d = nullptr;
  if (want && !numpy_cast) {
    Py_INCREF(want);
    d = want;
  } else {
    d = descr_of(host.scalar_type());
  }
  TORCH_INTERNAL_ASSERT(d, "to_host produced a dtype NumPy lacks");
  THPObjectPtr arr(export_tensor(host, d));
  if (!numpy_cast) return arr.release();
  return finish_array(std::move(arr), want, std::nullopt, /*fresh=*/true);
}

// pandas and Arrow inputs: through the columns core (never an object
// array), dtypes kept (to_numpy has no float policy). copy=None shares what
// copy=False can share (a read-only buffer gives a read-only array, as
// np.asarray(pyarrow_array) does) and copies the rest.
PyObject* table_to_numpy(PyObject* obj, bool pandas, PyArray_Descr* want,
                         std::optional<bool> copy) {
  ToTensorOptions keep;
  keep.float_dtype = std::nullopt;
  bool numpy_cast = false;
  if (want) {
    keep.dtype = scalar_type_of(want);
    numpy_cast = !keep.dtype || (PyDataType_ELSIZE(want) > 1 && !PyArray_ISNBO(want->byteorder));
    if (numpy_cast) keep.dtype.reset();
  }
  TORCH_CHECK_VALUE(!(numpy_cast && copy.has_value() && !*copy), kApi,
      "(copy=False): dtype=", py_str(reinterpret_cast<PyObject*>(want)),
      " needs a NumPy cast, which copies; pass copy=None.");
  bool readonly = false;
  const auto run = [&](std::optional<bool> c) -> std::optional<at::Tensor> {
    keep.copy = c;
    if (pandas) return pandas_to_tensor(obj, keep, kApi, &readonly);
    return arrow_to_tensor(obj, keep, kApi, &readonly);
  };
  std::optional<at::Tensor> t;
  if (copy.has_value()) {
    t = run(copy);
  } else {
    try {
      t = run(false);
    } catch (const c10::ValueError&) {
      t = run(std::nullopt);  // cannot share: copy (a real error raises again)
    }
  }
  if (!t) return nullptr;
  PyArray_Descr* d = descr_of(t->scalar_type());
  TORCH_INTERNAL_ASSERT(d, "to_numpy: a table gave a dtype NumPy lacks");
  THPObjectPtr arr(export_tensor(*t, d));
  if (readonly)
    PyArray_CLEARFLAGS(reinterpret_cast<PyArrayObject*>(arr.get()), NPY_ARRAY_WRITEABLE);
  if (!numpy_cast) return arr.release();
  return finish_array(std::move(arr), want, std::nullopt, /*fresh=*/true);
}

}  // namespace

PyObject* export_tensor(const at::Tensor& t, PyArray_Descr* descr) {
  const int nd = t.dim();
  c10::SmallVector<npy_intp, 6> dims(nd), strides(nd);
  const int64_t item = t.element_size();
  for (int i = 0; i < nd; ++i) {
    dims[i] = t.size(i);
    strides[i] = t.stride(i) * item;
  }
  void* data = t.numel() > 0 ? t.data_ptr() : nullptr;
  // With no data NumPy allocates an empty buffer of its own: nothing to share.
  PyObject* arr = PyArray_NewFromDescr(
      &PyArray_Type, descr, nd, dims.data(), data ? strides.data() : nullptr,
      data, data ? NPY_ARRAY_WRITEABLE : 0, nullptr);
  if (!arr) throw python_error();
  if (data) {
    // Resizing would move the memory out from under the array.
    t.storage().unsafeGetStorageImpl()->set_resizable(false);
    PyObject* base = make_storage_ref(t.storage());
    if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), base) < 0) {
      Py_DECREF(arr);  // SetBaseObject stole `base`
      throw python_error();
    }
  }
  return arr;
}

PyObject* to_numpy(PyObject* obj, PyArray_Descr* dtype,
                   std::optional<bool> copy) {
  // Tensors are checked exactly first (cheap); an ndarray never reaches the
  // slow isinstance() fallback of THPVariable_Check.
  if (!PyArray_Check(obj) && THPVariable_Check(obj))
    return tensor_to_numpy(THPVariable_Unpack(obj), dtype, copy);
  if (PyArray_Check(obj)) {
    Py_INCREF(obj);
    return finish_array(THPObjectPtr(obj), dtype, copy, false);
  }
  bool fresh = true;
  THPObjectPtr a;
  if (PyArray_IsScalar(obj, Generic)) {
    a = THPObjectPtr(PyArray_FromScalar(obj, nullptr));
    if (!a) throw python_error();
  } else if (holds_tensor(obj)) {
    // Stacked by torch: NumPy would call .numpy() on each tensor, which
    // fails for grad, bfloat16 and device tensors.
    TORCH_CHECK_VALUE(!(copy.has_value() && !*copy), kApi,
        "(copy=False): the list's tensors cannot share memory with one "
        "array; stacking them is a copy. Pass copy=None.");
    ToTensorOptions keep;  // dtypes kept: to_numpy has no float policy
    keep.float_dtype = std::nullopt;
    at::Tensor stacked;
    {
      at::NoGradGuard no_grad;  // the result is detached anyway
      stacked = stack_tensors(obj, keep, kApi);
    }
    return tensor_to_numpy(stacked, dtype, std::nullopt);
  } else if (is_scipy_sparse(obj)) {
    // Densified like a torch sparse tensor (same size check), never an
    // object array.
    TORCH_CHECK_VALUE(!(copy.has_value() && !*copy), kApi,
        "(copy=False): a scipy.sparse matrix has no dense memory to share; "
        "densifying it is a copy. Pass copy=None (or keep it sparse: "
        "torchbridge.to_tensor gives a torch sparse tensor sharing its buffers).");
    ToTensorOptions keep;  // dtypes kept: to_numpy has no float policy
    keep.float_dtype = std::nullopt;
    return tensor_to_numpy(scipy_to_tensor(obj, keep, kApi), dtype, std::nullopt);
  } else if (const bool pd = is_pandas(obj); pd || is_arrow_producer(obj)) {
    if (PyObject* out = table_to_numpy(obj, pd, dtype, copy)) return out;
    a = as_array(obj, kApi, fresh);  // a pandas object that holds no values
    check_not_object(obj, reinterpret_cast<PyArrayObject*>(a.get()), dtype);
  } else if (auto v = is_dlpack_producer(obj) ? dlpack_view(obj, kApi)
                                              : std::optional<ArrayView>()) {
    // Through a tensor: a CPU buffer torch can view is shared (read-only
    // ones too, and the array says so, as np.from_dlpack does); anything
    // else copies by to_numpy's rules for that tensor.
    const bool shared = v->device.is_cpu() && layout_blocker(*v) == ShareBlocker::kNone;
    const bool writable = v->writable;
    if (!shared && v->device.is_cpu() && copy.has_value() && !*copy) {
      const auto why = layout_blocker(*v);
      TORCH_CHECK_VALUE(false, kApi, "(copy=False): the buffer cannot be shared because ",
          share_blocker_reason(why, *v, *v->dtype.scalar, ToTensorOptions()),
          "; pass copy=None.");
    }
    ToTensorOptions keep;  // dtypes kept: to_numpy has no float policy
    keep.float_dtype = std::nullopt;
    if (shared) keep.copy = false;
    at::Tensor t;
    {
      GilRelease nogil(!v->device.is_cpu());
      t = detail::to_tensor(*v, keep, kApi);
    }
    THPObjectPtr out(tensor_to_numpy(t, dtype, copy));
    if (!out) throw python_error();
    auto* arr = reinterpret_cast<PyArrayObject*>(out.get());
    if (!writable && shared && PyArray_DATA(arr) == t.data_ptr())
      PyArray_CLEARFLAGS(arr, NPY_ARRAY_WRITEABLE);
    return out.release();
  } else {
    a = as_array(obj, kApi, fresh);
    check_not_object(obj, reinterpret_cast<PyArrayObject*>(a.get()), dtype);
  }
  return finish_array(std::move(a), dtype, copy, fresh);
}

void init_storage_ref(PyObject* module) {
  if (PyType_Ready(&StorageRefType) < 0) throw python_error();
  Py_INCREF(&StorageRefType);
  if (PyModule_AddObject(module, "StorageRef",
                         reinterpret_cast<PyObject*>(&StorageRefType)) < 0) {
    Py_DECREF(&StorageRefType);
    throw python_error();
  }
}

}  // namespace torchbridge::python
