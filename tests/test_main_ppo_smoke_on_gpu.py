"""A few real main_ppo steps of the MedVR recipe with the tiny Qwen2.5-VL on a GPU (examples/gpu_smoke.py).

Same run config as tests/test_main_ppo_on_cpu.py (medvr_verl.cpu.tiny_run), GPU backend.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "gpu_smoke.py"


def test_main_ppo_runs_the_medvr_recipe(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "2", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert sorted(p.name for p in (tmp_path / "rollouts").glob("*.jsonl")) == ["1.jsonl", "2.jsonl"]
