#include "pyref.h"

#include <torch/csrc/Exceptions.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__GLIBCXX__)
#include <cxxabi.h>  // abi::__forced_unwind
#endif

namespace torchbridge::python {
namespace {

// Heap-allocated and never freed: deleters may run during static destruction,
// after ordinary globals are gone.
std::mutex& queue_mutex() {
  static auto* m = new std::mutex();
  return *m;
}
std::vector<PyObject*>& queue() {
  static auto* q = new std::vector<PyObject*>();
  return *q;
}
std::atomic<size_t> queued{0};
std::atomic<bool> scheduled{false};

int drain_callback(void*) {
  drain_pending_releases();
  return 0;
}

}  // namespace

void drain_pending_releases() {
  if (queued.load(std::memory_order_acquire) == 0) return;
  std::vector<PyObject*> batch;
  {
    std::lock_guard<std::mutex> lock(queue_mutex());
    batch.swap(queue());
    queued.store(0, std::memory_order_release);
    scheduled.store(false, std::memory_order_release);
  }
  for (PyObject* o : batch) Py_DECREF(o);
}

size_t pending_release_count() {
  return queued.load(std::memory_order_acquire);
}

void release_pyobject(void* ctx) {
  auto* obj = static_cast<PyObject*>(ctx);
  if (!Py_IsInitialized()) return;  // interpreter gone: leak on purpose
  if (PyGILState_Check()) {
    Py_DECREF(obj);
    return;
  }
  if (interpreter_finalizing()) return;  // no safe way to take the GIL now
  {
    std::lock_guard<std::mutex> lock(queue_mutex());
    queue().push_back(obj);
    queued.fetch_add(1, std::memory_order_release);
  }
  if (!scheduled.exchange(true, std::memory_order_acq_rel)) {
    // Py_AddPendingCall needs no GIL. When its small queue is full, the
    // objects wait for the next conversion call, the next release, or exit.
    if (Py_AddPendingCall(drain_callback, nullptr) != 0)
      scheduled.store(false, std::memory_order_release);
  }
}

void park_thread() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

void GilRelease::restore(PyThreadState* state) noexcept {
  // Finalizing: CPython would end this thread inside PyEval_RestoreThread.
  if (interpreter_finalizing()) park_thread();
#if defined(__GLIBCXX__)
  // Finalization can also begin while this thread waits for the GIL; the
  // pthread_exit then arrives as a forced unwind, caught here before it
  // reaches the noexcept boundary. The handler never returns, so the
  // unwind is not swallowed (which glibc would abort on), just never ends.
  try {
    PyEval_RestoreThread(state);
  } catch (abi::__forced_unwind&) {
    park_thread();
  }
#else
  PyEval_RestoreThread(state);
#endif
}

PyObject* interned(const char* s) {
  PyObject* o = PyUnicode_InternFromString(s);
  if (!o) throw python_error();
  return o;
}

bool defined_in(PyObject* obj, std::string_view package) {
  PyObject* mro = Py_TYPE(obj)->tp_mro;
  if (!mro || !PyTuple_Check(mro)) return false;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); ++i) {
    auto* t = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i));
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || !t->tp_dict) continue;
    PyObject* m = PyDict_GetItemString(t->tp_dict, "__module__");  // borrowed
    if (!m || !PyUnicode_Check(m)) continue;
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(m, &n);
    if (!s) {
      PyErr_Clear();
      continue;
    }
    const std::string_view module(s, static_cast<size_t>(n));
    if (module.substr(0, package.size()) == package &&
        (module.size() == package.size() || module[package.size()] == '.'))
      return true;
  }
  return false;
}

}  // namespace torchbridge::python
