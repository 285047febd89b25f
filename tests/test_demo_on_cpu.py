"""The README's main job: python -m medvr_verl.demo, in its own process as a user runs it."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.vl_stack


def test_demo_runs_a_training_step_and_writes_overlays(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "medvr_verl.demo", "--out", str(tmp_path / "viz")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "THE MODEL HAS RANDOM WEIGHTS" in out
    table = [line.split() for line in out.splitlines() if line.startswith(("ct ", "mr "))]
    assert len(table) == 8 and sum(row[2] == "fork" for row in table) == 4  # M=4: 2 bases + 2 forks each
    assert "EVR: fork rate 1.00" in out
    assert len(list((tmp_path / "viz").glob("step1_*.png"))) == 2
