"""A ``main_ppo`` run on CPU in which the policy measurably learns: the stripes task, ``constrained`` policy.

The run is :mod:`medvr_verl.cpu.tiny_run`'s (the MedVR recipe, ``+backend=cpu``, veRL's V1 trainer,
EVR, ``medvr_cca``) on the synthetic set :mod:`medvr_verl.data.synthetic` (lines visible only in
one cell of the image, the cell as ``gt_boxes``), with the CPU rollout server's ``constrained``
policy (:mod:`medvr_verl.cpu.constrained`): the tiny random-weight Qwen2.5-VL itself chooses the
zoom cell and the answer, and GRPO must teach it both from scratch. Chance: a zoom covers the lines
one time in four (``grid`` 2) and an answer is right one time in two; a policy that learned zooms
into the lines' cell and reads their direction.

Settings the learning check depends on are set here explicitly, whatever the recipe's defaults:
``evr.fallback: fresh`` and ``quorum: correct`` (the paper's), ``tool_reward: consensus``, ``eta``,
the step size and the KL anchor. Why :data:`DEFAULT_LR` 2e-3 with ``kl_loss_coef`` 0.1 (the
recipe's 0.01): the answer is learnable (``benchmarks/probe_learning.py read``: the hidden state at
``<answer>`` separates the two line directions, supervised training reads them in 5 steps), but
only the 1 zoom in 4 that hits the lines carries signal for it; the other 3 give the answer letter
pure noise. At lr 1e-2 that noise collapses the answer onto one letter in 3-4 steps, and at 2e-3
with the recipe's KL, CCA's agreement reward herds the zoom away from the lines before the answer
is read (zoom share with the gt cell 0.12 -> 0 by step 7). The KL anchor keeps both decisions near
the initial model until the hits have taught the answer, then the zoom follows (README, "Does it
learn?").

The model is the caller's: the random-weight tiny model (``bench_learning.py --start scratch``: it
must learn to read the crop and where to zoom, and when it starts varies widely with the seed) or
the tiny reader (:mod:`medvr_verl.testing.tiny_reader`, the default start of the benchmark and the
CI test: it reads the crop, and must learn where to zoom).

Used by ``tests/test_learning_on_cpu.py`` (stopped once it rose, :func:`run`'s ``stop_when``) and
``benchmarks/bench_learning.py`` (full length, curves as CSV and PNG).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from medvr_verl.cpu import tiny_run

#: step metrics of a learning curve (veRL's file logger): column name -> metric key
CURVE = {
    "reward": "critic/score/mean",
    "acc": "medvr/acc/mean",
    "zoom_gt_iou": "medvr/zoom_gt_iou/mean",
    "zoom_gt_hit": "medvr/zoom_gt_hit/mean",
    "cca_gt_iou": "medvr/cca_gt_iou/mean",
    "cca_gt_hit": "medvr/cca_gt_hit/mean",
    "tool_reward": "medvr/tool_reward/mean",
    "fork_rate": "medvr/evr/fork_rate/mean",
    "fork_rate_qualified": "medvr/evr/fork_rate_qualified/mean",
    "fork_rate_fallback": "medvr/evr/fork_rate_fallback/mean",
    "fresh_rate": "medvr/evr/fresh_rate/mean",
    "qualified_points": "medvr/evr/qualified_points/mean",
    "delta_h": "medvr/evr/delta_h/mean",
    "delta_h_max": "medvr/evr/delta_h/max",
    "step_s": "timing_s/step",
}
#: what chance gives on the stripes task with a 2 x 2 grid and two answers (uniform decisions)
CHANCE = {"acc": 0.5, "zoom_gt_hit": 0.25, "zoom_gt_iou": 0.25}
IMAGE_SIZE = 448
PIXELS = (IMAGE_SIZE // 2) ** 2  # the model sees the images at half size: the lines average out
#: a short system prompt and tool schema: the tiny model's prompt is mostly text, and every token of
#: it dilutes the attention the answer pays to the crop (1,135 prompt tokens with the recipe's)
SYSTEM_PROMPT = "Zoom into the image with the tool, then give the option's letter in <answer> </answer>."
TOOL_CONFIG = {
    "tools": [
        {
            "class_name": "medvr_verl.tools.zoom.ZoomInTool",
            "config": {"type": "native", "min_crop_side": 28},
            "tool_schema": {
                "type": "function",
                "function": {
                    "name": "image_zoom_in_tool",
                    "description": "Zoom in.",
                    "parameters": {
                        "type": "object",
                        "properties": {"bbox_2d": {"type": "array", "description": "[x1, y1, x2, y2]"}},
                        "required": ["bbox_2d"],
                    },
                },
            },
        }
    ]
}
DEFAULT_LR = 2e-3
#: ``actor.kl_loss_coef`` (low-var KL to the initial model): the anchor against early collapse
DEFAULT_KL_LOSS_COEF = 0.1


def build_data(out: Path, num_records: int = 64, seed: int = 0, cells=(3,)) -> Path:
    """``out/stripes.parquet`` (:func:`medvr_verl.data.synthetic.write_stripes`)."""
    from medvr_verl.data.synthetic import write_stripes

    path = out / "stripes.parquet"
    write_stripes(path, num_records, seed=seed, cells=cells, size=IMAGE_SIZE, system_prompt=SYSTEM_PROMPT)
    return path


def write_tool_config(out: Path) -> Path:
    """The zoom tool with a short schema (:data:`TOOL_CONFIG`), as ``out/zoom_tool.yaml``."""
    path = out / "zoom_tool.yaml"
    path.write_text(json.dumps(TOOL_CONFIG, indent=1))  # JSON is YAML
    return path


def overrides(
    model: Path,
    data: Path,
    out: Path,
    *,
    steps: int = 40,
    n: int = 4,
    batch_size: int = 8,
    lr: float = DEFAULT_LR,
    kl_loss_coef: float = DEFAULT_KL_LOSS_COEF,
    seed: int = 0,
    tool_reward: str = "consensus",
    evr: bool = True,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """:func:`medvr_verl.cpu.tiny_run.overrides` with the constrained policy and the learning settings."""
    mine = {
        "actor_rollout_ref.actor.optim.lr": f"{lr}",
        "actor_rollout_ref.actor.use_kl_loss": "true",
        "actor_rollout_ref.actor.kl_loss_coef": f"{kl_loss_coef}",
        # two policy updates per step (mini-batches of half the prompts)
        "actor_rollout_ref.actor.ppo_mini_batch_size": f"{max(batch_size // 2, 1)}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": f"{max(batch_size // 2, 1) * n}",
        "data.max_response_length": "512",
        "data.seed": f"{seed}",
        "data.mm_processor_kwargs.min_pixels": f"{PIXELS}",
        "data.mm_processor_kwargs.max_pixels": f"{PIXELS}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": "2",
        "actor_rollout_ref.rollout.custom.cpu.seed": f"{seed}",
        "actor_rollout_ref.rollout.custom.evr.seed": f"{seed}",
        "actor_rollout_ref.rollout.custom.evr.enable": "true" if evr else "false",
        "actor_rollout_ref.rollout.custom.evr.fallback": "fresh",
        # a fork's shared prefix is template text up to the coordinates: its base trains it (nothing)
        "actor_rollout_ref.rollout.custom.evr.mask_fork_prefix": "true",
        "actor_rollout_ref.rollout.custom.viz.dir": "null",
        "reward.reward_kwargs.tool_reward": tool_reward,
        "reward.reward_kwargs.quorum": "correct",
        "reward.reward_kwargs.eta": "0.5",
        "trainer.experiment_name": "learning",
        "actor_rollout_ref.rollout.multi_turn.tool_config_path": str(write_tool_config(out)),
    }
    base = tiny_run.overrides(
        model, data, out, steps=steps, backend="cpu", policy="constrained", n=n, batch_size=batch_size
    )
    kept = [o for o in base if o.split("=", 1)[0] not in mine]
    return kept + [f"{k}={v}" for k, v in mine.items()] + list(extra)


def command(model: Path, data: Path, out: Path, **kwargs) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with the MedVR recipe and :func:`overrides`."""
    return tiny_run.medvr_main_ppo(overrides(model, data, out, **kwargs))


def run(
    model: Path,
    out: Path,
    *,
    num_records: int = 64,
    data_seed: int = 0,
    timeout: float = 3600,
    stop_when: Callable[[list[dict[str, float]]], bool] | None = None,
    poll_s: float = 2.0,
    **kwargs,
):
    """Build the data, run ``main_ppo``, return ``(returncode, seconds, log path)``.

    ``stop_when(rows)`` (rows as :func:`read_curve` gives them, read after each step) ends the run
    early once it returns True: the run's processes are killed and the returncode is ``None``. A
    run still going after ``timeout`` seconds is killed and raises ``subprocess.TimeoutExpired``."""
    out.mkdir(parents=True, exist_ok=True)
    data = build_data(out, num_records, seed=data_seed)
    cmd = command(model, data, out, **kwargs)
    log = out / "main_ppo.log"
    start = time.monotonic()
    seen = 0
    with open(log, "w") as f:
        f.write("$ VERL_PLATFORM=cpu " + " ".join(cmd[1:]) + "\n")
        f.flush()
        # its own session: the run and Ray's processes can be killed as one
        proc = subprocess.Popen(
            cmd, env=tiny_run.environment("cpu", out), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while proc.poll() is None:
                if time.monotonic() - start > timeout:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                if stop_when is not None:
                    rows = read_curve(out)
                    if len(rows) > seen:
                        seen = len(rows)
                        if stop_when(rows):
                            tiny_run.kill_run(proc)
                            return None, time.monotonic() - start, log
                time.sleep(poll_s)
        finally:
            if proc.poll() is None:
                tiny_run.kill_run(proc)
    return proc.returncode, time.monotonic() - start, log


def read_curve(out: Path) -> list[dict[str, float]]:
    """One row per step: ``step`` plus :data:`CURVE`'s columns (NaN where a step lacks a metric)."""
    path = out / "metrics.jsonl"
    rows = []
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines(keepends=True):
        if not line.strip() or not line.endswith("\n"):  # blank, or a line being written
            continue
        rec = json.loads(line)
        row = {"step": int(rec["step"])}
        for name, key in CURVE.items():
            row[name] = float(rec["data"].get(key, float("nan")))
        rows.append(row)
    return rows


def window_mean(rows: list[dict[str, float]], name: str, first: int | None = None, last: int | None = None) -> float:
    """Mean of column ``name`` over the first or the last ``k`` steps (NaN steps skipped)."""
    import math

    part = rows[:first] if first is not None else rows[-last:]
    values = [r[name] for r in part if not math.isnan(r[name])]
    return sum(values) / len(values) if values else float("nan")
