"""Speed of CCA tool rewards against a full-resolution pixel raster, measured in the same run.

Run from the repository root:

    python benchmarks/bench_cca.py

Random GRPO groups of 16 trajectories with 1-4 integer boxes each (most clustered around a
"lesion", some scattered), about 60% correct, on a 4096x4096 image. ``tool_rewards`` (exact
coordinate compression) is timed over many groups; the baseline rasterizes every trajectory's
union at full resolution (bool masks of 4096x4096, uint8 counts) with the same semantics, on a
few groups. Both must give identical rewards. Prints per-group milliseconds (median), the speedup
and PASS/FAIL against the targets: >= 100x faster than the raster and < 1 ms per group. Exit
status 1 on FAIL. Total runtime is a few seconds (well under 30 s on 2 cores).

Worst cases (issue 10), same run: hostile groups of 8 where some trajectories carry 1,000 boxes.
Today's dense compressed grid (still in the code for small groups, forced here as the baseline)
against the sweep the code now switches to: wall time and peak traced memory (``tracemalloc``,
which sees numpy's buffers), with identical rewards. The baseline runs on two trajectories of
``--baseline-boxes`` boxes (default 400: ~0.3 GB; ``--baseline-boxes 1000`` is the issue's case,
~3 GB); four and eight such trajectories (the dense grid ran out of memory) run on the sweep only.
The reward path (records -> capped boxes -> ``group_rewards``) is timed on 16 trajectories of
1,000 records each. Targets: sweep peak < 64 MB and >= 20x less memory than the baseline, no
slower than the baseline, every worst case < 5 s, the reward path < 1 s per group.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import medvr_verl.boxes as boxes_module
from medvr_verl.composite import MemberOutcome, group_rewards
from medvr_verl.consensus import consensus_credit, tool_rewards
from medvr_verl.tool_calls import trajectory_boxes

SIZE = 4096  # image side, pixels
GROUP = 16  # trajectories per group (rollout.n)
TARGET_SPEEDUP = 100.0
TARGET_MS = 1.0
WORST_PEAK_MB = 64.0
WORST_MEMORY_RATIO = 20.0
WORST_SECONDS = 5.0
REWARD_PATH_SECONDS = 1.0


def make_group(
    rng: np.random.Generator,
) -> tuple[list[list[tuple[int, int, int, int]]], list[bool]]:
    """One group: per trajectory 1-4 integer boxes inside the image, and correctness flags.

    About 70% of boxes jitter around a shared target region, so majorities and both reward
    levels (1.0 and 0.5) occur; the rest are scattered anywhere.
    """
    cx, cy = rng.integers(600, SIZE - 600, size=2)
    half_w, half_h = rng.integers(100, 500, size=2)
    boxes_per_traj = []
    for _ in range(GROUP):
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            if rng.random() < 0.7:
                jitter = rng.normal(0.0, 0.25, size=4) * np.array([half_w, half_h, half_w, half_h])
                x1, y1 = cx - half_w + jitter[0], cy - half_h + jitter[1]
                x2, y2 = cx + half_w + jitter[2], cy + half_h + jitter[3]
            else:
                x1, y1 = rng.integers(0, SIZE - 64, size=2)
                x2, y2 = x1 + rng.integers(32, 1200), y1 + rng.integers(32, 1200)
            x1, x2 = sorted((int(np.clip(x1, 0, SIZE - 1)), int(np.clip(x2, 1, SIZE))))
            y1, y2 = sorted((int(np.clip(y1, 0, SIZE - 1)), int(np.clip(y2, 1, SIZE))))
            boxes.append((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
        boxes_per_traj.append(boxes)
    correct = (rng.random(GROUP) < 0.6).tolist()
    return boxes_per_traj, correct


def _mask(boxes, out: np.ndarray) -> np.ndarray:
    """Rasterize a union of boxes into ``out`` (SIZE, SIZE) bool: pixels x1 <= u < x2, y1 <= v < y2."""
    out[:] = False
    for x1, y1, x2, y2 in boxes:
        out[y1:y2, x1:x2] = True
    return out


def raster_tool_rewards(boxes_per_traj, correct, eta: float = 0.5) -> list[float]:
    """Baseline with the same semantics as ``tool_rewards``, by full-resolution pixel masks.

    Masks are rebuilt for the IoU pass instead of kept, so memory stays at a few 16 MB planes
    whatever the group size.
    """
    quorum = [
        j
        for j, boxes in enumerate(boxes_per_traj)
        if correct[j] and any(x2 > x1 and y2 > y1 for x1, y1, x2, y2 in boxes)
    ]
    rewards = [0.0] * len(boxes_per_traj)
    if not quorum:
        return rewards
    mask = np.empty((SIZE, SIZE), dtype=bool)
    count = np.zeros((SIZE, SIZE), dtype=np.uint8)  # at most GROUP (< 256) per pixel
    for j in quorum:
        count += _mask(boxes_per_traj[j], mask)
    consensus = count > len(quorum) // 2  # C > q/2 for integer C
    for j in quorum:
        m = _mask(boxes_per_traj[j], mask)
        inter = np.count_nonzero(m & consensus)
        union = np.count_nonzero(m | consensus)
        value = inter / union if union else 0.0
        rewards[j] = 1.0 if value > eta else 0.5
    return rewards


def _median_ms(fn, groups) -> tuple[float, list]:
    """Median wall time per call in ms over ``groups``, and the results."""
    times, results = [], []
    for boxes, correct in groups:
        start = time.perf_counter()
        results.append(fn(boxes, correct))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, results


def hostile_group(rng: np.random.Generator, big: int, boxes: int, size: int = 8):
    """A group of ``size`` where ``big`` trajectories carry ``boxes`` random boxes, the rest 3."""
    group = []
    for j in range(size):
        k = boxes if j < big else 3
        xy = rng.integers(0, SIZE - 300, size=(k, 2))
        wh = rng.integers(1, 300, size=(k, 2))
        group.append([(int(x), int(y), int(x + w), int(y + h)) for (x, y), (w, h) in zip(xy, wh)])
    return group, [True] * size


def _measure(fn, *args):
    """(seconds, peak traced MB, result) of one call."""
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, result


def _dense(fn, *args):
    """``fn`` on today's dense grid whatever the size (the baseline)."""
    old = boxes_module.DENSE_MAX_CELLS
    boxes_module.DENSE_MAX_CELLS = 1 << 62
    try:
        return fn(*args)
    finally:
        boxes_module.DENSE_MAX_CELLS = old


def worst_cases(seed: int, baseline_boxes: int) -> dict[str, bool]:
    rng = np.random.default_rng(seed)
    checks: dict[str, bool] = {}
    print("\nworst cases: groups of 8, some trajectories with many boxes (issue 10)")
    group, correct = hostile_group(rng, 2, baseline_boxes)
    new_s, new_mb, new = _measure(consensus_credit, group, correct)
    old_s, old_mb, old = _measure(_dense, consensus_credit, group, correct)
    print(
        f"  2 x {baseline_boxes} boxes: sweep {new_s:7.3f} s {new_mb:8.1f} MB | dense baseline {old_s:7.3f} s "
        f"{old_mb:8.1f} MB | memory ratio {old_mb / max(new_mb, 1e-3):.0f}x, time ratio {old_s / new_s:.1f}x"
    )
    checks["sweep equals the dense baseline (rewards, IoUs, consensus)"] = new == old
    checks[f"memory >= {WORST_MEMORY_RATIO:.0f}x below the baseline"] = old_mb >= WORST_MEMORY_RATIO * new_mb
    checks["no slower than the baseline"] = new_s <= old_s
    for big in (2, 4, 8):
        group, correct = hostile_group(rng, big, 1000)
        secs, mb, _ = _measure(consensus_credit, group, correct)
        print(f"  {big} x 1000 boxes: sweep {secs:7.3f} s {mb:8.1f} MB ({big * 1000 + (8 - big) * 3} boxes)")
        checks[f"{big} x 1000 boxes: < {WORST_SECONDS:g} s and < {WORST_PEAK_MB:g} MB"] = (
            secs < WORST_SECONDS and mb < WORST_PEAK_MB
        )
    # The reward path: 1,000 records per trajectory, capped per trajectory, 16 trajectories.
    members = []
    for _ in range(16):
        group, _ = hostile_group(rng, 1, 1000, size=1)
        records = [{"valid": True, "root_image_index": 0, "bbox_root": list(b)} for b in group[0]]
        boxes, invalid, _ = trajectory_boxes({"medvr_zoom_calls": records}, "")
        members.append(MemberOutcome(1.0, 1.0, boxes))
    secs, mb, result = _measure(group_rewards, members, "consensus")
    print(
        f"  reward path, 16 x 1000 records (capped to {len(members[0].boxes)} boxes, {invalid} counted invalid): "
        f"{secs:7.3f} s {mb:8.1f} MB"
    )
    checks[f"reward path < {REWARD_PATH_SECONDS:g} s per group"] = secs < REWARD_PATH_SECONDS
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2000, help="groups timed on the fast path")
    parser.add_argument("--raster-groups", type=int, default=12, help="groups timed on the raster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-boxes", type=int, default=400, help="boxes per big trajectory in the dense baseline (1000: ~3 GB)"
    )
    parser.add_argument("--no-worst-cases", action="store_true", help="skip the worst-case section")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    groups = [make_group(rng) for _ in range(max(args.groups, args.raster_groups))]
    raster_groups = groups[: args.raster_groups]

    for boxes, correct in groups[:20]:  # warm-up: imports, BLAS threads, caches
        tool_rewards(boxes, correct)
    fast_ms, fast_results = _median_ms(tool_rewards, groups[: args.groups])
    raster_ms, raster_results = _median_ms(raster_tool_rewards, raster_groups)

    identical = all(fast == slow for fast, slow in zip(fast_results[: len(raster_results)], raster_results))
    levels = sorted({r for rewards in fast_results for r in rewards})
    speedup = raster_ms / fast_ms
    print(f"image {SIZE}x{SIZE}, groups of {GROUP} trajectories with 1-4 boxes, ~60% correct")
    print(f"reward levels seen: {levels}")
    print(f"tool_rewards (coordinate compression): {fast_ms:8.3f} ms/group (median of {args.groups})")
    print(f"full-resolution raster baseline:       {raster_ms:8.3f} ms/group (median of {args.raster_groups})")
    print(f"speedup: {speedup:.0f}x")
    print(f"identical rewards on {len(raster_results)} groups: {identical}")
    checks = {
        f"speedup >= {TARGET_SPEEDUP:.0f}x": speedup >= TARGET_SPEEDUP,
        f"< {TARGET_MS:g} ms per group": fast_ms < TARGET_MS,
        "identical rewards": identical,
    }
    if not args.no_worst_cases:
        checks.update(worst_cases(args.seed, args.baseline_boxes))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
