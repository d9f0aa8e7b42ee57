#pragma once
// Assertions that check an exception's type AND its message (the message's
// "why" and "how to fix" are part of the contract).

#include <gtest/gtest.h>

#include <c10/util/Exception.h>

#include "../../csrc/format/dtypes.h"

#include <string>
#include <vector>

// Expects `stmt` to throw `type` whose message contains `substring`.
#define EXPECT_THROW_MSG(stmt, type, substring)                            \
  do {                                                                     \
    try {                                                                  \
      (void)(stmt);                                                        \
      ADD_FAILURE() << "expected " #type " from: " #stmt;                  \
    } catch (const type& e) {                                              \
      const std::string what_ = e.what();                                  \
      EXPECT_NE(what_.find(substring), std::string::npos)                  \
          << "message of " #type " lacks \"" << (substring)                \
          << "\": " << what_;                                              \
    }                                                                      \
  } while (0)

namespace torchbridge::testing {

// Every dtype NumPy has, with the torch dtype of the same name.
inline const std::vector<at::ScalarType>& numpy_dtypes() {
  static const std::vector<at::ScalarType> all = {
#define TORCHBRIDGE_TEST_DTYPE(Id, name, kind, size, Torch, Npy) \
  at::ScalarType::Torch,
      TORCHBRIDGE_FORALL_NUMPY_DTYPES(TORCHBRIDGE_TEST_DTYPE)
#undef TORCHBRIDGE_TEST_DTYPE
  };
  return all;
}

}  // namespace torchbridge::testing
