// pandas Series, Index, DataFrame (and ExtensionArrays) -> tensors.
// torchbridge/_pandas.py turns the object into plain parts (per column: a
// NumPy view, a mask, a pyarrow array or categorical codes); this file makes
// them columns and core (core/columns.cpp) converts. pandas is imported only
// when an input's type comes from it.

#include "convert.h"
#include "dtypes.h"
#include "pyref.h"

#include "../core/internal.h"

#include <torchbridge/arrow.h>
#include <torchbridge/columns.h>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/object_ptr.h>

#include <exception>
#include <string>
#include <vector>

namespace torchbridge::python {
namespace {

enum Kind { kNumpy = 0, kArrow = 1, kCodes = 2, kRefused = 3, kInBlock = 4 };

std::string str_of(PyObject* o) {
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(o, &n);
  if (!s) throw python_error();
  return std::string(s, static_cast<size_t>(n));
}

// A column label for messages: UTF-8, with anything that is not (a lone
// surrogate) escaped rather than failing.
std::string label_of(PyObject* o) {
  THPObjectPtr b(PyUnicode_AsEncodedString(o, "utf-8", "backslashreplace"));
  if (!b) throw python_error();
  return std::string(PyBytes_AS_STRING(b.get()), static_cast<size_t>(PyBytes_GET_SIZE(b.get())));
}

// A 1-D ndarray part of `n` rows (the translator's contract; checked).
PyArrayObject* array_part(PyObject* a, int64_t n, const std::string& who, const char* api) {
  TORCH_INTERNAL_ASSERT(PyArray_Check(a), "_pandas.parts: an ndarray part");
  auto* arr = reinterpret_cast<PyArrayObject*>(a);
  TORCH_CHECK_VALUE(PyArray_NDIM(arr) == 1 && PyArray_DIM(arr, 0) == n, api, ": ", who,
      " has shape ", std::to_string(PyArray_NDIM(arr) ? PyArray_DIM(arr, 0) : 0),
      " where ", std::to_string(n), " rows were expected.");
  return arr;
}

std::string column_words(const std::string& name, bool two_d, const std::string& what) {
  if (!two_d || name.empty()) return what;
  return "column '" + name + "' of " + what;
}

PyObject* translator() {
  static PyObject* parts = [] {
    THPObjectPtr m(PyImport_ImportModule("torchbridge._pandas"));
    if (!m) throw python_error();
    PyObject* f = PyObject_GetAttrString(m.get(), "parts");
    if (!f) throw python_error();
    return f;  // kept for the process's life
  }();
  return parts;
}

}  // namespace

bool is_pandas(PyObject* obj) {
  // "pandas", "pandas.core.frame", ...: subclasses of DataFrame count.
  return defined_in(obj, "pandas");
}

namespace {

// The tensor of one parts tuple (not None).
at::Tensor convert(PyObject* p, const ToTensorOptions& o, const char* api,
                   bool* shared_readonly) {
  TORCH_INTERNAL_ASSERT(PyTuple_Check(p) && PyTuple_GET_SIZE(p) == 6, "_pandas.parts: a 6-tuple");
  ColumnsOptions layout;
  layout.two_d = PyObject_IsTrue(PyTuple_GET_ITEM(p, 0)) == 1;
  layout.rows = PyLong_AsLongLong(PyTuple_GET_ITEM(p, 1));
  if (layout.rows == -1 && PyErr_Occurred()) throw python_error();
  layout.what = str_of(PyTuple_GET_ITEM(p, 2));
  layout.fill_hint = "fill them first (.fillna(0))";
  PyObject* list = PyTuple_GET_ITEM(p, 3);
  PyObject* whole = PyTuple_GET_ITEM(p, 4);
  TORCH_INTERNAL_ASSERT(PyList_Check(list), "_pandas.parts: a list of columns");
  const Py_ssize_t k = PyList_GET_SIZE(list);
  const int64_t n = layout.rows;

  // Refusals first, before anything is read.
  for (Py_ssize_t j = 0; j < k; ++j) {
    PyObject* c = PyList_GET_ITEM(list, j);
    if (PyLong_AsLong(PyTuple_GET_ITEM(c, 1)) != kRefused) continue;
    const std::string name = label_of(PyTuple_GET_ITEM(c, 0));
    TORCH_CHECK_TYPE(false, api, ": ", column_words(name, layout.two_d, layout.what),
        " holds ", str_of(PyTuple_GET_ITEM(c, 2)), ", which no tensor dtype holds; ",
        str_of(PyTuple_GET_ITEM(c, 3)), ".");
  }

  // One NumPy block viewed as the whole (rows, k) result converts as that
  // array would: shared on copy=False (the caller's promise for read-only
  // memory), else one copy in the block's (column-major) order, cast on the
  // way, which is what df.to_numpy(dtype) costs.
  if (whole != Py_None) {
    THPObjectPtr keep;
    auto* block = reinterpret_cast<PyArrayObject*>(whole);
    ArrayView v = array_view(block, o, /*own=*/true, /*fresh=*/false, keep);
    at::Tensor out;
    {
      GilRelease nogil((o.device.has_value() && !o.device->is_cpu()) ||
                       PyArray_NBYTES(block) >= kReleaseGilBytes);
      out = detail::to_tensor(v, o, api);
    }
    if (shared_readonly) *shared_readonly = out.numel() > 0;
    return out;
  }

  std::vector<Column> columns(static_cast<size_t>(k));
  std::vector<THPObjectPtr> keep(static_cast<size_t>(k));
  // pandas' numeric NumPy blocks: row i of a (columns, rows) block is the
  // column at positions[i]; each becomes a view of that row.
  PyObject* blocks = PyTuple_GET_ITEM(p, 5);
  TORCH_INTERNAL_ASSERT(PyList_Check(blocks), "_pandas.parts: a list of blocks");
  std::vector<char> filled(static_cast<size_t>(k), 0);
  std::vector<THPObjectPtr> keep_blocks(static_cast<size_t>(PyList_GET_SIZE(blocks)));
  for (Py_ssize_t b = 0; b < PyList_GET_SIZE(blocks); ++b) {
    PyObject* t = PyList_GET_ITEM(blocks, b);
    TORCH_INTERNAL_ASSERT(PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 3, "_pandas.parts: a block");
    PyObject* pos = PyTuple_GET_ITEM(t, 0);
    PyObject* names = PyTuple_GET_ITEM(t, 2);
    TORCH_INTERNAL_ASSERT(PyList_Check(pos) && PyArray_Check(PyTuple_GET_ITEM(t, 1)),
                          "_pandas.parts: block positions and values");
    auto* arr = reinterpret_cast<PyArrayObject*>(PyTuple_GET_ITEM(t, 1));
    const Py_ssize_t rows_here = PyList_GET_SIZE(pos);
    TORCH_INTERNAL_ASSERT(PyArray_NDIM(arr) == 2 && PyArray_DIM(arr, 0) == rows_here &&
                              PyArray_DIM(arr, 1) == n &&
                              (names == Py_None ||
                               (PyList_Check(names) && PyList_GET_SIZE(names) == rows_here)),
                          "_pandas.parts: a (columns, rows) block");
    // Row views own nothing: only a result of several columns (always a
    // copy) may come from them (a one-column frame is `whole` or a column).
    TORCH_INTERNAL_ASSERT(k > 1, "_pandas.parts: a block in a one-column frame");
    const ArrayView whole_block =
        array_view(arr, o, /*own=*/false, /*fresh=*/false, keep_blocks[static_cast<size_t>(b)]);
    for (Py_ssize_t i = 0; i < rows_here; ++i) {
      const long j = PyLong_AsLong(PyList_GET_ITEM(pos, i));
      if (j == -1 && PyErr_Occurred()) throw python_error();
      TORCH_INTERNAL_ASSERT(j >= 0 && j < k && !filled[static_cast<size_t>(j)],
                            "_pandas.parts: a block position");
      filled[static_cast<size_t>(j)] = 1;
      Column& col = columns[static_cast<size_t>(j)];
      if (names != Py_None) col.name = label_of(PyList_GET_ITEM(names, i));
      Segment s;
      ArrayView& v = s.values;  // the block's view, one row of it; no owner (k > 1)
      v.data = static_cast<char*>(whole_block.data) + i * whole_block.strides[0];
      v.shape = {whole_block.shape[1]};
      v.strides = {whole_block.strides[1]};
      v.dtype = whole_block.dtype;
      v.writable = whole_block.writable;
      v.device = whole_block.device;
      v.cast_from = whole_block.cast_from;
      col.segments.push_back(std::move(s));
    }
  }
  for (Py_ssize_t j = 0; j < k; ++j) {
    PyObject* c = PyList_GET_ITEM(list, j);
    Column& col = columns[static_cast<size_t>(j)];
    if (PyLong_AsLong(PyTuple_GET_ITEM(c, 1)) == kInBlock) {
      TORCH_INTERNAL_ASSERT(filled[static_cast<size_t>(j)], "_pandas.parts: a column in no block");
      continue;
    }
    col.name = label_of(PyTuple_GET_ITEM(c, 0));
    const std::string who = column_words(col.name, layout.two_d, layout.what);
    const long kind = PyLong_AsLong(PyTuple_GET_ITEM(c, 1));
    PyObject* a = PyTuple_GET_ITEM(c, 2);
    PyObject* mask = PyTuple_GET_ITEM(c, 3);
    if (kind == kArrow) {
      // An Arrow-backed column (int64[pyarrow]): its chunks are segments.
      auto t = arrow_table(a, who, api);
      TORCH_INTERNAL_ASSERT(!t.layout.two_d && t.columns.size() == 1,
                            "_pandas.parts: an Arrow column");
      col.segments = std::move(t.columns[0].segments);
      col.as_type = t.columns[0].as_type;
      TORCH_CHECK_VALUE(col.length() == n, api, ": ", who, " has ",
          std::to_string(col.length()), " values for ", std::to_string(n), " rows.");
      continue;
    }
    auto* arr = array_part(a, n, who, api);
    Segment s;
    // The parts tuple holds every array for the call: views own a
    // reference only for the one that may be shared.
    s.values = array_view(arr, o, /*own=*/k == 1, /*fresh=*/false, keep[j]);
    if (kind == kCodes) col.as_type = at::kLong;
    if (mask != Py_None) {
      auto* m = array_part(mask, n, who + "'s mask", api);
      TORCH_INTERNAL_ASSERT(PyArray_TYPE(m) == NPY_BOOL, "_pandas.parts: a bool mask");
      s.validity.kind = Validity::Kind::kByteMask;
      s.validity.data = static_cast<const uint8_t*>(PyArray_DATA(m));
      s.validity.stride = PyArray_STRIDE(m, 0);
    }
    col.segments.push_back(std::move(s));
  }
  return columns_tensor(columns, layout, o, api, shared_readonly);
}

}  // namespace

std::optional<at::Tensor> pandas_to_tensor(PyObject* obj, const ToTensorOptions& o,
                                           const char* api, bool* shared_readonly) {
  // Column labels serve only error messages, and reading them is most of a
  // small frame's cost (an Arrow-backed string Index takes 4 us to list):
  // the first pass goes without them; on an error of ours (c10::Error: the
  // rules' ValueError/TypeError) the conversion runs again with them, to
  // raise the same error naming the column. Python's errors (an interrupt,
  // pyarrow's) propagate at once.
  THPObjectPtr parts(PyObject_CallFunctionObjArgs(translator(), obj, Py_False, nullptr));
  if (!parts) throw python_error();
  if (parts.get() == Py_None) return std::nullopt;
  // Only a 2-D result's messages name columns.
  const bool named = PyObject_IsTrue(PyTuple_GET_ITEM(parts.get(), 0)) == 1;
  std::exception_ptr first;
  try {
    return convert(parts.get(), o, api, shared_readonly);
  } catch (const c10::Error&) {
    if (!named) throw;
    first = std::current_exception();
  }
  // The same error, naming its column; if reading the labels fails (a
  // label whose repr raises), the first error stands.
  try {
    parts = THPObjectPtr(PyObject_CallFunctionObjArgs(translator(), obj, Py_True, nullptr));
    if (!parts) throw python_error();
    TORCH_INTERNAL_ASSERT(parts.get() != Py_None, "_pandas.parts: the same object twice");
    return convert(parts.get(), o, api, shared_readonly);
  } catch (const c10::Error&) {
    throw;
  } catch (...) {
    PyErr_Clear();
    std::rethrow_exception(first);
  }
}

}  // namespace torchbridge::python
