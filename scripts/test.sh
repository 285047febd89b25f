#!/usr/bin/env bash
# Run medvr-verl's tests on a fresh machine: bash scripts/test.sh [cpu|gpu] [extra pytest args]
#
# Installs everything first (scripts/install.sh). `cpu` runs tests/**/*_on_cpu.py and refuses to
# skip its vision-language tests (MEDVR_REQUIRE_VL=1: a missing vision stack is a failure, not a
# skip); `gpu` runs *_on_gpu.py, which skip cleanly without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
suite="${1:-cpu}"
shift || true
case "$suite" in
  cpu) pattern="*_on_cpu.py" ;;
  gpu) pattern="*_on_gpu.py"; export MEDVR_EXTRAS="test,vllm" ;;
  *) echo "usage: bash scripts/test.sh [cpu|gpu] [pytest args...]" >&2; exit 2 ;;
esac
# shellcheck source=scripts/install.sh
. scripts/install.sh
if [ "$suite" = cpu ]; then export MEDVR_REQUIRE_VL=1; fi
files=$(find tests -name "$pattern" | sort)
if [ -z "$files" ]; then echo "no $suite tests found" >&2; exit 1; fi
# shellcheck disable=SC2086
python -m pytest -q -ra $files "$@"
