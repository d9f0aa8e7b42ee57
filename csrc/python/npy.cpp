// torchbridge.load / torchbridge.save: .npy and .npz files through the C++
// core's public API (torchbridge::load, npy::save, npz::save), with the GIL
// released while the files are read or written. Python sees malformed files
// as ValueError and I/O failures (torchbridge::IoError) as OSError
// (FileNotFoundError, PermissionError, ...).

#include "args.h"
#include "convert.h"
#include "dtypes.h"

#include "../core/internal.h"  // detail::move_to_device

#include <torchbridge/error.h>
#include <torchbridge/npy.h>

#include <ATen/ATen.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstring>
#include <variant>

namespace torchbridge::python {
namespace {

// str, bytes or os.PathLike -> the file system path, as open() takes it.
std::string fs_path(PyObject* o) {
  PyObject* bytes = nullptr;
  if (!PyUnicode_FSConverter(o, &bytes)) throw python_error();
  std::string s(PyBytes_AS_STRING(bytes),
                static_cast<size_t>(PyBytes_GET_SIZE(bytes)));
  Py_DECREF(bytes);
  return s;
}

// A Python str of an error message: messages hold paths and archive names,
// which may be any bytes, and a strict UTF-8 decode would replace the error
// with a UnicodeDecodeError.
PyObject* message_str(const std::string& m) {
  return PyUnicode_DecodeUTF8(m.data(), static_cast<Py_ssize_t>(m.size()),
                              "backslashreplace");
}

// Runs `f` with the GIL released; torchbridge::Error becomes ValueError
// (OSError for I/O failures, by errno) once the GIL is back.
template <class F>
auto without_gil(F&& f) -> decltype(f()) {
  std::string message;
  int code = 0;
  bool io = false;
  try {
    GilRelease nogil;
    return f();
  } catch (const IoError& e) {
    message = e.what();
    code = e.code();
    io = true;
  } catch (const Error& e) {
    message = e.what();
  }
  PyObject* text = message_str(message);
  if (!text) throw python_error();
  if (io) {
    // OSError(errno, message) picks the subclass for errno.
    PyObject* exc = PyObject_CallFunction(PyExc_OSError, "iN", code, text);
    if (exc) {
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
      Py_DECREF(exc);
    }
  } else {
    PyErr_SetObject(PyExc_ValueError, text);
    Py_DECREF(text);
  }
  throw python_error();
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

PyObject* py_load(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                  PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<3> sig("load", {"path", "mmap", "device"}, 3, 1);
  std::array<PyObject*, 3> a;
  sig.parse(args, nargs, kwnames, a);
  const std::string path = fs_path(a[0]);
  npy::LoadOptions options;
  options.mmap = parse_bool(a[1], false);
  std::optional<at::Device> device = parse_device(a[2], "load");
  if (device) device = resolve_device(*device);
  auto place = [&](at::Tensor t) {
    return device ? detail::move_to_device(t, *device, false) : t;
  };
  // Open, sniff, parse, read and move all without the GIL: a slow or
  // blocking file must not stop the other Python threads.
  Loaded loaded = without_gil([&] {
    Loaded out = torchbridge::load(path, options);
    if (auto* tensor = std::get_if<at::Tensor>(&out)) {
      *tensor = place(*tensor);
    } else {
      for (auto& entry : std::get<npz::Arrays>(out)) entry.second = place(entry.second);
    }
    return out;
  });
  if (auto* tensor = std::get_if<at::Tensor>(&loaded)) {
    return THPVariable_Wrap(std::move(*tensor));
  }
  THPObjectPtr dict(PyDict_New());
  if (!dict) throw python_error();
  for (auto& [name, tensor] : std::get<npz::Arrays>(loaded)) {
    THPObjectPtr key(PyUnicode_DecodeUTF8(name.data(),
                                          static_cast<Py_ssize_t>(name.size()),
                                          "surrogateescape"));
    if (!key) throw python_error();
    THPObjectPtr value(THPVariable_Wrap(std::move(tensor)));
    if (!value || PyDict_SetItem(dict.get(), key.get(), value.get()) < 0) {
      throw python_error();
    }
  }
  return dict.release();
  END_HANDLE_TH_ERRORS
}

bool is_mapping(PyObject* o) {
  if (PyDict_Check(o)) return true;
  static PyObject* mapping = [] {
    THPObjectPtr abc(PyImport_ImportModule("collections.abc"));
    if (!abc) throw python_error();
    PyObject* m = PyObject_GetAttrString(abc.get(), "Mapping");  // kept
    if (!m) throw python_error();
    return m;
  }();
  const int r = PyObject_IsInstance(o, mapping);
  if (r < 0) throw python_error();
  return r == 1;
}

PyObject* py_save(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                  PyObject* kwnames) {
  HANDLE_TH_ERRORS
  static const Signature<3> sig("save", {"path", "obj", "compress"}, 2, 2);
  std::array<PyObject*, 3> a;
  sig.parse(args, nargs, kwnames, a);
  const std::string path = fs_path(a[0]);
  const bool compress = parse_bool(a[2], false);
  PyObject* obj = a[1];
  if (THPVariable_Check(obj)) {
    TORCH_CHECK_VALUE(!compress,
        "save: compress=True applies to .npz archives; pass a dict of "
        "tensors to write one (a .npy file is never compressed).");
    TORCH_CHECK_VALUE(!ends_with(path, ".npz"),
        "save: the path ends in .npz but obj is a single tensor, which is "
        "written as .npy; pass {'name': tensor} to write an archive, or use a "
        ".npy path.");
    const at::Tensor t = THPVariable_Unpack(obj);
    without_gil([&] { npy::save(path, t); });
    Py_RETURN_NONE;
  }
  if (!is_mapping(obj)) {
    PyErr_Format(PyExc_TypeError,
                 "save() expects a torch.Tensor (written as .npy) or a "
                 "mapping of names to tensors (written as .npz), got %s; for "
                 "NumPy arrays use numpy.save, or torchbridge.to_tensor() "
                 "first.",
                 Py_TYPE(obj)->tp_name);
    throw python_error();
  }
  TORCH_CHECK_VALUE(!ends_with(path, ".npy"),
      "save: the path ends in .npy but obj is a mapping, which is written as "
      "a .npz archive; use a .npz path, or pass a single tensor.");
  THPObjectPtr items(PyMapping_Items(obj));
  if (!items) throw python_error();
  npz::Arrays arrays;
  const Py_ssize_t n = PyList_GET_SIZE(items.get());
  arrays.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyList_GET_ITEM(items.get(), i);
    // items() of a Mapping that is not a dict may yield anything.
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
      PyErr_Format(PyExc_TypeError,
                   "save(): obj.items() yielded %.200R (a %s), not a (name, "
                   "tensor) pair; pass a dict (e.g. dict(obj)) or a Mapping "
                   "whose items() yields 2-tuples.",
                   item, Py_TYPE(item)->tp_name);
      throw python_error();
    }
    PyObject* key = PyTuple_GET_ITEM(item, 0);
    PyObject* value = PyTuple_GET_ITEM(item, 1);
    if (!PyUnicode_Check(key)) {
      PyErr_Format(PyExc_TypeError,
                   "save(): archive names must be str, got %s (%.200R); use "
                   "str keys, e.g. {str(k): v for k, v in obj.items()}.",
                   Py_TYPE(key)->tp_name, key);
      throw python_error();
    }
    if (!THPVariable_Check(value)) {
      PyErr_Format(PyExc_TypeError,
                   "save(): the value for %R is a %s, not a torch.Tensor; "
                   "convert it with torchbridge.to_tensor() first.",
                   key, Py_TYPE(value)->tp_name);
      throw python_error();
    }
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(key, &size);
    if (!utf8) throw python_error();
    arrays.emplace_back(std::string(utf8, static_cast<size_t>(size)),
                        THPVariable_Unpack(value));
  }
  npz::SaveOptions options;
  options.compress = compress;
  without_gil([&] { npz::save(path, arrays, options); });
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

PyMethodDef npy_methods[] = {
    {"load", reinterpret_cast<PyCFunction>(py_load),
     METH_FASTCALL | METH_KEYWORDS,
     "load(path, mmap=False, device=None)\n--\n\n"
     "Load a .npy file as a tensor, or a .npz archive as a dict of tensors "
     "(in archive order); the kind is told by the file's first bytes.\n\n"
     "mmap=True maps the file privately (copy-on-write) instead of reading "
     "it: no copy, the same time whatever the size, the tensor is writable "
     "and writes never reach the file. Data that cannot be a view "
     "(byte-swapped, misaligned) raises ValueError saying so; in a .npz "
     "only stored, aligned members are views, the rest are read, and every "
     "member's CRC-32 is verified (views in place, without a copy).\n"
     "device= moves the result there after loading.\n"
     "Malformed files raise ValueError, I/O failures OSError; object "
     "(pickled) arrays are refused. Only regular files load: a FIFO, "
     "socket or device raises OSError without blocking. The file is opened "
     "once and read without holding the GIL."},
    {"save", reinterpret_cast<PyCFunction>(py_save),
     METH_FASTCALL | METH_KEYWORDS,
     "save(path, obj, *, compress=False)\n--\n\n"
     "Write a tensor as .npy (the bytes numpy.save writes), or a mapping of "
     "names to tensors as a .npz archive in the mapping's order (deflated "
     "with compress=True, like numpy.savez_compressed).\n\n"
     "Tensors on any device, requiring grad, conj or sparse are accepted; "
     "dtypes NumPy lacks (bfloat16, float8) raise TypeError: convert them "
     "first (t.float() is exact). The file is replaced atomically (a "
     "temporary in its directory, renamed into place), through symbolic "
     "links; an existing FIFO, socket or device raises OSError and a file "
     "this user may not write PermissionError, before anything is written; "
     "the old file's mode is kept; a file with several hard links is "
     "rewritten in place, as numpy.save does (README: File safety)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

void init_npy(PyObject* module) {
  if (PyModule_AddFunctions(module, npy_methods) < 0) throw python_error();
}

}  // namespace torchbridge::python
