#!/usr/bin/env bash
# The main job: set up (idempotent), then the self-check and speed report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python -m torchbridge "$@"
