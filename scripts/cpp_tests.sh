#!/usr/bin/env bash
# The C++ side: build libtorchbridge and its GoogleTest suite against the
# pip wheel's LibTorch, run CTest (which also installs the package to a
# scratch prefix and builds examples/cpp against it), then the same suite
# under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer), and
# a short libFuzzer run of the .npy/.npz parsers (FUZZ_SECONDS per target).
# Expects the Python environment of scripts/setup.sh to be active.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_cpp.sh
torch_prefix=$(python -c "import torch; print(torch.utils.cmake_prefix_path)")
jobs=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

build() {  # build <dir> <cmake options...>
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

echo "== C++: build + CTest"
build build/cmake -DCMAKE_BUILD_TYPE=Release
echo "== C++: ASan + UBSan + LSan build + CTest"
build build/cmake-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTORCHBRIDGE_SANITIZE=ON
echo "== C++: libFuzzer, the .npy/.npz parsers (${FUZZ_SECONDS:-30} s each)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
