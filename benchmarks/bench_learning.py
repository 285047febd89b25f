"""Does training through veRL's trainer improve the policy? The full-length learning run on CPU.

    python benchmarks/bench_learning.py --out bench_learning --steps 30

One ``python -m verl.trainer.main_ppo`` run of the MedVR recipe (``+backend=cpu``, V1 trainer,
EVR, ``medvr_cca``) on the synthetic stripes task with the ``constrained`` policy
(:mod:`medvr_verl.cpu.learning`): the tiny random-weight Qwen2.5-VL learns from scratch where to
zoom and what to answer. Writes ``curve.csv`` (one row per step: reward, accuracy, zoom/consensus
IoU with the gt box and their share above eta, EVR fork split, step time) and ``curve.png``.

Targets (exit 0 when all hold), over the last 5 steps against the first 3 and against chance
(zoom into the lines' cell 1 in 4, answer right 1 in 2):

* mean reward rises by at least 0.5;
* accuracy reaches at least 0.75 (chance 0.5);
* the share of zooms with IoU > eta against the gt box reaches at least 0.6 (chance 0.25).

``--ablation`` runs the same task for ``tool_reward`` none / unconditional / correct / consensus
and EVR off, and writes ``ablation.csv`` and ``ablation.png`` (final reward, accuracy, gt IoU,
steps until the zoom share first reaches 0.6): a measurement, no target.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from medvr_verl.cpu import learning

TARGETS = {"reward_rise": 0.5, "acc": 0.75, "zoom_gt_hit": 0.6}
ABLATIONS = (
    ("consensus", {"tool_reward": "consensus"}),
    ("correct", {"tool_reward": "correct"}),
    ("unconditional", {"tool_reward": "unconditional"}),
    ("none", {"tool_reward": "none"}),
    ("consensus, EVR off", {"tool_reward": "consensus", "evr": False}),
)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, label in (
        ("reward", "mean reward"),
        ("acc", "accuracy"),
        ("zoom_gt_hit", "zooms with IoU(gt) > eta"),
        ("cca_gt_iou", "consensus IoU with gt"),
    ):
        ax1.plot(steps, [r[name] for r in rows], marker=".", label=label)
    ax1.axhline(learning.CHANCE["acc"], color="gray", ls=":", lw=1)
    ax1.axhline(learning.CHANCE["zoom_gt_hit"], color="gray", ls="--", lw=1)
    ax1.set_xlabel("training step")
    ax1.set_title(title + "\n(dotted: chance accuracy, dashed: chance zoom share)", fontsize=9)
    ax1.legend(fontsize=8)
    for name, label in (
        ("fork_rate_qualified", "forks at qualified calls"),
        ("fork_rate_fallback", "forks from fallback slots"),
        ("fresh_rate", "fresh samples"),
        ("delta_h", "mean dH at zoom calls (nats)"),
    ):
        ax2.plot(steps, [r[name] for r in rows], marker=".", label=label)
    ax2.set_xlabel("training step")
    ax2.set_title("EVR: where the fork slots went (share of slots), and dH", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(rows: list[dict], first: int = 3, last: int = 5) -> dict[str, float]:
    out = {}
    for name in ("reward", "acc", "zoom_gt_hit", "zoom_gt_iou", "cca_gt_iou", "fork_rate_qualified", "delta_h"):
        out[f"{name}_first"] = learning.window_mean(rows, name, first=first)
        out[f"{name}_last"] = learning.window_mean(rows, name, last=last)
    reached = [r["step"] for r in rows if r["zoom_gt_hit"] >= TARGETS["zoom_gt_hit"]]
    out["steps_to_zoom_0.6"] = float(reached[0]) if reached else math.nan
    return out


def run_one(model: Path, out: Path, steps: int, **kwargs) -> tuple[list[dict], dict, float]:
    code, seconds, log = learning.run(model, out, steps=steps, **kwargs)
    if code != 0:
        print(f"main_ppo failed (exit {code}); see {log}", file=sys.stderr)
        print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        raise SystemExit(code)
    rows = learning.read_curve(out)
    return rows, summarize(rows), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_learning"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=learning.DEFAULT_LR)
    parser.add_argument("--ablation", action="store_true", help="the tool-reward / EVR ablation instead")
    parser.add_argument("--replot", action="store_true", help="no training: redo CSV, PNG and checks from OUT/run")
    args = parser.parse_args(argv)
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    model = tiny_qwen25vl_path()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.ablation:
        return ablation(model, out, args)
    if args.replot:
        rows = learning.read_curve(out / "run")
        summary, seconds = summarize(rows), float("nan")
    else:
        rows, summary, seconds = run_one(model, out / "run", args.steps, seed=args.seed, lr=args.lr)
    write_csv(rows, out / "curve.csv")
    plot_curve(rows, out / "curve.png", f"stripes task, constrained policy, seed {args.seed}, lr {args.lr}")
    print(f"main_ppo: {len(rows)} steps in {seconds:.0f} s; curve: {out / 'curve.csv'}, {out / 'curve.png'}")
    for key, value in summary.items():
        print(f"  {key:24s} {value:.3f}")
    checks = {
        "reward rises": summary["reward_last"] - summary["reward_first"] >= TARGETS["reward_rise"],
        "accuracy above chance": summary["acc_last"] >= TARGETS["acc"],
        "zooms find the gt box": summary["zoom_gt_hit_last"] >= TARGETS["zoom_gt_hit"],
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


def ablation(model: Path, out: Path, args) -> int:
    table = []
    for name, kwargs in ABLATIONS:
        folder = out / name.replace(", ", "_").replace(" ", "_")
        rows, summary, seconds = run_one(model, folder, args.steps, seed=args.seed, lr=args.lr, **kwargs)
        write_csv(rows, folder / "curve.csv")
        table.append({"variant": name, **{k: round(v, 3) for k, v in summary.items()}, "seconds": round(seconds)})
        print(table[-1], flush=True)
    write_csv(table, out / "ablation.csv")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = [t["variant"] for t in table]
    for i, (key, label) in enumerate((("reward_last", "final reward"), ("acc_last", "final accuracy"), ("zoom_gt_hit_last", "final zoom share IoU(gt)>eta"))):
        ax.bar([j + 0.27 * (i - 1) for j in range(len(names))], [t[key] for t in table], width=0.27, label=label)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_title(f"toy ablation, {args.steps} steps, seed {args.seed} (last 5 steps)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=100)
    print(f"ablation: {out / 'ablation.csv'}, {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
