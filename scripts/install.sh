# Sourced by scripts/test.sh and scripts/demo.sh: create ./.venv when absent, install, activate it.
#
# torch 2.14.1 with torchvision 0.29.1: Qwen2.5-VL's processor in transformers 5 and veRL's
# qwen_vl_utils image path need torchvision, and PyPI's torchvision does not import beside the
# torch 2.13.0 CPU wheel; pinned versions let pip take the wheels that lie on the machine's disk.
# Then veRL 0.9.1 (verl[verl-core]) and this package in editable mode with the extras in $MEDVR_EXTRAS
# (default "test": pytest, hypothesis, pydicom, qwen-vl-utils), with transformers pinned to 5.9.0, the
# version veRL 0.9.1 tested (pyproject.toml says why). The GPU suite's "vllm" extra brings
# the stack veRL 0.9.1 tested (verl[vllm]==0.9.1: torch 2.11.0, vllm 0.24.0) instead of the CPU pins,
# then flash-attn, which builds against the installed torch.
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
case ",${MEDVR_EXTRAS:-test}," in
  *,vllm,*)
    python -m pip install -q -e ".[${MEDVR_EXTRAS}]"
    python -m pip install -q --no-build-isolation flash-attn==2.8.3 ;;
  *)
    python -m pip install -q torch==2.14.1 torchvision==0.29.1
    python -m pip install -q -e ".[${MEDVR_EXTRAS:-test}]" ;;
esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
