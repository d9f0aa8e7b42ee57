#!/usr/bin/env bash
# Fuzzes the torch-free .npy/.npz parsers of csrc/format with libFuzzer
# (clang, ASan + UBSan): builds build/fuzz, writes a seed corpus of real
# NumPy files (test/fuzz/make_seeds.py), then runs each target for SECONDS.
#
#   bash scripts/fuzz.sh [SECONDS]     # per target; default 60
#
# The working corpus stays in build/fuzz/corpus between runs; findings go to
# build/fuzz/artifacts and make this script fail. Needs clang and
# libclang-rt-14-dev (scripts/setup_cpp.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
build=build/fuzz
cxx=${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}
if [ -z "$cxx" ]; then
  echo "fuzz.sh: clang++ not found (run scripts/setup_cpp.sh)" >&2
  exit 1
fi
python=$(command -v python || command -v python3)

cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTORCHBRIDGE_FUZZ=ON >/dev/null
cmake --build "$build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
rm -rf "$build/seeds"
"$python" test/fuzz/make_seeds.py "$build/seeds"
mkdir -p "$build/artifacts"

for target in npy npz; do
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  echo "== fuzz_$target for ${seconds}s"
  # -max_len bounds an input to 64 KiB (deflate members may still inflate
  # to 1032x that, the reader's own bound).
  "$build/fuzz/fuzz_$target" "$corpus" "$build/seeds/$target" \
    -dict="test/fuzz/$target.dict" -max_total_time="$seconds" -max_len=65536 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" \
    >"$build/fuzz_$target.log" 2>&1 || {
      tail -60 "$build/fuzz_$target.log"
      echo "fuzz_$target FOUND A PROBLEM: see $build/artifacts and $build/fuzz_$target.log" >&2
      exit 1
    }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/fuzz_$target.log")
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$build/fuzz_$target.log")
  cov=$(grep -o 'cov: [0-9]*' "$build/fuzz_$target.log" | tail -1)
  echo "fuzz_$target: ${runs:-?} executions in ${secs:-?} s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs, no crash"
done
