#!/usr/bin/env bash
# The CPU speed benchmark (issue 6): set up (idempotent), then every
# torchbridge-vs-built-ins comparison in one process. Writes bridge.md,
# bridge.json and bridge.png to benchmarks/results/ (or --out DIR).
#
#   bash scripts/bench.sh            # full run, 1-2 minutes on 2 cores
#   bash scripts/bench.sh --quick    # smoke run, ~10 seconds
#   bash scripts/bench.sh --help     # every option (--threads, --sections, --max-mb ...)
#   bash scripts/bench.sh --busy     # quiet vs every core busy (benchmarks/bench_busy.py;
#                                    # writes busy.md/busy.json), ~3 minutes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
if [ "${1:-}" = --busy ]; then
  shift
  python benchmarks/bench_busy.py "$@"
else
  python benchmarks/bench_bridge.py "$@"
fi
