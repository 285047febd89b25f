"""Does training through veRL's trainer improve the policy? The full-length learning run on CPU.

    python benchmarks/bench_learning.py --out bench_learning --steps 30 --seed 0
    python benchmarks/bench_learning.py --out bench_learning_scratch --steps 30 --seed 0 --start scratch

One ``python -m verl.trainer.main_ppo`` run of the MedVR recipe (``+backend=cpu``, V1 trainer,
EVR, ``medvr_cca``) on the synthetic stripes task with the ``constrained`` policy
(:mod:`medvr_verl.cpu.learning`). ``--start reader`` (default; the CI test's start): the tiny
reader (:mod:`medvr_verl.testing.tiny_reader`), which reads the lines in a crop but zooms at
random, learns where to zoom. ``--start scratch``: the tiny random-weight Qwen2.5-VL learns both
where to zoom and what to answer, and when it starts to learn varies widely with the seed. Writes
``curve.csv`` (one row per step: reward, accuracy, zoom/consensus IoU with the gt box and their
share above eta, EVR fork split, step time) and ``curve.png``.

Targets (exit 0 when all hold), over the last 5 steps against the first 3 and against chance
(zoom into the lines' cell 1 in 4; answer right 1 in 2 from scratch, ~0.625 for the reader):

* mean reward rises by at least 0.5;
* accuracy reaches at least 0.75;
* the share of zooms with IoU > eta against the gt box reaches at least 0.6 (chance 0.25).

``--ablation`` runs the same task for ``tool_reward`` none / unconditional / correct / consensus
and EVR off, and writes ``ablation.csv`` and ``ablation.png`` (final reward, accuracy, gt IoU,
steps until the zoom share first reaches 0.6): a measurement, no target. ``--combine`` merges the
``ablation.csv`` of several seeds into ``OUT/ablation_seeds.csv`` and a Markdown table (per variant:
the mean over seeds, each seed's step to zoom share 0.6, how many seeds learned):

    python benchmarks/bench_learning.py --out ablation_s1 --ablation --steps 20 --seed 1
    python benchmarks/bench_learning.py --out ablation_seeds --combine ablation_s0/ablation.csv ablation_s1/ablation.csv
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


COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def line_chart(series: dict[str, list[float]], steps: list[int], title: str, hlines=(), size=(640, 400)):
    """A line chart with Pillow (the project draws with Pillow only): ``series`` name -> values over
    ``steps``, y in [0, max(1, max value)], dotted horizontal ``hlines``."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 48, 12, 34, 30 + 14 * len(series)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    values = [v for vs in series.values() for v in vs if not math.isnan(v)]
    y_max = max([1.0, *values])
    x0, x1 = min(steps), max(max(steps), min(steps) + 1)

    def xy(step, value):
        x = left + (step - x0) / (x1 - x0) * (width - left - right)
        y = height - bottom - value / y_max * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for k in range(5):
        value = y_max * k / 4
        _, y = xy(x0, value)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{value:.2f}", fill="black")
    for step in (x0, (x0 + x1) // 2, x1):
        x, _ = xy(step, 0)
        draw.text((x - 6, height - bottom + 2), str(step), fill="black")
    for value in hlines:
        (xa, y), (xb, _) = xy(x0, value), xy(x1, value)
        for x in range(int(xa), int(xb), 8):
            draw.line([x, y, x + 3, y], fill=(128, 128, 128))
    for i, (name, vs) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        points = [xy(s, v) for s, v in zip(steps, vs) if not math.isnan(v)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        ly = height - bottom + 16 + 14 * i
        draw.line([left, ly + 6, left + 20, ly + 6], fill=color, width=2)
        draw.text((left + 26, ly), name, fill="black")
    draw.text((left, 6), title, fill="black")
    draw.text((width - right - 90, height - bottom + 2), "training step", fill="black")
    return image


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    """``path``: two charts side by side (learning; EVR fork split and dH)."""
    from PIL import Image

    steps = [r["step"] for r in rows]
    learn = {
        label: [r[name] for r in rows]
        for name, label in (
            ("reward", "mean reward"),
            ("acc", "accuracy (chance 0.5)"),
            ("zoom_gt_hit", "zooms with IoU(gt) > eta (chance 0.25)"),
            ("cca_gt_iou", "consensus IoU with gt"),
        )
    }
    evr = {
        label: [r[name] for r in rows]
        for name, label in (
            ("fork_rate_qualified", "fork slots: forks at qualified calls"),
            ("fork_rate_fallback", "fork slots: forks from the fallback"),
            ("fresh_rate", "fork slots: fresh samples"),
            ("delta_h", "mean dH at zoom calls (nats)"),
        )
    }
    a = line_chart(learn, steps, title, hlines=(learning.CHANCE["acc"], learning.CHANCE["zoom_gt_hit"]))
    b = line_chart(evr, steps, "EVR: where the fork slots went, and dH")
    out = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    out.paste(a, (0, 0))
    out.paste(b, (a.width, 0))
    out.save(path)


def summarize(rows: list[dict], first: int = 3, last: int = 5) -> dict[str, float]:
    out = {}
    for name in ("reward", "acc", "zoom_gt_hit", "zoom_gt_iou", "cca_gt_iou", "fork_rate_qualified", "delta_h"):
        out[f"{name}_first"] = learning.window_mean(rows, name, first=first)
        out[f"{name}_last"] = learning.window_mean(rows, name, last=last)
    reached = [r["step"] for r in rows if r["zoom_gt_hit"] >= TARGETS["zoom_gt_hit"]]
    out["steps_to_zoom_0.6"] = float(reached[0]) if reached else math.nan
    return out


def start_model(start: str) -> Path:
    """The model a run starts from: ``reader`` (:mod:`medvr_verl.testing.tiny_reader`) or ``scratch``
    (the random-weight tiny model)."""
    if start == "reader":
        from medvr_verl.testing.tiny_reader import tiny_reader_path

        return tiny_reader_path()
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    return tiny_qwen25vl_path()


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
    parser.add_argument(
        "--start",
        choices=("reader", "scratch"),
        default="reader",
        help="the model trained: the tiny reader (reads the crop, zoom untrained; CI's test) or the random model",
    )
    parser.add_argument("--lr", type=float, default=learning.DEFAULT_LR)
    parser.add_argument("--kl", type=float, default=learning.DEFAULT_KL_LOSS_COEF, help="actor.kl_loss_coef")
    parser.add_argument("--ablation", action="store_true", help="the tool-reward / EVR ablation instead")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="with --ablation: run only this variant of ABLATIONS (repeatable; default all)",
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="VARIANT=DIR",
        help="with --ablation: take VARIANT's curve from DIR (a learning.run folder with these settings)",
    )
    parser.add_argument("--replot", action="store_true", help="no training: redo CSV, PNG and checks from OUT/run")
    parser.add_argument("--override", action="append", default=[], help="extra main_ppo override (repeatable)")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="ABLATION_CSV",
        help="no training: merge the ablation.csv of several seeds into OUT/ablation_seeds.csv",
    )
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.out)
    model = start_model(args.start)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.ablation:
        return ablation(model, out, args)
    if args.replot:
        rows = learning.read_curve(out / "run")
        summary, seconds = summarize(rows), float("nan")
    else:
        rows, summary, seconds = run_one(
            model, out / "run", args.steps, seed=args.seed, lr=args.lr, kl_loss_coef=args.kl, extra=tuple(args.override)
        )
    write_csv(rows, out / "curve.csv")
    title = f"stripes task, constrained policy, from the {args.start}, seed {args.seed}, lr {args.lr}, kl {args.kl}"
    plot_curve(rows, out / "curve.png", title)
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
    known = dict(ABLATIONS)
    wanted = args.variant or list(known)
    if any("=" not in r for r in args.reuse):
        raise SystemExit(f"--reuse takes VARIANT=DIR, got {args.reuse}")
    reused = dict(r.split("=", 1) for r in args.reuse)
    unknown = sorted(set(wanted + list(reused)) - set(known))
    if unknown:
        raise SystemExit(f"--variant/--reuse: unknown variants {unknown}; known: {list(known)}")
    table = []
    for name in wanted:
        folder = out / name.replace(", ", "_").replace(" ", "_")
        if name in reused:  # a run with the same settings made before: read its metrics, do not train
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.jsonl").write_text((Path(reused[name]) / "metrics.jsonl").read_text())
            rows = learning.read_curve(folder)
            summary, seconds = summarize(rows), float("nan")
        else:
            rows, summary, seconds = run_one(
                model,
                folder,
                args.steps,
                seed=args.seed,
                lr=args.lr,
                kl_loss_coef=args.kl,
                extra=tuple(args.override),
                **known[name],
            )
        write_csv(rows, folder / "curve.csv")
        table.append(
            {
                "variant": name,
                "seed": args.seed,
                "folder": folder.name,
                **{k: round(v, 3) for k, v in summary.items()},
                "seconds": round(seconds) if not math.isnan(seconds) else "reused",
            }
        )
        print(table[-1], flush=True)
    write_csv(table, out / "ablation.csv")
    curves = {t["variant"]: learning.read_curve(out / t["folder"]) for t in table}
    steps = [r["step"] for r in next(iter(curves.values()))]
    charts = [
        line_chart({name: [r[column] for r in rows] for name, rows in curves.items()}, steps, title)
        for column, title in (
            ("reward", "mean reward"),
            ("acc", "accuracy"),
            ("zoom_gt_hit", "zooms with IoU(gt) > eta"),
        )
    ]
    from PIL import Image

    image = Image.new("RGB", (sum(c.width for c in charts), charts[0].height), "white")
    for i, chart in enumerate(charts):
        image.paste(chart, (i * chart.width, 0))
    image.save(out / "ablation.png")
    print(f"ablation: {out / 'ablation.csv'}, {out / 'ablation.png'}")
    return 0


COMBINED = ("reward_first", "reward_last", "acc_first", "acc_last", "zoom_gt_hit_first", "zoom_gt_hit_last")
LEARNED = {"acc_last": TARGETS["acc"], "zoom_gt_hit_last": TARGETS["zoom_gt_hit"]}


def combine(paths: list[Path], out: Path) -> int:
    """Merge per-seed ``ablation.csv`` files (each with a ``seed`` column) into ``out/ablation_seeds.csv``:
    one row per variant with the mean over seeds of :data:`COMBINED`, each seed's first step with
    zoom share >= 0.6, and how many seeds "learned" (last-5 accuracy and zoom share at the
    bench's targets, :data:`LEARNED`). Prints the same as a Markdown table."""
    by_variant: dict[str, list[dict]] = {}
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--combine: {path} is not a file (an ablation.csv written by --ablation)")
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if "seed" not in row:
                    raise SystemExit(f"--combine: {path} has no seed column (written before seeds were recorded)")
                by_variant.setdefault(row["variant"], []).append(row)
    table = []
    for variant, rows in by_variant.items():
        seeds = [int(r["seed"]) for r in rows]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"--combine: variant {variant!r} has seed(s) twice: {sorted(seeds)}")
        rows = [r for _, r in sorted(zip(seeds, rows), key=lambda t: t[0])]
        entry = {"variant": variant, "seeds": " ".join(r["seed"] for r in rows)}
        for key in COMBINED:
            entry[key] = round(sum(float(r[key]) for r in rows) / len(rows), 3)
        entry["steps_to_zoom_0.6"] = " ".join(_step(r["steps_to_zoom_0.6"]) for r in rows)
        learned = sum(all(float(r[k]) >= v for k, v in LEARNED.items()) for r in rows)
        entry["learned"] = f"{learned}/{len(rows)}"
        table.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "ablation_seeds.csv")
    print(
        "| variant | seeds | reward, first 3 -> last 5 | accuracy | zoom share on the gt box "
        "| first step with zoom share >= 0.6, by seed | learned |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in table:
        print(
            f"| {t['variant']} | {t['seeds']} | {t['reward_first']:.2f} -> {t['reward_last']:.2f} "
            f"| {t['acc_first']:.2f} -> {t['acc_last']:.2f} | {t['zoom_gt_hit_first']:.2f} -> "
            f"{t['zoom_gt_hit_last']:.2f} | {t['steps_to_zoom_0.6']} | {t['learned']} |"
        )
    print(f"combined: {out / 'ablation_seeds.csv'}")
    return 0


def _step(value: str) -> str:
    return "never" if value in ("", "nan") else str(int(float(value)))


if __name__ == "__main__":
    sys.exit(main())
