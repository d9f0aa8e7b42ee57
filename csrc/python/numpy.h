#pragma once
// The one include of the NumPy C API. Built against NumPy 2 headers with a
// 1.22 feature target, so one binary runs under NumPy 1.22+ and 2.x (the
// NumPy 2 headers dispatch PyDataType_* accessors on the runtime version).
// module.cpp defines TORCHBRIDGE_NUMPY_IMPORT and calls import_array().

#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL torchbridge_ARRAY_API
#ifndef TORCHBRIDGE_NUMPY_IMPORT
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>
#include <numpy/arrayscalars.h>
