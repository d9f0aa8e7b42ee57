#include "pyref.h"

#include <atomic>
#include <mutex>
#include <vector>

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

bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

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
  if (finalizing()) return;  // no safe way to take the GIL now
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

}  // namespace torchbridge::python
