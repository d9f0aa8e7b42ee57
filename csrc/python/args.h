#pragma once
// A small argument parser for METH_FASTCALL | METH_KEYWORDS functions. The
// conversion entry points are called in hot loops, so they skip pybind11's
// overload machinery and Python wrappers: one pass over kwnames, comparing
// interned strings by pointer first.

#include <Python.h>

#include <torch/csrc/Exceptions.h>

#include <array>
#include <cstring>

namespace torchbridge::python {

template <size_t N>
class Signature {
 public:
  // `names`: every parameter in order; the first `npos` may be passed by
  // position; the first `nrequired` must be passed.
  Signature(const char* fname, std::array<const char*, N> names, int npos,
            int nrequired)
      : fname_(fname), names_(names), npos_(npos), nrequired_(nrequired) {
    for (size_t i = 0; i < N; ++i) {
      interned_[i] = PyUnicode_InternFromString(names[i]);  // immortal here
    }
  }

  // Fills `out` with borrowed references (nullptr when not given). Throws
  // python_error with a TypeError like CPython's own.
  void parse(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
             std::array<PyObject*, N>& out) const {
    out.fill(nullptr);
    if (nargs > npos_) {
      PyErr_Format(PyExc_TypeError,
                   "%s() takes at most %d positional argument%s (%zd given)",
                   fname_, npos_, npos_ == 1 ? "" : "s", nargs);
      throw python_error();
    }
    for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; ++k) {
      PyObject* key = PyTuple_GET_ITEM(kwnames, k);
      const size_t slot = find(key);
      if (slot == N) {
        PyErr_Format(PyExc_TypeError,
                     "%s() got an unexpected keyword argument '%U'", fname_,
                     key);
        throw python_error();
      }
      if (out[slot]) {
        PyErr_Format(PyExc_TypeError,
                     "%s() got multiple values for argument '%s'", fname_,
                     names_[slot]);
        throw python_error();
      }
      out[slot] = args[nargs + k];
    }
    for (int i = 0; i < nrequired_; ++i) {
      if (!out[i]) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing required argument '%s' (pos %d)", fname_,
                     names_[i], i + 1);
        throw python_error();
      }
    }
  }

  const char* name() const { return fname_; }

 private:
  size_t find(PyObject* key) const {
    for (size_t i = 0; i < N; ++i)
      if (key == interned_[i]) return i;
    for (size_t i = 0; i < N; ++i)
      if (PyUnicode_CompareWithASCIIString(key, names_[i]) == 0) return i;
    return N;
  }

  const char* fname_;
  std::array<const char*, N> names_;
  std::array<PyObject*, N> interned_{};
  int npos_;
  int nrequired_;
};

// None -> nullopt-like false; otherwise truthiness, as Python does.
inline bool parse_bool(PyObject* o, bool dflt) {
  if (!o) return dflt;
  if (o == Py_True) return true;
  if (o == Py_False || o == Py_None) return false;
  const int r = PyObject_IsTrue(o);
  if (r < 0) throw python_error();
  return r != 0;
}

}  // namespace torchbridge::python
