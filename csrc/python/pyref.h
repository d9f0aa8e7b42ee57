#pragma once
// Releasing Python references from C++ deleters that may run on any thread.

#include <Python.h>

#include <cstddef>

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

}  // namespace torchbridge::python
