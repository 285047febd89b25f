"""``medvr_cca`` dropped into veRL's stock ``ppo_trainer`` on text-only GSM8K data (issue 21).

Two real ``python -m verl.trainer.main_ppo`` runs on CPU, one step each, identical but for
``reward.reward_manager.name`` (``medvr_cca``, then ``naive``): veRL's stock config (V1 trainer,
GRPO, n=4) + this project's CPU overlay (``hydra.searchpath=[pkg://medvr_verl.recipes.medvr]
+backend=cpu``), the tiny Qwen2.5-VL on text-only rows in veRL's GSM8K format
(``medvr_verl.cpu.tiny_run.build_gsm8k_data``), answers written by the CPU server's scripted policy
(:class:`medvr_verl.cpu.script.AnswerAfterHashes`: half right, half wrong in each group). Checks:
the text-only batch trains (veRL's Qwen2-VL text path, :mod:`medvr_verl.qwen2_vl_fix`), and each
prompt's rewards are veRL's GSM8K scores, the same under both managers (``medvr_cca`` used to score
them with MedVR's medical scorer: -0.1 for a correct ``#### 72``). About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

import pytest

pytestmark = pytest.mark.vl_stack


def _run(tmp_path_factory, name):
    from medvr_verl.cpu import tiny_run
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    out = tmp_path_factory.mktemp(f"gsm8k_{name}")
    data = tiny_run.build_gsm8k_data(out)
    command = tiny_run.stock_command(tiny_qwen25vl_path(), data, out, reward_manager=name)
    result = subprocess.run(command, env=tiny_run.environment("cpu", out), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = [json.loads(line) for path in sorted((out / "rollouts").glob("*.jsonl")) for line in path.open()]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, metrics, result.stdout + result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {name: _run(tmp_path_factory, name) for name in ("medvr_cca", "naive")}


def _scores_by_prompt(rows) -> dict[str, list[float]]:
    groups = defaultdict(list)
    for row in rows:
        groups[row["input"]].append(row["score"])
    return {prompt: sorted(scores) for prompt, scores in groups.items()}


def test_text_only_stock_recipe_trains_a_step(runs):
    for name, (rows, metrics, log) in runs.items():
        assert [m["step"] for m in metrics] == [1], name
        assert metrics[0]["data"]["actor/grad_norm"] > 0, name
        assert "has no attribute 'mean'" not in log
        assert len(rows) == 8  # 2 prompts x n=4


def test_medvr_cca_gives_the_rewards_naive_gives(runs):
    cca_rows, cca_metrics, _ = runs["medvr_cca"]
    naive_rows, naive_metrics, _ = runs["naive"]
    cca, naive = _scores_by_prompt(cca_rows), _scores_by_prompt(naive_rows)
    assert cca == naive
    # veRL's GSM8K scorer: 1.0 for the right number after ####, 0.0 otherwise; both in every group
    assert all(scores == [0.0, 0.0, 1.0, 1.0] for scores in cca.values())
    for key in ("critic/score/mean", "critic/rewards/mean"):
        assert cca_metrics[0]["data"][key] == pytest.approx(naive_metrics[0]["data"][key])
