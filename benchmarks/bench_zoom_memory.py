"""Peak memory of one zoom crop, against the previous code path, measured in the same run.

Run from the repository root:

    python benchmarks/bench_zoom_memory.py            # 8000x8000 sources (a few GB of headroom)
    python benchmarks/bench_zoom_memory.py --side 4000

What is measured is the zoom tool's image path (``ZoomInTool._render``): the intensity window of
the whole source image (high-bit-depth modes), then the crop converted to 8-bit RGB. Each case runs
in a fresh child process: the source image is built, the peak RSS is reset
(``/proc/self/clear_refs``), the path runs, and the peak RSS growth (``VmHWM - VmRSS`` before) is
reported. The baseline is the previous implementation, kept below: ``intensity_window`` of the
whole image through numpy (a full copy and a full finite mask) and ``to_rgb8(img.crop(box),
window)`` with whole-region float64 (high bit depth) or uint16 (alpha) temporaries. Both must give
the same pixels.

Target per case (issue 10): peak growth <= 2 x max(source region bytes, RGB output bytes) + 16 MB,
where the source region is the crop box in the source mode and Pillow stores RGB as 4 bytes per
pixel. Prints each case with the ratio to the baseline; exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLACK_MB = 16.0
BYTES_PER_PIXEL = {"F": 4, "I": 4, "I;16": 2, "I;16B": 2, "L": 1, "RGB": 4, "RGBA": 4, "LA": 4}

_CHILD = r"""
import json, math, os, sys
sys.path.insert(0, {repo!r})
import numpy as np
from PIL import Image

def rss():
    out = {{}}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out

mode, side, box, which = {mode!r}, {side}, tuple({box}), {which!r}
rng = np.random.default_rng(0)
if mode == "F":
    arr = rng.standard_normal((side, side), dtype=np.float32) * 100
    arr[::97, ::89] = np.nan
    img = Image.fromarray(arr, "F")
elif mode in ("I;16", "I;16B"):
    arr = rng.integers(0, 4096, size=(side, side), dtype=np.uint16)
    img = Image.frombytes(mode, (side, side), arr.astype("<u2" if mode == "I;16" else ">u2").tobytes())
elif mode == "I":
    img = Image.fromarray(rng.integers(-1000, 3000, size=(side, side), dtype=np.int32), "I")
elif mode == "RGBA":
    img = Image.fromarray(rng.integers(0, 256, size=(side, side, 4), dtype=np.uint8), "RGBA")
else:
    img = Image.fromarray(rng.integers(0, 256, size=(side, side), dtype=np.uint8), "L")
arr = None
import gc; gc.collect()

from medvr_verl.tools import image_io

def baseline_window(img):
    if img.mode in ("I", "I;16"):
        lo, hi = img.getextrema()
        return float(lo), float(hi)
    a = np.asarray(img)
    if a.dtype.kind == "f":
        finite = a[np.isfinite(a)]
        return (float(finite.min()), float(finite.max())) if finite.size else None
    return float(a.min()), float(a.max())

def baseline_window_to_uint8(arr, lo, hi):
    out = np.zeros(arr.shape, dtype=np.uint8)
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or not hi > lo:
        return out
    a = np.asarray(arr, dtype=np.float64)
    a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
    scaled = (a - lo) * (255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    out[...] = scaled.astype(np.uint8)
    return out

def baseline_composite(img):
    arr = np.asarray(img, dtype=np.uint16)
    color, alpha = arr[..., :-1], arr[..., -1:]
    out = ((color * alpha + 127) // 255).astype(np.uint8)
    if out.shape[-1] == 1:
        return Image.fromarray(np.ascontiguousarray(out[..., 0]))
    return Image.fromarray(np.ascontiguousarray(out))

def baseline_crop(img, box, window):
    crop = img.crop(box)
    if image_io.is_high_bit_depth(crop.mode):
        lo, hi = window if window is not None else (None, None)
        return Image.fromarray(baseline_window_to_uint8(np.asarray(crop), lo, hi)).convert("RGB")
    if crop.mode in ("LA", "RGBA"):
        out = baseline_composite(crop)
        return out if out.mode == "RGB" else out.convert("RGB")
    return image_io.to_rgb8(crop)

img.load()
before = rss()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
start = rss()
if which == "new":
    window = image_io.intensity_window(img) if image_io.is_high_bit_depth(img.mode) else None
    crop = image_io.crop_to_rgb8(img, box, window)
else:
    window = baseline_window(img) if image_io.is_high_bit_depth(img.mode) else None
    crop = baseline_crop(img, box, window)
end = rss()
print(json.dumps({{"peak": end["VmHWM"] - start["VmRSS"], "size": list(crop.size),
                   "digest": int(np.asarray(crop, dtype=np.uint64).sum())}}))
"""


def run_case(mode: str, side: int, box: tuple[int, int, int, int], which: str) -> dict:
    code = _CHILD.format(repo=str(REPO), mode=mode, side=side, box=list(box), which=which)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} {which}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000, help="source image side in pixels")
    args = parser.parse_args(argv)
    side = args.side
    big = (side // 8, side // 8, side - side // 8, side - side // 8)  # a large zoom (75% per side)
    small = (side // 2, side // 2, side // 2 + 90, side // 2 + 90)  # the 90x90 zoom
    cases = [(m, b) for m in ("F", "I;16", "I;16B", "I") for b in (big, small)] + [("RGBA", big), ("L", big)]
    ok_all = True
    print(f"source {side}x{side}; peak RSS growth of one zoom, MB (baseline = previous code path)")
    print(f"{'mode':6} {'crop':>11} {'new MB':>9} {'old MB':>9} {'old/new':>8} {'target MB':>10}  result")
    for mode, box in cases:
        new = run_case(mode, side, box, "new")
        old = run_case(mode, side, box, "old")
        w, h = box[2] - box[0], box[3] - box[1]
        region = w * h * BYTES_PER_PIXEL[mode]
        target = (2 * max(region, w * h * 4)) / 2**20 + SLACK_MB
        new_mb, old_mb = new["peak"] / 2**20, old["peak"] / 2**20
        same = new["size"] == old["size"] and new["digest"] == old["digest"]
        ok = new_mb <= target and same
        ok_all &= ok
        ratio = old_mb / new_mb if new_mb > 0 else math.inf
        print(
            f"{mode:6} {w:>5}x{h:<5} {new_mb:9.1f} {old_mb:9.1f} {ratio:7.1f}x {target:10.1f}  "
            f"{'PASS' if ok else 'FAIL'}{'' if same else ' (pixels differ from the baseline)'}"
        )
    print("PASS" if ok_all else "FAIL")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
