#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment in .venv,
# torch pinned first, the requirements, then the extension built against
# that torch. Source it or run it; later scripts activate .venv themselves.
#
#   TB_USE_CURRENT_PYTHON=1  install into the active interpreter instead of
#                            .venv (e.g. the GPU machine's preinstalled torch:
#                            then only the extension is built, nothing fetched)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${TB_USE_CURRENT_PYTHON:-0}" = 1 ]; then
  # --use-pep517: newer setuptools would otherwise shell out to pip without
  # --no-build-isolation (seen on the GPU image) and try to fetch torch.
  python3 -m pip install -q --no-build-isolation --no-deps --use-pep517 -e .
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q torch==2.13.0   # first, pinned: see requirements.txt
python -m pip install -q -r requirements.txt
python -m pip install -q --no-build-isolation --no-deps --use-pep517 -e .
python -c "import torchbridge, torch, numpy; print('torchbridge', torchbridge.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
