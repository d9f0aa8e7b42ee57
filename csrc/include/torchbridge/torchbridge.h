#pragma once
// The one public include of torchbridge's C++ library:
//   #include <torchbridge/torchbridge.h>
// See README.md ("C++") and csrc/README.md for the layout.

#include <torchbridge/array_view.h>  // ArrayView: any buffer -> tensor, the sharing rules
#include <torchbridge/arrow.h>       // Arrow C data interface -> tensor
#include <torchbridge/columns.h>     // tables / nullable columns -> one tensor
#include <torchbridge/core.h>  // to_host, coerce, dtype policy, Error
#include <torchbridge/npy.h>   // .npy / .npz files: npy::load/save, npz::load/save, load
#include <torchbridge/ops.h>   // the operators through the dispatcher
#include <torchbridge/sparse.h>  // SparseView: CSR/CSC/COO buffers -> torch sparse tensor
