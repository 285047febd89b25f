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
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from medvr_verl.consensus import tool_rewards

SIZE = 4096  # image side, pixels
GROUP = 16  # trajectories per group (rollout.n)
TARGET_SPEEDUP = 100.0
TARGET_MS = 1.0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2000, help="groups timed on the fast path")
    parser.add_argument("--raster-groups", type=int, default=12, help="groups timed on the raster")
    parser.add_argument("--seed", type=int, default=0)
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
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
