#!/usr/bin/env bash
# Run medvr-verl's tests on a fresh machine: bash scripts/test.sh [cpu|gpu] [extra pytest args]
#
# Creates ./.venv when absent and installs everything the suite needs: torch 2.14.1 with torchvision
# 0.29.1 (Qwen2.5-VL's processor in transformers 5 and veRL's qwen_vl_utils image path need
# torchvision, and PyPI's torchvision does not import beside the torch 2.13.0 CPU wheel; pinned
# versions so pip takes the wheels that lie on the machine's disk), veRL 0.9.1 and this package in
# editable mode with its [test] extra. `cpu` runs tests/**/*_on_cpu.py; `gpu` runs *_on_gpu.py (they
# skip cleanly without a GPU). The CPU suite refuses to skip its vision-language tests
# (MEDVR_REQUIRE_VL=1): a missing vision stack is a failure, not a skip.
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
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[test]"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
if [ "$suite" = cpu ]; then export MEDVR_REQUIRE_VL=1; fi
files=$(find tests -name "$pattern" | sort)
if [ -z "$files" ]; then echo "no $suite tests found" >&2; exit 1; fi
# shellcheck disable=SC2086
python -m pytest -q -ra $files "$@"
