#!/usr/bin/env bash
# Every test: set up (idempotent), then pytest under NumPy 2, the C++ suite
# (CTest, plain and sanitized, plus the installed-package consumer), then
# pytest again under NumPy 1.26.4 with the same build (one binary serves
# both NumPy majors).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "${CI:-}" = true ]; then
  export HYPOTHESIS_PROFILE=ci
fi

numpy2=$(python -c "import numpy; print(numpy.__version__)")
restore_numpy() { python -m pip install -q "numpy==$numpy2"; }
trap restore_numpy EXIT

echo "== pytest, numpy $numpy2"
python -m pytest test -q -p no:cacheprovider "$@"

bash scripts/cpp_tests.sh

echo "== pytest, numpy 1.26.4 (same build)"
python -m pip install -q numpy==1.26.4
python -m pytest test -q -p no:cacheprovider "$@"
