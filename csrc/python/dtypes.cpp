#include "dtypes.h"

#include <torchbridge/core.h>

#include "../format/dtypes.h"
#include "../format/util.h"

#include <c10/util/Exception.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/object_ptr.h>

#include <vector>

namespace torchbridge::python {

std::string py_str(PyObject* obj) {
  PyObject* s = PyObject_Str(obj);
  if (!s) {
    PyErr_Clear();
    return "?";
  }
  const char* c = PyUnicode_AsUTF8(s);
  std::string out = c ? c : "?";
  if (!c) PyErr_Clear();
  Py_DECREF(s);
  return out;
}

namespace {

// ml_dtypes registers its types with NumPy as user dtypes whose numbers are
// assigned at import, so they are looked up by name once and cached.
struct MlDtype {
  const char* name;
  at::ScalarType scalar_type;
  int type_num = -1;
  PyArray_Descr* descr = nullptr;  // strong, never released
};

MlDtype ml_table[] = {
#define TORCHBRIDGE_ML_DTYPE_ROW(name, Torch) {name, at::ScalarType::Torch},
    TORCHBRIDGE_FORALL_ML_DTYPES(TORCHBRIDGE_ML_DTYPE_ROW)
#undef TORCHBRIDGE_ML_DTYPE_ROW
};
enum class MlState { kUnknown, kLoaded, kAbsent };
MlState ml_state = MlState::kUnknown;

// Imports ml_dtypes on first need. Arrays of its dtypes can only exist once
// it is imported, so for inputs this costs nothing extra; for an export it
// is the user asking for it.
bool ml_dtypes_available() {
  if (ml_state != MlState::kUnknown) return ml_state == MlState::kLoaded;
  PyObject* mod = PyImport_ImportModule("ml_dtypes");
  if (!mod) {
    PyErr_Clear();
    ml_state = MlState::kAbsent;
    return false;
  }
  for (auto& e : ml_table) {
    PyObject* type = PyObject_GetAttrString(mod, e.name);
    if (!type) {  // older ml_dtypes without this type
      PyErr_Clear();
      continue;
    }
    PyArray_Descr* d = nullptr;
    if (PyArray_DescrConverter(type, &d) && d) {
      e.type_num = d->type_num;
      e.descr = d;
    } else {
      PyErr_Clear();
    }
    Py_DECREF(type);
  }
  Py_DECREF(mod);
  ml_state = MlState::kLoaded;
  return true;
}

PyObject* torch_module() {
  static PyObject* torch = [] {
    PyObject* m = PyImport_ImportModule("torch");
    if (!m) throw python_error();
    return m;
  }();
  return torch;
}

// Numbers are formatted with std::to_string, never through iostreams: on
// some toolchains (g++ 13 with the torch 2.11 wheels) the iostream numeric
// formatting instantiated in this module segfaults. See csrc/README.md.
std::string index_str(const std::vector<Py_ssize_t>& path) {
  std::string out;
  for (auto i : path) out += "[" + std::to_string(i) + "]";
  return out;
}

// The shape of a nested sequence, or nullopt with `why` set at the first
// element whose shape differs from its first sibling's.
std::optional<std::vector<int64_t>> nested_shape(
    PyObject* obj, std::vector<Py_ssize_t>& path, std::string& why,
    int depth = 0) {
  if (PyArray_Check(obj)) {
    auto* a = reinterpret_cast<PyArrayObject*>(obj);
    return std::vector<int64_t>(PyArray_DIMS(a),
                                PyArray_DIMS(a) + PyArray_NDIM(a));
  }
  if (!(PyList_Check(obj) || PyTuple_Check(obj)) || depth > 64)
    return std::vector<int64_t>{};  // a scalar leaf
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
  std::vector<int64_t> inner;
  for (Py_ssize_t i = 0; i < n; ++i) {
    path.push_back(i);
    auto s = nested_shape(PySequence_Fast_GET_ITEM(obj, i), path, why,
                          depth + 1);
    if (!s) return std::nullopt;
    if (i == 0) {
      inner = *s;
    } else if (*s != inner) {
      auto first = path;
      first.back() = 0;
      why = "element " + index_str(path) + " has shape " + format::tuple_str(*s) +
            ", but element " + index_str(first) + " has shape " +
            format::tuple_str(inner);
      return std::nullopt;
    }
    path.pop_back();
  }
  std::vector<int64_t> out{n};
  out.insert(out.end(), inner.begin(), inner.end());
  return out;
}

// What an object array holds, for its error message.
std::string describe_object_array(PyArrayObject* arr) {
  PyObject* flat = PyArray_Ravel(arr, NPY_CORDER);
  if (!flat) {
    PyErr_Clear();
    return "it holds arbitrary Python objects";
  }
  PyObject* list = PyArray_ToList(reinterpret_cast<PyArrayObject*>(flat));
  Py_DECREF(flat);
  if (!list) {
    PyErr_Clear();
    return "it holds arbitrary Python objects";
  }
  const Py_ssize_t n = PyList_GET_SIZE(list);
  bool all_numbers = n > 0, all_arrays = n > 0;
  PyObject* odd = nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* e = PyList_GET_ITEM(list, i);
    const bool number = PyLong_Check(e) || PyFloat_Check(e) ||
                        PyComplex_Check(e) || PyBool_Check(e);
    const bool arraylike =
        PyArray_Check(e) || PyList_Check(e) || PyTuple_Check(e);
    all_numbers &= number;
    all_arrays &= arraylike;
    if (!number && !arraylike && !odd) odd = e;
  }
  std::string out;
  if (all_arrays) {
    // Ragged lists: say which element differs, with its index in `arr`.
    std::vector<Py_ssize_t> path;
    std::string why;
    if (!nested_shape(list, path, why)) {
      out = "it was built from ragged sequences: " + why +
            (PyArray_NDIM(arr) > 1 ? " (the first index counts arr.flat)"
                                   : "") +
            "; pad them to one shape, or convert each element on its own";
    } else {
      out = "it holds equal-shape arrays or lists; build a numeric array "
            "first: np.stack(list(arr.flat))";
    }
  } else if (all_numbers) {
    out = "it holds Python numbers; convert it first with "
          "arr.astype(np.float64) (or the numeric dtype you want)";
  } else {
    out = std::string("it holds arbitrary Python objects (e.g. ") +
          (odd ? Py_TYPE(odd)->tp_name : "?") +
          "), and tensors hold only numbers; convert them to numbers first";
  }
  Py_DECREF(list);
  return out;
}

}  // namespace

std::optional<at::ScalarType> scalar_type_of(PyArray_Descr* d) {
  const int num = d->type_num;
  if (PyTypeNum_ISINTEGER(num)) {
    // By width, not by C type: NPY_INT/NPY_LONG/NPY_LONGLONG alias
    // differently across platforms.
    const char kind = PyTypeNum_ISSIGNED(num) ? 'i' : 'u';
    const auto width = PyDataType_ELSIZE(d);
#define TORCHBRIDGE_DTYPE_BY_WIDTH(Id, name, k, size, Torch, Npy) \
    if (k == kind && size == width) return at::ScalarType::Torch;
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_BY_WIDTH)
#undef TORCHBRIDGE_DTYPE_BY_WIDTH
    return std::nullopt;
  }
  switch (num) {
#define TORCHBRIDGE_DTYPE_FROM_NPY(Id, name, kind, size, Torch, Npy) \
  case NPY_##Npy: return at::ScalarType::Torch;
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_FROM_NPY)
#undef TORCHBRIDGE_DTYPE_FROM_NPY
    default:
      break;
  }
  if (num >= NPY_USERDEF && ml_dtypes_available()) {
    for (const auto& e : ml_table)
      if (e.type_num == num) return e.scalar_type;
  }
  return std::nullopt;
}

PyArray_Descr* descr_of(at::ScalarType t) {
  int num = -1;
  switch (t) {
#define TORCHBRIDGE_DTYPE_TO_NPY(Id, name, kind, size, Torch, Npy) \
  case at::ScalarType::Torch: num = NPY_##Npy; break;
    TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_DTYPE_TO_NPY)
#undef TORCHBRIDGE_DTYPE_TO_NPY
    default: break;
  }
  if (num >= 0) return PyArray_DescrFromType(num);
  if (ml_dtypes_available()) {
    for (const auto& e : ml_table) {
      if (e.scalar_type == t && e.descr) {
        Py_INCREF(e.descr);
        return e.descr;
      }
    }
  }
  return nullptr;
}

void check_not_ragged(PyObject* seq, const char* api) {
  std::vector<Py_ssize_t> path;
  std::string why;
  if (!nested_shape(seq, path, why)) {
    TORCH_CHECK_TYPE(false, api, ": the nested sequence is ragged: ", why,
        ", so it has no array shape; pad the sequences to one length, or "
        "convert them one by one.");
  }
}

void raise_unsupported_dtype(PyArray_Descr* d, const char* api,
                             PyArrayObject* arr) {
  const std::string name = py_str(reinterpret_cast<PyObject*>(d));
  const int num = d->type_num;
  const char kind = d->kind;
  std::string what;
  if (num == NPY_OBJECT && arr && PyArray_NDIM(arr) == 0) {
    // np.asarray wraps any object (None, a dict) in a 0-d object array:
    // name the object, not the array NumPy made of it.
    THPObjectPtr item(PyArray_GETITEM(arr, PyArray_BYTES(arr)));
    PyErr_Clear();
    PyObject* o = item.get();
    if (o && !PyNumber_Check(o) && !PySequence_Check(o)) {
      THPObjectPtr abc(PyImport_ImportModule("collections.abc"));
      THPObjectPtr m(abc ? PyObject_GetAttrString(abc.get(), "Mapping") : nullptr);
      const bool mapping = m && PyObject_IsInstance(o, m.get()) == 1;
      PyErr_Clear();
      TORCH_CHECK_TYPE(false, api, ": got ", Py_TYPE(o)->tp_name,
          ", which is not an array-like, so it has no tensor form. ",
          mapping ? "For a mapping of arrays, use torchbridge.tree_to_tensor, "
                    "which converts every leaf and keeps the keys."
                  : "Pass an ndarray, a tensor, a NumPy scalar, a list of "
                    "numbers, or an object with __array__, "
                    "__array_interface__ or the buffer protocol (containers: "
                    "torchbridge.tree_to_tensor).");
    }
  }
  if (num == NPY_OBJECT) {
    what = "object arrays cannot become tensors: " +
           (arr ? describe_object_array(arr)
                : std::string("they hold arbitrary Python objects"));
  } else if (num == NPY_LONGDOUBLE || num == NPY_CLONGDOUBLE) {
    what = "torch has no extended-precision (long double) dtype; pass "
           "dtype= to say what to cast to (e.g. dtype=torch.float64)";
  } else if (num == NPY_UNICODE || kind == 'T') {
    what = "torch has no string tensors; map the strings to numbers first "
           "(e.g. a vocabulary lookup, or arr.astype(np.float32) for "
           "numeric text)";
  } else if (num == NPY_STRING) {
    what = "arrays of byte strings have no tensor form; for raw bytes use "
           "np.frombuffer(data, dtype=np.uint8)";
  } else if (num == NPY_VOID && PyDataType_HASFIELDS(d)) {
    what = "structured arrays have no tensor form; convert each field on "
           "its own, e.g. to_tensor(arr['" +
           [&] {
             PyObject* names = PyObject_GetAttrString(
                 reinterpret_cast<PyObject*>(d), "names");
             std::string first = "name";
             if (names && PyTuple_Check(names) && PyTuple_GET_SIZE(names))
               first = py_str(PyTuple_GET_ITEM(names, 0));
             Py_XDECREF(names);
             PyErr_Clear();
             return first;
           }() +
           "']), or use numpy.lib.recfunctions.structured_to_unstructured";
  } else if (num == NPY_VOID) {
    what = "void arrays hold opaque bytes; view them as bytes with "
           "arr.view(np.uint8)";
  } else if (num == NPY_DATETIME || num == NPY_TIMEDELTA) {
    what = "torch has no datetime dtype; convert to integer ticks with "
           "arr.view(np.int64) (counts of the dtype's unit) or to floats, "
           "e.g. arr / np.timedelta64(1, 's')";
  } else if (num >= NPY_USERDEF) {
    what = "torch has no equivalent of this dtype; convert it first, e.g. "
           "arr.astype(np.float32)";
  } else {
    what = "torch has no equivalent of this dtype; convert it first, e.g. "
           "arr.astype(np.float32)";
  }
  TORCH_CHECK_TYPE(false, api, ": cannot convert a NumPy array of dtype ",
                   name, ": ", what, ".");
}

std::optional<at::ScalarType> parse_torch_dtype(PyObject* o, const char* api,
                                                const char* arg) {
  if (!o || o == Py_None) return std::nullopt;
  if (THPDtype_Check(o)) return reinterpret_cast<THPDtype*>(o)->scalar_type;
  PyArray_Descr* d = nullptr;
  if (PyArray_DescrCheck(o)) {
    d = reinterpret_cast<PyArray_Descr*>(o);
    Py_INCREF(d);
  } else if (!PyArray_DescrConverter(o, &d)) {
    PyErr_Clear();
    d = nullptr;
    // Names NumPy lacks but torch has: "bfloat16", "float8_e4m3fn", ...
    if (PyUnicode_Check(o)) {
      PyObject* attr = PyObject_GetAttr(torch_module(), o);
      if (attr && THPDtype_Check(attr)) {
        const auto st = reinterpret_cast<THPDtype*>(attr)->scalar_type;
        Py_DECREF(attr);
        return st;
      }
      Py_XDECREF(attr);
      PyErr_Clear();
      TORCH_CHECK_TYPE(false, api, ": ", arg, "='", py_str(o),
          "' is not a dtype name NumPy or torch knows; use e.g. 'float32', "
          "'int64', 'bfloat16', or a torch/NumPy dtype object.");
    }
    TORCH_CHECK_TYPE(false, api, ": ", arg, " must be a torch.dtype, a NumPy "
        "dtype or its name, got ", Py_TYPE(o)->tp_name, " (", py_str(o),
        ").");
  }
  auto st = scalar_type_of(d);
  const std::string name = py_str(reinterpret_cast<PyObject*>(d));
  Py_DECREF(d);
  TORCH_CHECK_TYPE(st.has_value(), api, ": ", arg, "=", name,
      " has no torch equivalent; pick a torch dtype such as torch.float64 "
      "or torch.float32.");
  return st;
}

PyArray_Descr* parse_numpy_dtype(PyObject* o, const char* api) {
  if (!o || o == Py_None) return nullptr;
  std::optional<at::ScalarType> st;
  if (THPDtype_Check(o)) {
    st = reinterpret_cast<THPDtype*>(o)->scalar_type;
  } else {
    PyArray_Descr* d = nullptr;
    if (PyArray_DescrConverter(o, &d)) return d;
    PyErr_Clear();
    if (PyUnicode_Check(o)) {
      PyObject* attr = PyObject_GetAttr(torch_module(), o);
      if (attr && THPDtype_Check(attr))
        st = reinterpret_cast<THPDtype*>(attr)->scalar_type;
      Py_XDECREF(attr);
      PyErr_Clear();
    }
    TORCH_CHECK_TYPE(st.has_value(), api, ": dtype=", py_str(o),
        " is not a NumPy dtype, a dtype name, or a torch dtype; use e.g. "
        "np.float32, 'int64' or torch.float16.");
  }
  PyArray_Descr* d = descr_of(*st);
  if (d) return d;
  const bool needs_ml = *st == at::kBFloat16 || c10::isFloat8Type(*st);
  TORCH_CHECK_TYPE(!needs_ml, api, ": NumPy has no ", dtype_name(*st),
      " dtype; install ml_dtypes (pip install ml_dtypes) for a bit-exact "
      "array, or pass dtype=np.float32 for an exact upcast.");
  TORCH_CHECK_TYPE(false, api, ": NumPy has no equivalent of torch.",
      dtype_name(*st), "; pass a NumPy dtype such as np.float32.");
}

std::optional<at::Device> parse_device(PyObject* o, const char* api) {
  if (!o || o == Py_None) return std::nullopt;
  if (THPDevice_Check(o)) return reinterpret_cast<THPDevice*>(o)->device;
  if (PyUnicode_Check(o)) {
    const char* s = PyUnicode_AsUTF8(o);
    if (!s) throw python_error();
    try {
      return at::Device(std::string(s));
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, api, ": device='", s, "' is not a device "
          "string; use 'cpu', 'cuda' or 'cuda:1' (", e.msg(), ").");
    }
  }
  if (PyLong_Check(o) && !PyBool_Check(o)) {
    const long idx = PyLong_AsLong(o);
    if (idx == -1 && PyErr_Occurred()) throw python_error();
    TORCH_CHECK_VALUE(idx >= 0 && idx < 1 << 15, api, ": device=",
        std::to_string(idx),
        " is not a CUDA device index.");
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(idx));
  }
  TORCH_CHECK_TYPE(false, api, ": device must be None, a torch.device, a "
      "string such as 'cuda:0', or a CUDA index, got ", Py_TYPE(o)->tp_name,
      ".");
}

}  // namespace torchbridge::python
