#pragma once
// torchbridge::Error, in a header of its own so that code without LibTorch
// (the .npy/.npz parsers of csrc/format/, their fuzzers) can throw it too.

#include <stdexcept>

namespace torchbridge {

// Thrown for faults outside the tensor rules (malformed files, I/O). Tensor
// rule violations throw c10::TypeError / c10::ValueError, which Python sees
// as TypeError / ValueError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace torchbridge
