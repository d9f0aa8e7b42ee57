// ndarray (or array-like) -> tensor: tb.to_tensor.

#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/internal.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/TensorImpl.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <string>
#include <vector>

namespace torchbridge::python {
namespace {

constexpr const char* kApi = "to_tensor";

// Why an array's memory cannot back a tensor as it is.
enum class Blocker { kNone, kByteOrder, kMisaligned, kNegativeStride, kOddStride };

Blocker layout_blocker(PyArrayObject* arr) {
  if (PyArray_SIZE(arr) == 0) return Blocker::kNone;  // nothing to read
  PyArray_Descr* d = PyArray_DESCR(arr);
  const npy_intp item = PyDataType_ELSIZE(d);
  if (item > 1 && !PyArray_ISNBO(d->byteorder)) return Blocker::kByteOrder;
  if (!PyArray_ISALIGNED(arr)) return Blocker::kMisaligned;
  const int nd = PyArray_NDIM(arr);
  const npy_intp* dims = PyArray_DIMS(arr);
  const npy_intp* strides = PyArray_STRIDES(arr);
  for (int i = 0; i < nd; ++i) {
    if (dims[i] <= 1) continue;  // the stride of an extent-1 axis is moot
    if (strides[i] < 0) return Blocker::kNegativeStride;
    if (strides[i] % item != 0) return Blocker::kOddStride;
  }
  return Blocker::kNone;
}

std::string tuple_str(const npy_intp* v, int n) {
  std::string s = "(";
  for (int i = 0; i < n; ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  if (n == 1) s += ",";
  return s + ")";
}

// The sentence after "... cannot be shared because" for a layout blocker.
std::string blocker_reason(Blocker b, PyArrayObject* arr) {
  PyArray_Descr* d = PyArray_DESCR(arr);
  switch (b) {
    case Blocker::kByteOrder:
      return "it is byte-swapped (" + py_str(reinterpret_cast<PyObject*>(d)) +
             ") and tensors hold native byte order";
    case Blocker::kMisaligned:
      return "its data is not aligned to its " +
             std::to_string(PyDataType_ELSIZE(d)) + "-byte items";
    case Blocker::kNegativeStride:
      return "it has negative strides " +
             tuple_str(PyArray_STRIDES(arr), PyArray_NDIM(arr)) +
             ", which tensors cannot represent";
    case Blocker::kOddStride:
      return "its strides " +
             tuple_str(PyArray_STRIDES(arr), PyArray_NDIM(arr)) +
             " are not multiples of its item size (" +
             std::to_string(PyDataType_ELSIZE(d)) + " bytes)";
    case Blocker::kNone:
      break;
  }
  return "";
}

void copy_tensor(const at::Tensor& dst, const at::Tensor& src) {
  GilRelease nogil(dst.nbytes() >= static_cast<size_t>(kReleaseGilBytes));
  if (dst.is_cpu() && src.is_cpu()) {
    detail::copy_into(dst, src);
  } else {
    dst.copy_(src);
  }
}

// An ndarray viewing `t`'s memory with no base: only for use while `t` is
// held by the caller.
THPObjectPtr borrowed_array(const at::Tensor& t) {
  PyArray_Descr* d = descr_of(t.scalar_type());
  TORCH_INTERNAL_ASSERT(d, "borrowed_array: no NumPy dtype");
  const int nd = t.dim();
  c10::SmallVector<npy_intp, 6> dims(nd), strides(nd);
  for (int i = 0; i < nd; ++i) {
    dims[i] = t.size(i);
    strides[i] = t.stride(i) * t.element_size();
  }
  PyObject* a = PyArray_NewFromDescr(&PyArray_Type, d, nd, dims.data(),
                                     strides.data(), t.data_ptr(),
                                     NPY_ARRAY_WRITEABLE, nullptr);
  if (!a) throw python_error();
  return THPObjectPtr(a);
}

// Copies `src` into `dst` (same shape, CPU), casting to dst's dtype.
void copy_array_into(const at::Tensor& dst, PyArrayObject* src) {
  const auto st = scalar_type_of(PyArray_DESCR(src));
  if (st && layout_blocker(src) == Blocker::kNone) {
    copy_tensor(dst, wrap_array(src, *st, /*own=*/false));  // ATen: threaded
    return;
  }
  if (dst.numel() == 0) return;
  if (has_numpy_dtype(dst.scalar_type())) {
    // Negative strides, byte swaps, misalignment, long double: NumPy's
    // casting loops handle them in one pass (and drop the GIL themselves).
    THPObjectPtr out = borrowed_array(dst);
    if (PyArray_CopyInto(reinterpret_cast<PyArrayObject*>(out.get()), src) < 0)
      throw python_error();
    return;
  }
  // The target has no (builtin) NumPy dtype: normalise with NumPy into a
  // native intermediate first, then cast with ATen.
  PyArray_Descr* mid =
      st ? descr_of(*st)
         : PyArray_DescrFromType(PyTypeNum_ISCOMPLEX(PyArray_TYPE(src))
                                     ? NPY_CDOUBLE
                                     : NPY_DOUBLE);
  THPObjectPtr tmp(PyArray_FromArray(
      src, mid, NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST | NPY_ARRAY_ENSURECOPY));
  if (!tmp) throw python_error();
  auto* t = reinterpret_cast<PyArrayObject*>(tmp.get());
  copy_tensor(dst, wrap_array(t, *scalar_type_of(PyArray_DESCR(t)), false));
}

// A fresh tensor holding `arr`'s values in `target`. Keeps the array's
// memory order when it is dense with non-negative strides (like NumPy's
// order='K'), else C order.
at::Tensor copy_array(PyArrayObject* arr, at::ScalarType target, bool pin) {
  auto opts = at::TensorOptions().dtype(target);
  if (pin) opts = opts.pinned_memory(true);
  const auto st = scalar_type_of(PyArray_DESCR(arr));
  // C- or F-contiguous arrays in a plain copy or a policy cast: straight
  // from the array's memory into fresh memory of the same order, with no
  // dispatch on the way.
  const bool c_order = PyArray_IS_C_CONTIGUOUS(arr);
  if (!pin && st && layout_blocker(arr) == Blocker::kNone &&
      (c_order || PyArray_IS_F_CONTIGUOUS(arr))) {
    const int nd = PyArray_NDIM(arr);
    c10::SmallVector<int64_t, 6> sizes(PyArray_DIMS(arr), PyArray_DIMS(arr) + nd);
    c10::SmallVector<int64_t, 6> strides(nd);
    int64_t step = 1;
    for (int k = 0; k < nd; ++k) {
      const int i = c_order ? nd - 1 - k : k;
      strides[i] = step;
      step *= std::max<int64_t>(sizes[i], 1);
    }
    auto out = detail::empty_host(sizes, strides, target);
    const int64_t n = PyArray_SIZE(arr);
    bool done;
    {
      GilRelease nogil(out.nbytes() >= static_cast<size_t>(kReleaseGilBytes));
      done = n == 0 || detail::cast_dense(out.data_ptr(), target, PyArray_DATA(arr),
                                          *st, n);
    }
    if (!done) copy_tensor(out, wrap_array(arr, *st, /*own=*/false));
    return out;
  }
  if (st && layout_blocker(arr) == Blocker::kNone) {
    auto view = wrap_array(arr, *st, /*own=*/false);
    auto out = at::empty_like(view, opts, at::MemoryFormat::Preserve);
    copy_tensor(out, view);
    return out;
  }
  const int nd = PyArray_NDIM(arr);
  std::vector<int64_t> shape(PyArray_DIMS(arr), PyArray_DIMS(arr) + nd);
  auto out = at::empty(shape, opts);
  copy_array_into(out, arr);
  return out;
}

// The dtype an array converts to, or a TypeError for unsupported dtypes.
}  // namespace

at::ScalarType target_dtype(PyArray_Descr* d, std::optional<at::ScalarType> st,
                            const ToTensorOptions& o, PyArrayObject* arr) {
  if (o.dtype) detail::check_target_dtype(*o.dtype, kApi);
  if (st) return policy_dtype(*st, o.dtype, o.float_dtype);
  const bool long_double =
      d->type_num == NPY_LONGDOUBLE || d->type_num == NPY_CLONGDOUBLE;
  if (long_double && o.dtype) {
    return *o.dtype;  // NumPy's cast does the rounding
  }
  raise_unsupported_dtype(d, kApi, arr);
}

namespace {

at::Tensor array_to_tensor(PyArrayObject* arr, const ToTensorOptions& o,
                           bool fresh) {
  PyArray_Descr* d = PyArray_DESCR(arr);
  const auto st = scalar_type_of(d);
  const auto target = target_dtype(d, st, o, arr);
  const bool to_cpu = !o.device || o.device->is_cpu();
  const bool pin = o.pin_memory && to_cpu;

  // What stands in the way of sharing the array's memory. Cheap to decide;
  // the words are only built for the copy=False error.
  enum class Why { kNone, kDtype, kDevice, kPin, kLayout, kReadOnly };
  Why why = Why::kNone;
  Blocker blocker = Blocker::kNone;
  if (!st || *st != target) {
    why = Why::kDtype;
  } else if (!to_cpu) {
    why = Why::kDevice;
  } else if (pin) {
    why = Why::kPin;
  } else if ((blocker = layout_blocker(arr)) != Blocker::kNone) {
    why = Why::kLayout;
  }
  if (o.copy.has_value() && !*o.copy) {
    TORCH_CHECK_VALUE(!fresh, kApi,
        "(copy=False): the input has no memory to share (NumPy had to build "
        "a new array from it, as for Python lists and scalars); pass "
        "copy=None to let torchbridge copy it.");
    if (why != Why::kNone) {
      std::string reason;
      switch (why) {
        case Why::kDtype:
          reason = "its dtype " + py_str(reinterpret_cast<PyObject*>(d)) +
                   " becomes " + dtype_name(target) +
                   (o.dtype ? "" : " (the float policy; pass float_dtype=None "
                                   "to keep float64)");
          break;
        case Why::kDevice:
          reason = "the result goes to " + o.device->str();
          break;
        case Why::kPin:
          reason = "pin_memory=True needs a copy in page-locked memory";
          break;
        default:
          reason = blocker_reason(blocker, arr);
      }
      TORCH_CHECK_VALUE(false, kApi,
          "(copy=False): the array's memory cannot be shared because ",
          reason, "; pass copy=None to let torchbridge copy it.");
    }
    // A read-only array IS shared here: the caller promised not to write.
    return wrap_array(arr, *st, /*own=*/true);
  }
  if (why == Why::kNone && !PyArray_ISWRITEABLE(arr) && PyArray_SIZE(arr) > 0)
    why = Why::kReadOnly;  // shared only on the caller's promise (copy=False)
  if (why == Why::kNone && !(o.copy.value_or(false) && !fresh)) {
    return wrap_array(arr, *st, /*own=*/true);
  }
  if (pin) detail::check_pin_available(kApi);
  if (to_cpu) return copy_array(arr, target, pin);

  const auto device = resolve_device(*o.device);
  HostSource src = host_source(arr, target, device, /*pin_copies=*/true);
  at::Tensor out;
  {
    GilRelease nogil;
    out = detail::host_to_device(src.host, src.bus, device, o.non_blocking);
    if (out.scalar_type() != target) out = out.to(target);  // widen on device
  }
  return out;  // `src` (which may own the array) dies with the GIL held
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

// The common case of a batch: arrays of the common dtype, C-contiguous,
// native and aligned, in a plain copy or a policy cast. One pass over raw
// pointers on core's pool (no tensor per item), without the GIL: the
// caller's tuple snapshot holds every array. False when it does not apply.
bool stack_dense_arrays(const at::Tensor& out, const std::vector<PyArrayObject*>& arrays,
                        std::optional<at::ScalarType> st) {
  if (!st) return false;
  std::vector<const void*> ptrs(arrays.size());
  for (size_t i = 0; i < arrays.size(); ++i) {
    PyArrayObject* a = arrays[i];
    if (scalar_type_of(PyArray_DESCR(a)) != st || !PyArray_IS_C_CONTIGUOUS(a) ||
        layout_blocker(a) != Blocker::kNone)
      return false;
    ptrs[i] = PyArray_DATA(a);
  }
  GilRelease nogil(out.nbytes() >= static_cast<size_t>(kReleaseGilBytes));
  return detail::stack_dense(out.data_ptr(), out.scalar_type(), ptrs, *st,
                             PyArray_SIZE(arrays[0]));
}

at::Tensor stack_arrays(PyObject* seq, const ToTensorOptions& o) {
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  std::vector<PyArrayObject*> arrays(n);
  for (Py_ssize_t i = 0; i < n; ++i)
    arrays[i] = reinterpret_cast<PyArrayObject*>(PySequence_Fast_GET_ITEM(seq, i));
  const int nd = PyArray_NDIM(arrays[0]);
  for (Py_ssize_t i = 1; i < n; ++i) {
    if (!PyArray_SAMESHAPE(arrays[0], arrays[i])) check_not_ragged(seq, kApi);
  }
  PyArray_Descr* common = PyArray_ResultType(n, arrays.data(), 0, nullptr);
  if (!common) throw python_error();
  THPObjectPtr common_ref(reinterpret_cast<PyObject*>(common));
  const auto st = scalar_type_of(common);
  const auto target = target_dtype(common, st, o, nullptr);
  const bool to_cpu = !o.device || o.device->is_cpu();
  TORCH_CHECK_VALUE(!(o.copy.has_value() && !*o.copy), kApi,
      "(copy=False): a list of ", std::to_string(n), " arrays cannot share memory with one "
      "tensor; stacking them is a copy. Pass copy=None.");
  const bool pin = o.pin_memory && to_cpu;
  if (pin) detail::check_pin_available(kApi);
  // Narrow on the host; widen on the device (see array_to_tensor).
  const auto host_dtype =
      (!to_cpu && st) ? detail::bus_dtype(*st, target) : target;
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), PyArray_DIMS(arrays[0]),
               PyArray_DIMS(arrays[0]) + nd);
  const auto device = to_cpu ? at::Device(at::kCPU) : resolve_device(*o.device);
  auto opts = at::TensorOptions().dtype(host_dtype);
  // Stack straight into pinned memory when it is going to CUDA: one copy on
  // the host, then one DMA.
  if (pin || device.is_cuda()) opts = opts.pinned_memory(true);
  at::Tensor out = at::empty(shape, opts);
  if (!stack_dense_arrays(out, arrays, st)) {
    for (Py_ssize_t i = 0; i < n; ++i) copy_array_into(out.select(0, i), arrays[i]);
  }
  if (to_cpu) return out;
  GilRelease nogil;
  out = detail::move_to_device(out, device, o.non_blocking);
  return out.scalar_type() == target ? out : out.to(target);
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
  bool fresh = false;
  THPObjectPtr a = as_array(obj, kApi, fresh);
  return array_to_tensor(reinterpret_cast<PyArrayObject*>(a.get()), o, fresh);
}

void check_requires_grad_dtype(const at::Tensor& t) {
  TORCH_CHECK_VALUE(
      c10::isFloatingType(t.scalar_type()) || c10::isComplexType(t.scalar_type()),
      kApi, "(requires_grad=True): only floating and complex tensors can "
      "require gradients, but the result is ", dtype_name(t.scalar_type()),
      "; pass dtype=torch.float32 (or another floating dtype).");
}

}  // namespace

at::Tensor wrap_array(PyArrayObject* arr, at::ScalarType st, bool own) {
  const int nd = PyArray_NDIM(arr);
  const npy_intp* dims = PyArray_DIMS(arr);
  const npy_intp* strides = PyArray_STRIDES(arr);
  const int64_t item = PyArray_ITEMSIZE(arr);
  const bool empty = PyArray_SIZE(arr) == 0;
  c10::SmallVector<int64_t, 6> sizes(nd), tstrides(nd);
  int64_t contiguous = 1;
  for (int i = nd - 1; i >= 0; --i) {
    sizes[i] = dims[i];
    // Extent-0/1 axes (and empty arrays) get C-order strides, so that
    // is_contiguous() holds wherever NumPy would call the array contiguous.
    tstrides[i] = (empty || dims[i] <= 1) ? contiguous : strides[i] / item;
    contiguous *= std::max<int64_t>(dims[i], 1);
  }
  const size_t nbytes =
      empty ? 0 : at::detail::computeStorageNbytes(sizes, tstrides, item);
  void* data = PyArray_DATA(arr);
  c10::DataPtr ptr;
  if (own) {
    Py_INCREF(arr);  // released by the DataPtr, even if a step below throws
    ptr = c10::DataPtr(data, arr, &release_pyobject, at::Device(at::kCPU));
  } else {
    ptr = c10::DataPtr(data, at::Device(at::kCPU));
  }
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, std::move(ptr),
                       /*allocator=*/nullptr, /*resizable=*/false);
  auto t = at::detail::make_tensor<c10::TensorImpl>(
      std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
      c10::scalarTypeToTypeMeta(st));
  t.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, tstrides);
  return t;
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

HostSource host_source(PyArrayObject* arr, at::ScalarType target,
                       at::Device device, bool pin_copies) {
  const auto st = scalar_type_of(PyArray_DESCR(arr));
  // Narrow on the host (in the staging copy) before the transfer, widen on
  // the device after it, so fewer bytes cross the bus.
  const auto bus =
      st ? detail::bus_dtype(*st, target) : target;
  if (st && layout_blocker(arr) == Blocker::kNone) {
    return {wrap_array(arr, *st, /*own=*/true), bus};  // read in place
  }
  // Byte-swapped, negative strides, misaligned, long double: NumPy
  // normalises it, straight into pinned memory when bound for CUDA.
  return {copy_array(arr, bus, pin_copies && device.is_cuda()), bus};
}

PyObject* to_tensor(PyObject* obj, const ToTensorOptions& o) {
  at::Tensor result;
  // ndarrays first: THPVariable_Check on a non-tensor falls through to a
  // full isinstance() against torch.Tensor's metaclass, which costs more
  // than the rest of the zero-copy path.
  if (!PyArray_Check(obj) && THPVariable_Check(obj)) {
    const at::Tensor& t = THPVariable_Unpack(obj);
    CoerceOptions co;
    co.dtype = o.dtype;
    co.float_dtype = o.float_dtype;
    co.device = o.device;
    co.non_blocking = o.non_blocking;
    co.pin_memory = o.pin_memory;
    co.copy = o.copy;
    {
      GilRelease nogil(o.device.has_value() || worth_releasing_gil(t));
      result = detail::coerce(t, co, kApi);
    }
    if (!o.requires_grad && result.unsafeGetTensorImpl() ==
                                t.unsafeGetTensorImpl()) {
      Py_INCREF(obj);  // nothing changed: the same object, as torch.as_tensor
      return obj;
    }
  } else {
    result = convert(obj, o);
  }
  if (o.requires_grad) {
    check_requires_grad_dtype(result);
    result = result.detach().requires_grad_(true);  // a new leaf
  }
  return THPVariable_Wrap(std::move(result));
}

}  // namespace torchbridge::python
