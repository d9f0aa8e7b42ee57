#pragma once
// Releasing Python references from C++ deleters that may run on any thread,
// releasing the GIL around long C++ work, and small lookups the front-ends
// share.

#include <Python.h>

#include <cstddef>
#include <string_view>

namespace torchbridge::python {

// DataPtr deleter for memory owned by a Python object (`ctx` is a strong
// reference). Never blocks on the GIL: with the GIL held it decrefs at once;
// without it the decref is queued and run by the interpreter's main thread
// (Py_AddPendingCall), so a thread that frees a tensor while another thread
// holds the GIL and waits on it cannot deadlock (pytorch/pytorch#83101).
// Once the interpreter is finalizing or gone the reference is leaked on
// purpose: touching Python then would crash (pytorch/pytorch#38228).
void release_pyobject(void* ctx);

// Runs the queued decrefs now. Needs the GIL. Cheap when nothing is queued;
// called on every conversion and at exit.
void drain_pending_releases();

// How many decrefs are queued (for tests).
size_t pending_release_count();

// Never returns: the calling thread sleeps until the process ends. For a
// thread that must not run Python again because the interpreter is
// finalizing (see GilRelease).
[[noreturn]] void park_thread();

// Whether the interpreter has begun finalizing (Py_IsFinalizing, public
// from Python 3.13).
inline bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

// A new interned str, kept for the process's life (attribute names looked
// up on every call). Throws python_error on failure.
PyObject* interned(const char* s);

// Whether a class in type(obj)'s MRO (subclasses count) was defined in
// `package` or a submodule of it: its __module__ is "package" or starts
// with "package.". Reads class dicts only: the package is never imported.
bool defined_in(PyObject* obj, std::string_view package);

// Releases the GIL for its lifetime (RAII, exception safe).
//
// Taking the GIL back can end the thread: once the interpreter finalizes,
// CPython (before 3.14) calls pthread_exit in PyEval_RestoreThread on every
// thread but the finalizing one (daemon threads still in our code). That
// unwinds the stack, and unwinding out of this noexcept destructor calls
// std::terminate (SIGABRT at exit). So the thread is parked instead: the
// process is exiting, and unwinding our frames without the GIL would run
// Py_DECREFs in THPObjectPtr destructors.
class GilRelease {
 public:
  explicit GilRelease(bool active = true)
      : state_(active ? PyEval_SaveThread() : nullptr) {}
  ~GilRelease() {
    if (state_) restore(state_);
  }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  static void restore(PyThreadState* state) noexcept;
  PyThreadState* state_;
};

}  // namespace torchbridge::python
