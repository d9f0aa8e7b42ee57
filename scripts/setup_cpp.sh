#!/usr/bin/env bash
# System packages the C++ tests need (Debian): GoogleTest, zlib, clang for
# the fuzzer. Idempotent; skips apt when everything is already there.
set -euo pipefail
need=()
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v cmake >/dev/null || need+=(cmake)
command -v clang++ >/dev/null || command -v clang++-14 >/dev/null || need+=(clang)
# libFuzzer's runtime (scripts/fuzz.sh); Debian 12's clang is clang 14.
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null ||
  need+=(libclang-rt-14-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
