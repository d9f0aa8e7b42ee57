// DLPack producers (anything with __dlpack__ / __dlpack_device__) -> an
// ArrayView: the protocol only. core/dlpack.cpp reads the DLTensor, and
// core/array_view.cpp applies the same rules as for ndarrays.

#include "convert.h"
#include "pyref.h"

#include <torchbridge/array_view.h>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/object_ptr.h>

#include <cstring>

namespace torchbridge::python {
namespace {

// The managed tensor, owned by a capsule of ours whose destructor calls the
// producer's deleter: the view's owner releases the capsule with
// release_pyobject, so the deleter (NumPy's takes the GIL) runs with the
// GIL held, deferred when the storage dies on a thread without it.
template <typename Managed>
void destroy_managed(PyObject* capsule) {
  auto* m = static_cast<Managed*>(PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule)));
  if (m && m->deleter) m->deleter(m);
  PyErr_Clear();
}

// Takes the managed tensor out of the producer's capsule (renamed `used`,
// so the producer no longer frees it) into a capsule of ours that `owner`
// holds; if that capsule cannot be made, the tensor is freed at once.
template <typename Managed>
Managed* take_managed(PyObject* capsule, const char* name, const char* used,
                      const char* ours, BufferOwner& owner) {
  auto* m = static_cast<Managed*>(PyCapsule_GetPointer(capsule, name));
  if (!m) throw python_error();
  if (PyCapsule_SetName(capsule, used) < 0) throw python_error();
  PyObject* own = PyCapsule_New(m, ours, &destroy_managed<Managed>);
  if (!own) {
    if (m->deleter) m->deleter(m);
    throw python_error();
  }
  owner = BufferOwner(own, &release_pyobject);
  return m;
}

// The stream argument for a CUDA producer: the consumer's current stream
// (the producer makes it wait for its pending work), 1 for the legacy
// default stream (0 is not allowed by the protocol).
THPObjectPtr cuda_stream_arg(long index) {
  THPObjectPtr cuda(PyImport_ImportModule("torch.cuda"));
  if (!cuda) throw python_error();
  THPObjectPtr stream(PyObject_CallMethod(cuda.get(), "current_stream", "l", index));
  if (!stream) throw python_error();
  THPObjectPtr handle(PyObject_GetAttrString(stream.get(), "cuda_stream"));
  if (!handle) throw python_error();
  const long long h = PyLong_AsLongLong(handle.get());
  if (h == -1 && PyErr_Occurred()) throw python_error();
  return THPObjectPtr(PyLong_FromLongLong(h == 0 ? 1 : h));
}

bool can_fall_back(PyObject* obj) {
  static PyObject* array = interned("__array__");
  static PyObject* iface = interned("__array_interface__");
  return PyObject_HasAttr(obj, array) || PyObject_HasAttr(obj, iface) ||
         PyObject_CheckBuffer(obj);
}

}  // namespace

bool is_dlpack_producer(PyObject* obj) {
  if (PyList_Check(obj) || PyTuple_Check(obj) || PyFloat_Check(obj) ||
      PyLong_Check(obj) || PyUnicode_Check(obj) || PyDict_Check(obj) || obj == Py_None)
    return false;
  static PyObject* name = interned("__dlpack__");
  return PyObject_HasAttr(obj, name);
}

std::optional<ArrayView> dlpack_view(PyObject* obj, const char* api) {
  static PyObject* dev_name = interned("__dlpack_device__");
  static PyObject* dl_name = interned("__dlpack__");
  THPObjectPtr dev(PyObject_CallMethodNoArgs(obj, dev_name));
  if (!dev) throw python_error();
  long type = 0, index = 0;
  if (!PyArg_ParseTuple(dev.get(), "ll", &type, &index)) {
    PyErr_Clear();
    TORCH_CHECK_TYPE(false, api, ": ", Py_TYPE(obj)->tp_name,
        ".__dlpack_device__() returned a ", Py_TYPE(dev.get())->tp_name,
        ", not a (device_type, device_id) tuple of ints.");
  }
  THPObjectPtr kwargs(PyDict_New());
  if (!kwargs) throw python_error();
  if (type == kDLCUDA || type == kDLCUDAManaged || type == kDLROCM) {
    THPObjectPtr s = cuda_stream_arg(index);
    if (PyDict_SetItemString(kwargs.get(), "stream", s.get()) < 0) throw python_error();
  }
  THPObjectPtr method(PyObject_GetAttr(obj, dl_name));
  if (!method) throw python_error();
  THPObjectPtr empty(PyTuple_New(0));
  if (!empty) throw python_error();
  // DLPack 1.x first (it carries the read-only flag); producers that
  // predate max_version raise TypeError for the keyword.
  THPObjectPtr versioned_kwargs(PyDict_Copy(kwargs.get()));
  THPObjectPtr max_version(Py_BuildValue("(ii)", 1, 0));
  if (!versioned_kwargs || !max_version ||
      PyDict_SetItemString(versioned_kwargs.get(), "max_version", max_version.get()) < 0)
    throw python_error();
  THPObjectPtr capsule(PyObject_Call(method.get(), empty.get(), versioned_kwargs.get()));
  if (!capsule && PyErr_ExceptionMatches(PyExc_TypeError)) {
    PyErr_Clear();
    capsule = THPObjectPtr(PyObject_Call(method.get(), empty.get(), kwargs.get()));
  }
  if (!capsule) {
    // A producer that cannot export this buffer (pyarrow for nulls or
    // strings raises BufferError) but has an array form: use that.
    const bool refused = PyErr_ExceptionMatches(PyExc_BufferError) ||
                         PyErr_ExceptionMatches(PyExc_TypeError) ||
                         PyErr_ExceptionMatches(PyExc_NotImplementedError);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);  // attribute lookups below need a clean state
    if (refused && can_fall_back(obj)) {
      Py_XDECREF(type);
      Py_XDECREF(value);
      Py_XDECREF(tb);
      return std::nullopt;
    }
    PyErr_Restore(type, value, tb);
    throw python_error();
  }
  const char* name = PyCapsule_GetName(capsule.get());
  if (name && std::strcmp(name, "dltensor_versioned") == 0) {
    BufferOwner owner;
    auto* m = take_managed<DLManagedTensorVersioned>(
        capsule.get(), name, "used_dltensor_versioned", "torchbridge.dltensor_versioned", owner);
    TORCH_CHECK_VALUE(m->version.major == DLPACK_MAJOR_VERSION, api,
        ": the DLPack producer ", Py_TYPE(obj)->tp_name, " speaks version ",
        std::to_string(m->version.major), ".", std::to_string(m->version.minor),
        "; torchbridge reads major version ", std::to_string(DLPACK_MAJOR_VERSION), ".");
    return view_of_dlpack(m->dl_tensor, m->flags, std::move(owner));
  }
  if (name && std::strcmp(name, "dltensor") == 0) {
    BufferOwner owner;
    auto* m = take_managed<DLManagedTensor>(capsule.get(), name, "used_dltensor",
                                            "torchbridge.dltensor", owner);
    return view_of_dlpack(m->dl_tensor, 0, std::move(owner));
  }
  TORCH_CHECK_TYPE(false, api, ": ", Py_TYPE(obj)->tp_name, ".__dlpack__() returned a ",
      Py_TYPE(capsule.get())->tp_name, " named \"", name ? name : "", "\", not a DLPack "
      "capsule (\"dltensor\" or \"dltensor_versioned\").");
  return std::nullopt;  // not reached
}

}  // namespace torchbridge::python
