"""MedVR training on a CPU: a real ``python -m verl.trainer.main_ppo`` run, ``python -m medvr_verl.demo``.

THE MODEL HAS RANDOM WEIGHTS. The run is veRL's own trainer with the ``medvr`` recipe and the CPU
overlay (``--config-path=pkg://medvr_verl.recipes.medvr --config-name=medvr +backend=cpu``, built by
:mod:`medvr_verl.cpu.tiny_run`) on a tiny random-weight Qwen2.5-VL: the zoom agent ``medvr_agent``,
EVR forks, ``medvr_cca`` rewards, GRPO with a KL loss against the reference model, FSDP2 actor and
reference updates, the actor's weights synced into the ``medvr_cpu`` rollout server after every
step. EVR runs our ``evr.fallback=top_dh`` variant, not the paper's ``fresh`` (random weights give
flat entropies, so ``fresh`` would fork nothing; :mod:`medvr_verl.cpu.tiny_run`). Random weights
write no zoom calls, so the server runs its ``scripted`` policy: a script
(:class:`medvr_verl.cpu.script.ZoomThenAnswer`) writes each turn's text, the synced model scores
it (log-probs and entropies are real forward passes). The numbers show the mechanics, not a
trained model.

Afterwards it reads the run's own rollout dump (veRL's ``trainer.rollout_data_dir``): one row per
trajectory (step, group, base or fork, zoom box, answer, reward, GRPO advantage from veRL's
``compute_grpo_outcome_advantage``), PNG overlays of each group's zooms and CCA consensus (``overlays/``), the
per-step training metrics (veRL's ``file`` logger), the rollout server's weight syncs, and the
peak memory (RSS summed over every process of the run, Ray's included).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

BANNER = (
    "=" * 100
    + "\nMedVR CPU demo: python -m verl.trainer.main_ppo, recipe medvr + CPU overlay, tiny Qwen2.5-VL.\n"
    "THE MODEL HAS RANDOM WEIGHTS: its text is SCRIPTED (rollout policy 'scripted'); log-probs, entropies,\n"
    "rewards, advantages, KL and the FSDP updates are real. The numbers show the mechanics, not a trained model.\n"
    "EVR runs OUR fallback evr.fallback=top_dh, not the paper's `fresh` (the recipe's default): random weights\n"
    "give flat entropies, no zoom call qualifies, and `fresh` would turn every fork slot into a fresh sample.\n"
    + "=" * 100
)
_BOX = re.compile(r'"bbox_2d": \[([^\]]*)\]')
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
# veRL console lines worth showing live (the rest goes to main_ppo.log)
_SHOW = re.compile(
    r"step:\d+ - |Training Progress|\[medvr_cpu|Traceback|^\w*Error|Error: |Final validation|CpuPlatform"
)
METRICS = (
    ("actor/grad_norm", "grad_norm"),
    ("actor/kl_loss", "kl_loss"),
    ("actor/pg_loss", "pg_loss"),
    ("critic/score/mean", "reward"),
    ("medvr/evr/fork_rate/mean", "fork_rate"),
    ("medvr/tool_reward/mean", "tool_reward"),
    ("timing_s/step", "step_s"),
)


class PeakMemory:
    """Samples the memory of a process and all its descendants (Ray's raylet, GCS and workers).

    ``peak``: the largest sum over the tree of each process's proportional set size (PSS: a page
    shared by k processes counts 1/k in each), i.e. the tree's resident memory with shared pages
    (torch's libraries, Ray's object store) counted once. ``peak_rss_sum``: the largest plain sum of
    per-process RSS, which counts every shared page once per process that maps it.
    """

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval = pid, interval
        self.peak = self.peak_rss_sum = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        pss = rss = 0
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            pss += getattr(info, "pss", info.rss)
            rss += info.rss
        if pss > self.peak:
            self.peak, self.peak_processes = pss, len(procs)
        self.peak_rss_sum = max(self.peak_rss_sum, rss)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def run_training(
    out: Path,
    steps: int,
    save_freq: int,
    resume: bool = False,
    metrics: str = "metrics.jsonl",
    backend: str = "cpu",
):
    """``python -m verl.trainer.main_ppo``; returns (returncode, PeakMemory, s).

    ``backend``: ``cpu`` (CPU overlay, medvr_cpu server, scripted policy) or ``cpu_vllm`` (medvr_vllm on
    vLLM's CPU build, decoding under medvr_vllm's template)."""
    from medvr_verl.cpu import tiny_run
    from medvr_verl.testing.tiny_qwen25vl import tiny_model_path_for

    data = out / "tiny_medvr.parquet"
    if not data.exists():
        tiny_run.build_data(out)
    cmd = tiny_run.command(
        tiny_model_path_for(backend), data, out, steps=steps, save_freq=save_freq, resume=resume, backend=backend
    )
    print("$ VERL_PLATFORM=cpu " + " ".join(cmd[1:]), flush=True)
    log_path = out / ("main_ppo_resume.log" if resume else "main_ppo.log")
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            env=tiny_run.environment(backend, out, metrics=metrics),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        with PeakMemory(proc.pid) as memory:
            for line in proc.stdout:
                log.write(line)
                if _SHOW.search(line):
                    print(line.rstrip(), flush=True)
            code = proc.wait()
    elapsed = time.monotonic() - start
    if code != 0:
        print(f"main_ppo failed (exit {code}); last lines of {log_path}:", file=sys.stderr)
        print("".join(log_path.read_text().splitlines(keepends=True)[-60:]), file=sys.stderr)
    return code, memory, elapsed


def read_rollouts(out: Path) -> list[dict]:
    """The run's rollout dump, one dict per trajectory, with group/session/kind/box/answer parsed."""
    rows = []
    for path in sorted((out / "rollouts").glob("*.jsonl"), key=lambda p: int(p.stem)):
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for rec in rows:
        # V1 trainer: uid = "{prompt uid}_{session}_{index}"; else group_uid (reward extras)
        raw = str(rec.get("uid") or rec.get("group_uid") or rec.get("sample_index"))
        parts = raw.rsplit("_", 2)
        uid = parts[0] if len(parts) == 3 and parts[1].isdigit() else raw
        groups.setdefault((rec["step"], uid), []).append(rec)
    table = []
    for (step, uid), members in groups.items():
        n = len(members)
        for i, rec in enumerate(members):
            box = _BOX.findall(rec["output"])
            answer = _ANSWER.findall(rec["output"])
            table.append(
                {
                    "step": step,
                    "group": uid[:8],
                    "gt": rec["gts"],
                    "traj": i + 1,
                    # EVR layout of both managers: ceil(n/2) base trajectories first, then the forks
                    "kind": "base" if i < (n + 1) // 2 else "fork",
                    "box": [float(v) for v in box[-1].split(",")] if box else None,
                    "answer": answer[-1].strip() if answer else "-",
                    "R": float(rec["score"]),
                    "input": rec["input"],
                }
            )
    _add_advantages_and_cca(table)
    return table


def _add_advantages_and_cca(table: list[dict]) -> None:
    """GRPO advantages by veRL's own function; CCA consensus/IoU per group from the boxes and answers."""
    import numpy as np
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from medvr_verl.consensus import consensus_credit

    index = np.array([f"{r['step']}/{r['group']}" for r in table], dtype=object)
    scores = torch.tensor([[r["R"]] for r in table])
    advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards=scores, response_mask=torch.ones_like(scores), index=index
    )
    for row, adv in zip(table, advantages[:, 0].tolist()):
        row["adv"] = adv
    for key in OrderedDict.fromkeys(index):
        members = [r for r, k in zip(table, index) if k == key]
        result = consensus_credit(
            [[m["box"]] if m["box"] else [] for m in members], [m["answer"] == m["gt"] for m in members]
        )
        for m, iou, tool in zip(members, result.ious, result.rewards):
            m["IoU"] = iou
            m["R_tool"] = float(tool)
            m["consensus"] = result.consensus


def print_table(table: list[dict]) -> None:
    columns = ("step", "group", "traj", "kind", "box", "answer", "gt", "R", "adv", "IoU")
    cells = [[_fmt(r.get(c)) for c in columns] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.3f}"
    if isinstance(value, list):
        return "[" + ",".join(f"{v:.0f}" for v in value) + "]"
    return str(value)


def write_overlays(table: list[dict], out: Path, viz_dir: Path) -> list[Path]:
    """One PNG per group: its zooms (solid: right answer, dashed: wrong) and CCA consensus.

    Boxes in the dump are in the image as the model saw it; they are drawn over that image (the
    dataset image resized like Qwen2.5-VL's processor), so no coordinate mapping is involved.
    """
    import pandas as pd
    from transformers import AutoProcessor

    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path
    from medvr_verl.tools.image_io import load_medical_image
    from medvr_verl.viz import MemberView, group_overlays, save_png

    processor = AutoProcessor.from_pretrained(tiny_qwen25vl_path()).image_processor
    data = pd.read_parquet(out / "tiny_medvr.parquet")
    images = {}  # question text -> the model's view of the question's image
    for _, row in data.iterrows():
        question = row["prompt"][-1]["content"]
        if question not in images:
            import io

            image = load_medical_image(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")
            grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
            images[question] = image.resize((grid[2] * 14, grid[1] * 14))
    written = []
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for r in table:
        groups.setdefault((r["step"], r["group"]), []).append(r)
    for (step, group), members in groups.items():
        image = next((img for q, img in images.items() if q.split("<image>")[-1].strip() in members[0]["input"]), None)
        if image is None:
            continue
        views = [
            MemberView(
                boxes=[(0, tuple(m["box"]))] if m["box"] else [],
                correct=m["answer"] == m["gt"],
                reward=m["R"],
                tool_reward=m["R_tool"],
                iou=m["IoU"] if m["answer"] == m["gt"] and m["box"] else None,
                label=f"#{m['traj']}",
                fork=m["kind"] == "fork",
            )
            for m in members
        ]
        consensus = [(0, box) for box in members[0]["consensus"]]
        for panel in group_overlays([image], views, consensus, title=f"step {step} group {group} (scripted policy)"):
            written.append(save_png(panel, viz_dir / f"step{step}_{group}.png"))
    return written


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def print_metrics(records: list[dict]) -> None:
    print("  ".join(["step"] + [name for _, name in METRICS]))
    for rec in records:
        print("  ".join([str(rec["step"])] + [_fmt(float(rec["data"].get(key, float("nan")))) for key, _ in METRICS]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvr_verl.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("medvr_demo"), help="run folder (data, dumps, overlays)")
    parser.add_argument("--steps", type=int, default=2, help="training steps (at least 2)")
    parser.add_argument("--save-freq", type=int, default=-1, help="checkpoint every N steps (-1: never)")
    parser.add_argument(
        "--rollout",
        choices=("cpu", "vllm"),
        default="cpu",
        help="cpu: the medvr_cpu server, scripted text; vllm: medvr_vllm on vLLM's CPU build (./.venv-vllm, "
        "scripts/demo.sh --rollout vllm), vLLM sampling the zoom cell and answer under medvr_vllm's template",
    )
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("rollouts", "viz", "overlays", "metrics.jsonl", "rollout_weights.jsonl"):
        path = out / stale
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if args.rollout == "vllm":
        return _main_vllm(out, args.steps, args.save_freq)
    print(BANNER, flush=True)
    code, memory, elapsed = run_training(out, args.steps, args.save_freq)
    if code != 0:
        return code
    table = read_rollouts(out)
    print(f"\nPer trajectory, from the run's rollout dump ({out / 'rollouts'}); SCRIPTED policy text:")
    print_table(table)
    print("\nTraining metrics per step (veRL's file logger):")
    print_metrics(read_metrics(out / "metrics.jsonl"))
    print("\nRollout server weight syncs (veRL's weight sync into medvr_cpu):")
    for line in (out / "rollout_weights.jsonl").read_text().splitlines():
        rec = json.loads(line)
        print(
            f"  v{rec['version']} after step {rec['global_steps']}: {rec['fingerprint']} "
            f"changed={rec['changed']} max|delta|={rec['max_abs_delta']:.3g}"
        )
    pngs = write_overlays(table, out, out / "overlays")
    print(f"\nOverlays of each group's zooms and CCA consensus: {len(pngs)} PNG(s) in {out / 'overlays'}")
    during = sorted((out / "viz").glob("*.png"))
    if during:
        print(f"(and {len(during)} drawn during training by the rollout manager, rollout.custom.viz: {out / 'viz'})")
    print(
        f"Peak memory of the run: {memory.peak / 2**30:.2f} GB resident over all its {memory.peak_processes} "
        f"processes (PSS sum: shared pages counted once; plain per-process RSS sum "
        f"{memory.peak_rss_sum / 2**30:.2f} GB); main_ppo wall time {elapsed:.0f} s"
    )
    print("(random weights, scripted text: the numbers show the mechanics of training, not a trained model)")
    return 0


def _main_vllm(out: Path, steps: int, save_freq: int) -> int:
    """The same run with ``medvr_vllm`` on vLLM's CPU build, vLLM decoding under the template."""
    print(
        "=" * 100 + "\nMedVR demo on vLLM's CPU build: python -m verl.trainer.main_ppo, recipe medvr + "
        "+backend=cpu_vllm (rollout medvr_vllm).\nTHE MODEL HAS RANDOM WEIGHTS and writes no zoom call on its "
        "own, so vLLM decodes under medvr_vllm's template\n(rollout.custom.vllm.constrained, ours, off in the "
        "recipe): the model samples the zoom cell and the answer, a template\nwrites the rest; EVR forks at "
        "zoom calls whose coordinates' entropy qualifies (evr.p_base=1: each such call branches at once;\n"
        "evr.fallback=top_dh fills any slot left).\n" + "=" * 100,
        flush=True,
    )
    code, memory, elapsed = run_training(out, steps, save_freq, backend="cpu_vllm")
    if code != 0:
        return code
    table = read_rollouts(out)
    print(f"\nPer trajectory, from the run's rollout dump ({out / 'rollouts'}); sampled by vLLM under the template:")
    print_table(table)
    print("\nTraining metrics per step (veRL's file logger):")
    records = read_metrics(out / "metrics.jsonl")
    print_metrics(records)
    for rec in records:
        data = rec["data"]
        print(
            f"  step {rec['step']}: EVR fork slots at qualified calls "
            f"{data.get('medvr/evr/fork_rate_qualified/mean', float('nan')):.2f}, by the fallback "
            f"{data.get('medvr/evr/fork_rate_fallback/mean', float('nan')):.2f} (zoom calls' dH max "
            f"{data.get('medvr/evr/delta_h/max', float('nan')):.3f} nats, threshold 0.1)"
        )
        diff = data.get("training/rollout_probs_diff_mean")
        if diff is not None:
            print(f"  step {rec['step']}: mean |p_vLLM - p_actor| over trained tokens {diff:.2e} (weights in sync)")
    pngs = write_overlays(table, out, out / "overlays")
    print(f"\nOverlays of each group's zooms and CCA consensus: {len(pngs)} PNG(s) in {out / 'overlays'}")
    print(f"Peak memory of the run: {memory.peak / 2**30:.2f} GB resident; main_ppo wall time {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
