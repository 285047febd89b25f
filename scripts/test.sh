#!/usr/bin/env bash
# Run medvr-verl's tests on a fresh machine: bash scripts/test.sh [cpu|vllm-cpu|gpu] [extra pytest args]
#
# Installs everything first. `cpu` (scripts/install.sh, ./.venv) runs tests/**/*_on_cpu.py and refuses
# to skip its vision-language tests (MEDVR_REQUIRE_VL=1: a missing vision stack is a failure, not a
# skip); `vllm-cpu` (scripts/install_vllm_cpu.sh, ./.venv-vllm: vLLM 0.24.0's CPU build) runs
# *_on_vllm_cpu.py, the medvr_vllm rollout path on real vLLM, where a missing vLLM is a failure too;
# `gpu` runs *_on_gpu.py, which skip cleanly without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
suite="${1:-cpu}"
shift || true
case "$suite" in
  cpu) pattern="*_on_cpu.py" ;;
  vllm-cpu) pattern="*_on_vllm_cpu.py" ;;
  gpu) pattern="*_on_gpu.py"; export MEDVR_EXTRAS="test,vllm" ;;
  *) echo "usage: bash scripts/test.sh [cpu|vllm-cpu|gpu] [pytest args...]" >&2; exit 2 ;;
esac
start=$(date +%s)
if [ "$suite" = vllm-cpu ]; then
  # shellcheck source=scripts/install_vllm_cpu.sh
  . scripts/install_vllm_cpu.sh
else
  # shellcheck source=scripts/install.sh
  . scripts/install.sh
fi
if [ "$suite" != gpu ]; then export MEDVR_REQUIRE_VL=1; fi
files=$(find tests -name "$pattern" | sort)
if [ -z "$files" ]; then echo "no $suite tests found" >&2; exit 1; fi
if [ "$suite" = vllm-cpu ]; then
  # the stand-in's tests once more, with its logprob layout compared to the installed vLLM's own
  # vllm/logprobs.py (that comparison skips in the CPU suite, which has no vLLM)
  MEDVR_VLLM_SOURCE="$(python -c 'import os, vllm; print(os.path.dirname(vllm.__file__))')"
  export MEDVR_VLLM_SOURCE
  files="$files tests/test_vllm_server_on_cpu.py"
fi
# shellcheck disable=SC2086
python -m pytest -q -ra $files "$@"
echo "test.sh $suite: $(( $(date +%s) - start )) s (install + tests)"
