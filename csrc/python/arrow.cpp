// Arrow producers (anything with __arrow_c_array__ / __arrow_c_stream__:
// pyarrow Array, ChunkedArray, Table, RecordBatch, polars, DuckDB,
// nanoarrow) -> tensors: the PyCapsule protocol only. core/arrow.cpp reads
// the C data interface, core/columns.cpp applies the rules.

#include "convert.h"
#include "pyref.h"

#include "../core/internal.h"

#include <torchbridge/arrow.h>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/object_ptr.h>

#include <cstring>
#include <string>

namespace torchbridge::python {
namespace {

constexpr const char* kOurs = "torchbridge.arrow_array";

// Our capsule owns a moved ArrowArray: its destructor calls the producer's
// release callback once. The views hold the capsule through
// release_pyobject, so the release runs with the GIL held (pyarrow's may
// decref NumPy arrays it wraps), deferred when a tensor dies without it.
void destroy_held(PyObject* capsule) {
  auto* a = static_cast<ArrowArray*>(PyCapsule_GetPointer(capsule, kOurs));
  if (a) {
    if (a->release) a->release(a);
    delete a;
  }
  PyErr_Clear();
}

BufferOwner own_held(ArrowArray* held) {
  PyObject* capsule = PyCapsule_New(held, kOurs, &destroy_held);
  if (!capsule) {
    if (held->release) held->release(held);
    delete held;
    throw python_error();
  }
  return BufferOwner(capsule, &release_pyobject);
}

void* capsule_pointer(PyObject* capsule, const char* name, PyObject* obj, const char* api,
                      const char* method) {
  TORCH_CHECK_TYPE(capsule && PyCapsule_CheckExact(capsule), api, ": ",
      Py_TYPE(obj)->tp_name, ".", method, "() returned a ",
      capsule ? Py_TYPE(capsule)->tp_name : "nothing", " where a PyCapsule named \"", name,
      "\" belongs.");
  const char* got = PyCapsule_GetName(capsule);
  TORCH_CHECK_TYPE(got && std::strcmp(got, name) == 0, api, ": ", Py_TYPE(obj)->tp_name, ".",
      method, "() returned a capsule named \"", got ? got : "", "\", not \"", name, "\".");
  void* p = PyCapsule_GetPointer(capsule, name);
  if (!p) throw python_error();
  return p;
}

bool type_has(PyObject* obj, PyObject* name) {
  // Looked up on the type, as Python looks up special methods.
  return PyObject_HasAttr(reinterpret_cast<PyObject*>(Py_TYPE(obj)), name);
}

}  // namespace

std::string type_words(PyObject* obj) {
  const char* n = Py_TYPE(obj)->tp_name;
  const char* dot = std::strrchr(n, '.');
  return std::string("the ") + (dot ? dot + 1 : n);
}

bool is_arrow_producer(PyObject* obj) {
  static PyObject* array = interned("__arrow_c_array__");
  static PyObject* stream = interned("__arrow_c_stream__");
  return type_has(obj, array) || type_has(obj, stream);
}

arrow::Table arrow_table(PyObject* obj, const std::string& what, const char* api) {
  static PyObject* array = interned("__arrow_c_array__");
  static PyObject* stream = interned("__arrow_c_stream__");
  // One array (a pyarrow Array, a RecordBatch) first: a single chunk, which
  // can be shared; else the stream (a ChunkedArray, a Table, polars).
  if (type_has(obj, array)) {
    THPObjectPtr pair(PyObject_CallMethodNoArgs(obj, array));
    if (!pair) throw python_error();
    TORCH_CHECK_TYPE(PyTuple_Check(pair.get()) && PyTuple_GET_SIZE(pair.get()) == 2, api, ": ",
        Py_TYPE(obj)->tp_name, ".__arrow_c_array__() returned a ",
        Py_TYPE(pair.get())->tp_name, ", not a (schema, array) pair of capsules.");
    auto* schema = static_cast<ArrowSchema*>(capsule_pointer(
        PyTuple_GET_ITEM(pair.get(), 0), "arrow_schema", obj, api, "__arrow_c_array__"));
    auto* arr = static_cast<ArrowArray*>(capsule_pointer(
        PyTuple_GET_ITEM(pair.get(), 1), "arrow_array", obj, api, "__arrow_c_array__"));
    // The array moves out of the producer's capsule (which then releases
    // nothing); the schema capsule releases the schema when `pair` goes.
    return arrow::read_array(*schema, arr, what, api, own_held);
  }
  THPObjectPtr capsule(PyObject_CallMethodNoArgs(obj, stream));
  if (!capsule) throw python_error();
  auto* s = static_cast<ArrowArrayStream*>(
      capsule_pointer(capsule.get(), "arrow_array_stream", obj, api, "__arrow_c_stream__"));
  return arrow::read_stream(s, what, api, own_held);
}

at::Tensor columns_tensor(std::vector<Column>& columns, const ColumnsOptions& layout,
                          const ToTensorOptions& o, const char* api, bool* shared_readonly) {
  int64_t bytes = 0;
  const void* single = nullptr;
  bool writable = true;
  for (const auto& c : columns)
    for (const auto& s : c.segments) bytes += s.length() * s.values.dtype.itemsize;
  if (columns.size() == 1 && columns[0].segments.size() == 1) {
    single = columns[0].segments[0].values.data;
    writable = columns[0].segments[0].values.writable;
  }
  at::Tensor out;
  {
    GilRelease nogil((o.device && !o.device->is_cpu()) || bytes >= kReleaseGilBytes);
    out = detail::columns_to_tensor(columns, layout, o, api);
  }
  if (shared_readonly)
    *shared_readonly = !writable && single && out.numel() > 0 && out.data_ptr() == single;
  return out;  // the views (which may hold the producer's buffers) go with the GIL held
}

at::Tensor arrow_to_tensor(PyObject* obj, const ToTensorOptions& o, const char* api,
                           bool* shared_readonly) {
  const std::string what = type_words(obj);
  auto t = arrow_table(obj, what, api);
  return columns_tensor(t.columns, arrow::columns_options(t, what), o, api, shared_readonly);
}

}  // namespace torchbridge::python
