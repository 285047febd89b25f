#!/usr/bin/env bash
# Run medvr-verl's tests on a fresh machine: bash scripts/test.sh [cpu|gpu] [extra pytest args]
#
# Creates ./.venv when absent and installs everything the suite needs: torch 2.13.0 (pinned so pip
# takes the CPU wheel; a bare `torch` would pull a multi-GB CUDA build), veRL 0.9.1 and this package
# in editable mode with its [test] extra. `cpu` runs tests/**/*_on_cpu.py; `gpu` runs *_on_gpu.py
# (they skip cleanly without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
suite="${1:-cpu}"
shift || true
case "$suite" in
  cpu) pattern="*_on_cpu.py" ;;
  gpu) pattern="*_on_gpu.py" ;;
  *) echo "usage: bash scripts/test.sh [cpu|gpu] [pytest args...]" >&2; exit 2 ;;
esac

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ "$suite" = cpu ]; then
  python -m pip install -q torch==2.13.0
fi
python -m pip install -q -e ".[test]"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
files=$(find tests -name "$pattern" | sort)
if [ -z "$files" ]; then echo "no $suite tests found" >&2; exit 1; fi
# shellcheck disable=SC2086
python -m pytest -q -ra $files "$@"
