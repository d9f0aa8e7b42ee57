// torchbridge._C: the Python entry points. The public functions are CPython
// METH_FASTCALL functions (no pybind11 dispatch, no Python wrapper) because
// they sit in hot loops; their signatures and types live in
// torchbridge/_C.pyi.

#define TORCHBRIDGE_NUMPY_IMPORT
#include "numpy.h"

#include "args.h"
#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/internal.h"
#include "../core/parallel.h"
#include "../ops/kernels.h"

#include <ATen/ATen.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <chrono>
#include <thread>

#ifndef TORCHBRIDGE_VERSION
#define TORCHBRIDGE_VERSION "0+unknown"
#endif
#ifndef TORCHBRIDGE_BUILT_TORCH
#define TORCHBRIDGE_BUILT_TORCH "unknown"
#endif
#ifndef TORCHBRIDGE_BUILT_NUMPY
#define TORCHBRIDGE_BUILT_NUMPY "unknown"
#endif
#ifndef TORCHBRIDGE_BUILT_CUDA
#define TORCHBRIDGE_BUILT_CUDA ""
#endif

namespace torchbridge::python {
namespace {

std::optional<bool> parse_optional_bool(PyObject* o) {
  if (!o || o == Py_None) return std::nullopt;
  return parse_bool(o, false);
}

PyObject* wrap_dtype(at::ScalarType st) {
  PyObject* d = reinterpret_cast<PyObject*>(torch::getTHPDtype(st));
  Py_INCREF(d);
  return d;
}

const at::Tensor& tensor_arg(PyObject* o, const char* api) {
  if (!THPVariable_Check(o)) {
    PyErr_Format(PyExc_TypeError,
                 "%s() expects a torch.Tensor, got %s; for arrays use "
                 "torchbridge.to_tensor() first.",
                 api, Py_TYPE(o)->tp_name);
    throw python_error();
  }
  return THPVariable_Unpack(o);
}

ToTensorOptions parse_to_tensor_options(const std::array<PyObject*, 8>& a) {
  ToTensorOptions o;
  o.dtype = parse_torch_dtype(a[1], "to_tensor", "dtype");
  if (a[2]) o.float_dtype = parse_torch_dtype(a[2], "to_tensor", "float_dtype");
  o.device = parse_device(a[3], "to_tensor");
  o.copy = parse_optional_bool(a[4]);
  o.pin_memory = parse_bool(a[5], false);
  o.non_blocking = parse_bool(a[6], false);
  o.requires_grad = parse_bool(a[7], false);
  return o;
}

PyObject* py_to_tensor(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                       PyObject* kwnames) {
  if (nargs == 1 && !kwnames && PyArray_CheckExact(args[0])) {
    // The hottest call, to_tensor(ndarray): errors translated as everywhere,
    // but without HANDLE_TH_ERRORS' warning buffer, whose thread-local
    // handler swap costs a fifth of this call. Nothing on this path warns:
    // it shares, or copies with the default policy (real -> real casts,
    // which torch does not warn about).
    static const ToTensorOptions defaults;
    try {
      drain_pending_releases();
      return ndarray_to_tensor(reinterpret_cast<PyArrayObject*>(args[0]), defaults);
    }
    catch (const std::exception&) {  // as END_HANDLE_TH_ERRORS translates
      torch::translate_exception_to_python(std::current_exception());
      return nullptr;
    }
  }
  HANDLE_TH_ERRORS
  if (nargs == 1 && !kwnames) {
    // The hot call, to_tensor(x): no arguments to parse.
    static const ToTensorOptions defaults;
    drain_pending_releases();
    return to_tensor(args[0], defaults);
  }
  static const Signature<8> sig(
      "to_tensor",
      {"obj", "dtype", "float_dtype", "device", "copy", "pin_memory",
       "non_blocking", "requires_grad"},
      2, 1);
  std::array<PyObject*, 8> a;
  sig.parse(args, nargs, kwnames, a);
  drain_pending_releases();
  const auto o = parse_to_tensor_options(a);
  return to_tensor(a[0], o);
  END_HANDLE_TH_ERRORS
}

PyObject* py_to_numpy(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                      PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<3> sig("to_numpy", {"obj", "dtype", "copy"}, 2, 1);
  std::array<PyObject*, 3> a;
  sig.parse(args, nargs, kwnames, a);
  drain_pending_releases();
  THPObjectPtr want(reinterpret_cast<PyObject*>(parse_numpy_dtype(a[1], "to_numpy")));
  return to_numpy(a[0], reinterpret_cast<PyArray_Descr*>(want.get()),
                  parse_optional_bool(a[2]));
  END_HANDLE_TH_ERRORS
}

PyObject* py_to_host(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                     PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<4> sig("to_host",
                                {"tensor", "dtype", "pin_memory", "copy"}, 2, 1);
  std::array<PyObject*, 4> a;
  sig.parse(args, nargs, kwnames, a);
  drain_pending_releases();
  const at::Tensor& t = tensor_arg(a[0], "to_host");
  HostOptions o;
  o.dtype = parse_torch_dtype(a[1], "to_host", "dtype");
  o.pin_memory = parse_bool(a[2], false);
  o.copy = parse_optional_bool(a[3]);
  at::Tensor r;
  {
    GilRelease nogil(worth_releasing_gil(t));
    r = detail::to_host(t, o, "to_host");
  }
  if (r.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) {
    Py_INCREF(a[0]);
    return a[0];
  }
  return THPVariable_Wrap(std::move(r));
  END_HANDLE_TH_ERRORS
}

// _to_tensor_batch(leaves, ...same keywords as to_tensor; device required):
// the coalesced transfer behind tree_to_tensor(device=...).
PyObject* py_to_tensor_batch(PyObject*, PyObject* const* args,
                             Py_ssize_t nargs, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<8> sig(
      "_to_tensor_batch",
      {"leaves", "dtype", "float_dtype", "device", "copy", "pin_memory",
       "non_blocking", "requires_grad"},
      2, 1);
  std::array<PyObject*, 8> a;
  sig.parse(args, nargs, kwnames, a);
  drain_pending_releases();
  const auto o = parse_to_tensor_options(a);
  TORCH_CHECK_VALUE(o.device.has_value(), "_to_tensor_batch needs device=");
  return to_tensor_batch(a[0], o);
  END_HANDLE_TH_ERRORS
}

// _to_numpy_batch(leaves, dtype=None, *, copy=None): the coalesced transfer
// behind tree_to_numpy for CUDA leaves.
PyObject* py_to_numpy_batch(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                            PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<3> sig("_to_numpy_batch", {"leaves", "dtype", "copy"},
                                2, 1);
  std::array<PyObject*, 3> a;
  sig.parse(args, nargs, kwnames, a);
  drain_pending_releases();
  THPObjectPtr want(
      reinterpret_cast<PyObject*>(parse_numpy_dtype(a[1], "to_numpy")));
  return to_numpy_batch(a[0], reinterpret_cast<PyArray_Descr*>(want.get()),
                        parse_optional_bool(a[2]));
  END_HANDLE_TH_ERRORS
}

// _transfer_tuning(chunk_bytes=None, min_chunked_bytes=None, ring_slots=None,
// direct_max_bytes=None) -> the settings after the change. For benchmarks that
// sweep the transfer engine's knobs.
PyObject* py_transfer_tuning(PyObject*, PyObject* const* args,
                             Py_ssize_t nargs, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<4> sig(
      "_transfer_tuning",
      {"chunk_bytes", "min_chunked_bytes", "ring_slots", "direct_max_bytes"},
      4, 0);
  std::array<PyObject*, 4> a;
  sig.parse(args, nargs, kwnames, a);
  auto& t = detail::transfer_tuning();
  int64_t* fields[4] = {&t.chunk_bytes, &t.min_chunked_bytes, &t.ring_slots,
                        &t.direct_max_bytes};
  for (int i = 0; i < 4; ++i) {
    if (!a[i] || a[i] == Py_None) continue;
    const long long v = PyLong_AsLongLong(a[i]);
    if (v == -1 && PyErr_Occurred()) throw python_error();
    TORCH_CHECK_VALUE(v > 0, "_transfer_tuning: values must be positive");
    *fields[i] = v;
  }
  return Py_BuildValue("{s:L,s:L,s:L,s:L}", "chunk_bytes",
                       static_cast<long long>(t.chunk_bytes),
                       "min_chunked_bytes",
                       static_cast<long long>(t.min_chunked_bytes), "ring_slots",
                       static_cast<long long>(t.ring_slots), "direct_max_bytes",
                       static_cast<long long>(t.direct_max_bytes));
  END_HANDLE_TH_ERRORS
}

// _policy_dtype(dtype, explicit=None, float_dtype=torch.float32): the float
// policy for the operators' fake kernels, so Python never re-types the rule.
PyObject* py_policy_dtype(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<3> sig("_policy_dtype",
                                {"dtype", "explicit", "float_dtype"}, 3, 1);
  std::array<PyObject*, 3> a;
  sig.parse(args, nargs, kwnames, a);
  const auto src = parse_torch_dtype(a[0], "_policy_dtype", "dtype");
  const auto expl = parse_torch_dtype(a[1], "_policy_dtype", "explicit");
  std::optional<at::ScalarType> fl = at::kFloat;
  if (a[2]) fl = parse_torch_dtype(a[2], "_policy_dtype", "float_dtype");
  return wrap_dtype(policy_dtype(*src, expl, fl));
  END_HANDLE_TH_ERRORS
}

// _host_dtype(dtype): the dtype to_host produces by default.
PyObject* py_host_dtype(PyObject*, PyObject* arg) {
  HANDLE_TH_ERRORS
  return wrap_dtype(host_dtype(*parse_torch_dtype(arg, "_host_dtype", "dtype")));
  END_HANDLE_TH_ERRORS
}

// _resolve_device(device): "cuda" -> the current CUDA device, as the kernels
// resolve it (for the fake kernels).
PyObject* py_resolve_device(PyObject*, PyObject* arg) {
  HANDLE_TH_ERRORS
  const auto d = parse_device(arg, "_resolve_device");
  TORCH_CHECK_VALUE(d.has_value(), "_resolve_device: device must not be None");
  return THPDevice_New(resolve_device(*d));
  END_HANDLE_TH_ERRORS
}

// _meta_to_host(tensor, dtype, pin_memory) / _meta_coerce(tensor, dtype,
// device, non_blocking): the operators' kernels for a genuine meta tensor.
// In Python the fake kernels (torchbridge/_fake.py) also serve the Meta
// dispatch key; they hand real meta inputs here, so eager calls get the
// rules of the C++ library's Meta kernels (ops/meta.cpp): to_host raises
// ValueError, coerce computes the meta result and refuses real devices.
PyObject* py_meta_to_host(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<3> sig("_meta_to_host",
                                {"tensor", "dtype", "pin_memory"}, 3, 1);
  std::array<PyObject*, 3> a;
  sig.parse(args, nargs, kwnames, a);
  const at::Tensor& t = tensor_arg(a[0], "torchbridge::to_host");
  return THPVariable_Wrap(ops::to_host_kernel(
      t, parse_torch_dtype(a[1], "torchbridge::to_host", "dtype"),
      parse_bool(a[2], false)));
  END_HANDLE_TH_ERRORS
}

PyObject* py_meta_coerce(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                         PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<4> sig(
      "_meta_coerce", {"tensor", "dtype", "device", "non_blocking"}, 4, 1);
  std::array<PyObject*, 4> a;
  sig.parse(args, nargs, kwnames, a);
  const at::Tensor& t = tensor_arg(a[0], "torchbridge::coerce");
  return THPVariable_Wrap(ops::coerce_kernel(
      t, parse_torch_dtype(a[1], "torchbridge::coerce", "dtype"),
      parse_device(a[2], "torchbridge::coerce"), parse_bool(a[3], false)));
  END_HANDLE_TH_ERRORS
}

PyObject* py_drain(PyObject*, PyObject*) {
  drain_pending_releases();
  Py_RETURN_NONE;
}

PyObject* py_pending(PyObject*, PyObject*) {
  return PyLong_FromSize_t(pending_release_count());
}

// For tests: takes a C++ reference to `tensor`'s storage onto a new native
// thread that never holds the GIL and drops it there after `delay_ms`.
// Returns at once (the thread is detached): the caller then drops its own
// references, so the native thread holds the last one and runs torchbridge's
// deleter. Waiting for the thread here could never do that, because the
// caller's argument keeps the tensor alive until the call returns. Proves
// deleters are safe off the interpreter's threads, at exit too.
//
// It holds the storage, not the TensorImpl: a TensorImpl that Python has
// wrapped keeps its PyObject once Python lets go (torch's PyObject
// preservation), and dropping it later makes torch take the GIL on this
// thread, which aborts the process ("terminate called without an active
// exception") while the interpreter finalizes: torch's hazard
// (pytorch/pytorch#38228), not the deleter under test.
PyObject* py_release_in_native_thread(PyObject*, PyObject* const* args,
                                      Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "_release_in_native_thread(tensor, delay_ms)");
  const at::Tensor& t = tensor_arg(args[0], "_release_in_native_thread");
  TORCH_CHECK_VALUE(t.has_storage(), "_release_in_native_thread: the tensor "
                    "has no storage");
  const long delay = PyLong_AsLong(args[1]);
  if (delay == -1 && PyErr_Occurred()) throw python_error();
  std::thread([s = t.storage(), delay]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    s = c10::Storage();
  }).detach();
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// For tests and benchmarks: (threads usable now, helper threads started)
// of the pool that casts and loads run on (core/parallel.h); with an
// argument, makes every further helper creation fail (True) or not.
PyObject* py_parallel(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs <= 1, "_parallel(fail_thread_creation=None)");
  if (nargs == 1) {
    const int fail = PyObject_IsTrue(args[0]);
    if (fail < 0) throw python_error();
    detail::set_fail_thread_creation(fail != 0);
  }
  const int usable = detail::usable_threads();
  int helpers;
  {
    GilRelease nogil(true);  // may start threads
    helpers = detail::helper_threads();
  }
  return Py_BuildValue("(ii)", usable, helpers);
  END_HANDLE_TH_ERRORS
}

// For tests: (blocks, bytes) in the cache of freed outputs (core/host_memory.cpp).
PyObject* py_host_cache(PyObject*, PyObject*) {
  HANDLE_TH_ERRORS
  const auto [blocks, bytes] = detail::host_cache_state();
  return Py_BuildValue("(in)", blocks, static_cast<Py_ssize_t>(bytes));
  END_HANDLE_TH_ERRORS
}

// Each docstring opens with the signature, as written in torchbridge/_C.pyi,
// the README's "Python API" and the parser table above it
// (test/test_signatures.py checks they agree). "name(...)\n--\n\n" makes
// it __text_signature__, which inspect.signature and help() read, but they
// accept only literal defaults: with float_dtype=torch.float32 there, help()
// showed "to_tensor(...)". Those signatures stay plain docstring text.
PyMethodDef methods[] = {
    {"to_tensor", reinterpret_cast<PyCFunction>(py_to_tensor),
     METH_FASTCALL | METH_KEYWORDS,
     "to_tensor(obj, dtype=None, *, float_dtype=torch.float32, device=None, "
     "copy=None, pin_memory=False, non_blocking=False, requires_grad=False)"
     "\n\n"
     "Convert one array-like (ndarray, NumPy scalar, list, buffer, tensor) "
     "to a tensor.\n\n"
     "Shares the array's memory when that is safe (CPU target, dtype kept, "
     "writable, native byte order, aligned, non-negative strides), else "
     "copies. float64 becomes float_dtype (float32) and complex128 its "
     "complex counterpart unless dtype= says otherwise or float_dtype=None.\n"
     "copy=True always copies; copy=False never does (raises ValueError "
     "saying why), and shares read-only arrays.\n"
     "See README.md, \"Python API\", for the full rules."},
    {"to_numpy", reinterpret_cast<PyCFunction>(py_to_numpy),
     METH_FASTCALL | METH_KEYWORDS,
     "to_numpy(obj, dtype=None, *, copy=None)\n--\n\n"
     "Convert one tensor (or array-like) to an ndarray, whatever the tensor: "
     "requires_grad (detached), on a device (copied, synchronised), conj/neg "
     "(resolved), sparse (densified), quantized (dequantized).\n\n"
     "Shares memory with dense CPU tensors of a NumPy dtype (writes show in "
     "the tensor). bfloat16/float8 become float32 unless dtype= names an "
     "ml_dtypes type. copy=True always copies; copy=False raises ValueError "
     "where a copy is needed."},
    {"to_host", reinterpret_cast<PyCFunction>(py_to_host),
     METH_FASTCALL | METH_KEYWORDS,
     "to_host(tensor, dtype=None, *, pin_memory=False, copy=None)\n--\n\n"
     "The tensor-side half of to_numpy: a detached, dense CPU tensor with "
     "conj/neg resolved, in a NumPy-representable dtype unless dtype= says "
     "otherwise. May return its input when nothing changes."},
    {"_to_tensor_batch", reinterpret_cast<PyCFunction>(py_to_tensor_batch),
     METH_FASTCALL | METH_KEYWORDS,
     "Coalesced to_tensor of a list of leaves to one device (private)."},
    {"_to_numpy_batch", reinterpret_cast<PyCFunction>(py_to_numpy_batch),
     METH_FASTCALL | METH_KEYWORDS,
     "Coalesced to_numpy of a list of leaves (private)."},
    {"_transfer_tuning", reinterpret_cast<PyCFunction>(py_transfer_tuning),
     METH_FASTCALL | METH_KEYWORDS,
     "Read or set the transfer engine's knobs (private)."},
    {"_policy_dtype", reinterpret_cast<PyCFunction>(py_policy_dtype),
     METH_FASTCALL | METH_KEYWORDS,
     "_policy_dtype(dtype, explicit=None, float_dtype=torch.float32)\n\n"
     "The dtype the float policy gives (private)."},
    {"_host_dtype", py_host_dtype, METH_O,
     "The dtype to_host produces by default (private)."},
    {"_resolve_device", py_resolve_device, METH_O,
     "The device a kernel would use for `device` (private)."},
    {"_meta_to_host", reinterpret_cast<PyCFunction>(py_meta_to_host),
     METH_FASTCALL | METH_KEYWORDS,
     "torchbridge::to_host on a genuine meta tensor (private)."},
    {"_meta_coerce", reinterpret_cast<PyCFunction>(py_meta_coerce),
     METH_FASTCALL | METH_KEYWORDS,
     "torchbridge::coerce on a genuine meta tensor (private)."},
    {"_drain_releases", py_drain, METH_NOARGS,
     "Run the queued GIL-less releases now (private)."},
    {"_pending_releases", py_pending, METH_NOARGS,
     "How many releases are queued (private)."},
    {"_release_in_native_thread",
     reinterpret_cast<PyCFunction>(py_release_in_native_thread), METH_FASTCALL,
     "Test helper: drop a tensor on a GIL-less native thread (private)."},
    {"_parallel", reinterpret_cast<PyCFunction>(py_parallel), METH_FASTCALL,
     "Pool state, or make thread creation fail, for tests (private)."},
    {"_host_cache", py_host_cache, METH_NOARGS,
     "(blocks, bytes) of freed outputs kept for reuse, for tests (private)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "torchbridge._C",
    "torchbridge's compiled core: NumPy <-> tensor conversion.", -1, methods,
};

}  // namespace
}  // namespace torchbridge::python

PyMODINIT_FUNC PyInit__C() {
  using namespace torchbridge::python;
  if (_import_array() < 0) {
    // Keep NumPy's reason, say what we need.
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_Format(PyExc_ImportError,
                 "torchbridge could not load NumPy's C API (%S); it needs "
                 "NumPy >= 1.22.",
                 value ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return nullptr;
  }
  PyObject* m = PyModule_Create(&module_def);
  if (!m) return nullptr;
  try {
    init_storage_ref(m);
    init_npy(m);
    init_collate(m);
  } catch (const python_error&) {
    Py_DECREF(m);
    return nullptr;
  }
  PyObject* info = Py_BuildValue(
      "{s:s,s:s,s:s,s:s,s:s}", "version", TORCHBRIDGE_VERSION, "torch",
      TORCHBRIDGE_BUILT_TORCH, "numpy_headers", TORCHBRIDGE_BUILT_NUMPY,
      "cuda", TORCHBRIDGE_BUILT_CUDA, "python", PY_VERSION);
  if (!info || PyModule_AddObject(m, "_build_info", info) < 0) {
    Py_XDECREF(info);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
