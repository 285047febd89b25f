"""A real ``python -m verl.trainer.main_ppo`` run of the MedVR recipe on CPU (the README's demo), then a resume.

One module-scoped run of ``python -m medvr_verl.demo --save-freq 1`` (2 training steps, checkpoint
each step) as a user runs it, then ``main_ppo`` again with ``total_training_steps=3`` and
``resume_mode=auto`` on the same folder. Assertions read what veRL itself wrote: its ``file``
logger's metrics, its rollout dump (``trainer.rollout_data_dir``), its checkpoints, and the
``medvr_cpu`` server's weight-sync log. About 4-5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.vl_stack


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metrics(path: Path) -> dict[int, dict]:
    return {rec["step"]: rec["data"] for rec in _jsonl(path)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("main_ppo_cpu")
    result = subprocess.run(
        [sys.executable, "-m", "medvr_verl.demo", "--out", str(out), "--save-freq", "1"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out, result.stdout


@pytest.fixture(scope="module")
def resumed(demo):
    """main_ppo on the demo's folder for 3 steps: resumes from global_step_2, runs step 3 only."""
    from medvr_verl.cpu import tiny_run
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    out, _ = demo
    syncs_before = len(_jsonl(out / "rollout_weights.jsonl"))
    cmd = tiny_run.command(
        tiny_qwen25vl_path(), out / "tiny_medvr.parquet", out, steps=3, save_freq=1, resume=True
    )
    result = subprocess.run(
        cmd, env=tiny_run.environment("cpu", out, metrics="metrics_resume.jsonl"), capture_output=True, text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out, result.stdout + result.stderr, syncs_before


def test_two_steps_update_the_policy_with_kl(demo):
    out, _ = demo
    metrics = _metrics(out / "metrics.jsonl")
    assert sorted(metrics) == [1, 2]
    for step in (1, 2):
        assert metrics[step]["actor/grad_norm"] > 0
    # the reference is the initial policy: KL is 0 before the first update, positive after it
    assert metrics[2]["actor/kl_loss"] > 0


def test_rollout_server_gets_the_actors_weights_every_step(demo):
    out, _ = demo
    syncs = _jsonl(out / "rollout_weights.jsonl")
    # one sync before the first rollout, then one after each update
    assert [s["global_steps"] for s in syncs] == [0, 1, 2]
    assert [s["version"] for s in syncs] == [1, 2, 3]
    for sync in syncs[1:]:
        assert sync["changed"] and sync["max_abs_delta"] > 0
        assert sync["fingerprint"] != sync["previous"]
        assert sync["not_sent"] == []  # every parameter of the rollout model comes from the actor
    assert len({s["fingerprint"] for s in syncs}) == 3
    assert all(s["policy"] == "scripted" for s in syncs)


def test_forks_and_group_rewards(demo):
    out, _ = demo
    metrics = _metrics(out / "metrics.jsonl")
    assert all(metrics[step]["medvr/evr/fork_rate/mean"] > 0 for step in (1, 2))
    groups = defaultdict(list)
    for path in sorted((out / "rollouts").glob("*.jsonl")):
        for rec in _jsonl(path):
            groups[(rec["step"], str(rec["uid"]).rsplit("_", 2)[0])].append(rec["score"])
    assert {step for step, _ in groups} == {1, 2}
    assert all(len(scores) == 4 for scores in groups.values())  # n = 4 per prompt, bases + forks
    # GRPO learns only from groups whose members' rewards differ (the script zooms into different
    # regions, and only the centre holds the answer)
    assert any(len(set(scores)) > 1 for scores in groups.values())


def test_demo_prints_the_run(demo):
    out, stdout = demo
    assert "THE MODEL HAS RANDOM WEIGHTS" in stdout and "SCRIPTED" in stdout
    assert re.search(r"step:2 - ", stdout)  # veRL's console step line, shown live
    rows = [line.split() for line in stdout.splitlines() if re.match(r"[12]\s+[0-9a-f]{8}\s+\d\s+(base|fork)", line)]
    assert len(rows) == 16 and sum(row[3] == "fork" for row in rows) == 8
    assert len(list((out / "overlays").glob("step*_*.png"))) == 4  # one per group, from the rollout dump
    peak = re.search(r"Peak memory of the run: ([0-9.]+) GB", stdout)
    assert peak and 0 < float(peak.group(1)) < 6


def test_checkpoint_and_resume_continue_without_repeating_or_losing_a_step(resumed):
    out, log, syncs_before = resumed
    assert (out / "checkpoints" / "global_step_2" / "actor").is_dir()
    assert (out / "checkpoints" / "global_step_3" / "actor").is_dir()
    assert (out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    assert sorted(_metrics(out / "metrics_resume.jsonl")) == [3]
    assert (out / "rollouts" / "3.jsonl").exists()
    syncs = _jsonl(out / "rollout_weights.jsonl")
    first_run, second_run = syncs[:syncs_before], syncs[syncs_before:]
    # the resumed actor loaded the step-2 checkpoint: its first sync carries exactly those weights
    assert second_run[0]["fingerprint"] == first_run[-1]["fingerprint"]
    assert [s["global_steps"] for s in second_run] == [2, 3]


def test_runs_on_the_v1_trainer_with_medvr_step_metrics(demo, resumed):
    """No legacy-trainer warning; MedVR's rollout statistics reach veRL's step metrics (V1 sampler)."""
    out, output, _ = resumed
    assert "Legacy trainer" not in output and "main_ppo_v0" not in output
    metrics = _metrics(out / "metrics.jsonl")
    for step in (1, 2):
        assert metrics[step]["medvr/evr/fork_rate/mean"] > 0 and metrics[step]["medvr/fork/mean"] > 0
        assert 0.0 <= metrics[step]["medvr/acc/mean"] <= 1.0 and "medvr/tool_reward/mean" in metrics[step]
