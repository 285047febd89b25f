"""Pictures of Consensus Credit Assignment: one group's zoom boxes and consensus drawn over the image.

Pure Pillow + numpy (no matplotlib); imports neither veRL nor torch. Three ways in:

* :func:`render_group_overlay` / :func:`group_overlays`: draw a group you hold in memory.
* :func:`write_step_overlays`: called during training with the images of a few prompts and the
  per-trajectory ``reward_extra_info`` dicts of their groups; writes ``max_groups`` PNGs.
* The CLI, over the JSONL files veRL dumps when ``trainer.rollout_data_dir`` (training) or
  ``trainer.validation_data_dir`` is set::

      python -m medvr_verl.viz ROLLOUTS.jsonl [MORE.jsonl | DIR ...] --data train.parquet [--data more.parquet] \\
          --out viz/ [--step S] [--max-groups N] [--max-side 1024]

What a picture shows
--------------------
The image (any Pillow mode, 16-bit grayscale windowed by :func:`medvr_verl.tools.image_io.to_rgb8`)
scaled so its longer side is at most ``max_side`` (tiny images are enlarged with nearest-neighbour
to ``min_side``); the consensus region as a translucent green fill with an opaque green outline
of the region's boundary; each trajectory's zoom boxes as outlines in its own colour -- **solid for a
correct answer, dashed for a wrong one** -- tagged with the trajectory's label; a legend panel on the
right with, per trajectory, a line-style swatch, label, ``ok``/``wrong``, composite reward ``R``,
tool reward, IoU with the consensus (``-`` outside the quorum) and its number of boxes on this image.

Fields read from each trajectory's record (``reward_extra_info`` of the ``medvr_cca`` manager, and
so also every line of veRL's dump): ``zoom_boxes_json`` and ``cca_consensus_json`` (JSON lists of
``[image_index, x1, y1, x2, y2]`` in original-image pixels), ``group_uid`` (the group's ``uid``; a
plain ``uid`` field is read when ``group_uid`` is absent or empty), ``sample_index`` (dataset row,
``extra_info.index``; -1 unknown), ``acc``, ``tool_reward``, ``cca_iou``, ``score`` (the composite
reward; veRL's dump puts the summed token-level score there), optionally ``cca_in_quorum`` and
``cca_quorum_size``. Values that went through ``json.dumps(default=str)`` as strings are accepted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import colorsys
import functools
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medvr_verl.tools.image_io import load_medical_image, to_rgb8

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
ImageBox = tuple[int, Box]
RGB = tuple[int, int, int]

__all__ = [
    "CONSENSUS_ALPHA",
    "CONSENSUS_COLOR",
    "MemberView",
    "ParquetImages",
    "RenderSummary",
    "TrajectoryView",
    "group_overlays",
    "main",
    "members_from_records",
    "overlay_filename",
    "parse_image_boxes",
    "render_group_overlay",
    "render_rollouts",
    "save_png",
    "trajectory_color",
    "write_step_overlays",
]

#: Fill and outline colour of the consensus region, and the fill's opacity.
CONSENSUS_COLOR: RGB = (0, 230, 118)
CONSENSUS_ALPHA = 0.4
#: Trajectory colours (no green: that is the consensus). More trajectories get golden-ratio hues.
PALETTE: tuple[RGB, ...] = (
    (255, 59, 48),  # red
    (10, 132, 255),  # blue
    (255, 159, 10),  # orange
    (100, 210, 255),  # sky
    (255, 55, 200),  # magenta
    (255, 230, 0),  # yellow
    (175, 82, 222),  # purple
    (255, 150, 170),  # pink
    (235, 235, 235),  # white
    (190, 150, 100),  # tan
)
BACKGROUND: RGB = (28, 28, 32)
TEXT_COLOR: RGB = (235, 235, 235)
MUTED_COLOR: RGB = (150, 150, 160)
IMAGE_FIELDS = ("images",)

# Record fields written by the medvr_cca reward manager (see the module docstring).
F_BOXES = "zoom_boxes_json"
F_CONSENSUS = "cca_consensus_json"
F_UIDS = ("group_uid", "uid")  # first non-empty wins
F_INDEX = "sample_index"


# --------------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrajectoryView:
    """One trajectory as drawn on one image: its boxes there (original-image pixels) and its scores."""

    boxes: list[Box]
    correct: bool
    reward: float
    tool_reward: float
    iou: float | None
    label: str


@dataclass(frozen=True)
class MemberView:
    """One trajectory of a group across all of its images: boxes as ``(image_index, box)``."""

    boxes: list[ImageBox]
    correct: bool
    reward: float
    tool_reward: float
    iou: float | None
    label: str

    def on_image(self, image_index: int) -> TrajectoryView:
        return TrajectoryView(
            boxes=[b for k, b in self.boxes if k == image_index],
            correct=self.correct,
            reward=self.reward,
            tool_reward=self.tool_reward,
            iou=self.iou,
            label=self.label,
        )


def trajectory_color(i: int) -> RGB:
    """Colour of the ``i``-th trajectory of a group (deterministic; never the consensus green)."""
    if 0 <= i < len(PALETTE):
        return PALETTE[i]
    hue = (i * 0.618033988749895) % 1.0
    if 0.2 < hue < 0.47:  # green band: shift away from the consensus colour
        hue = (hue + 0.35) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.7, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


# --------------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px (FreeType build), else the fixed bitmap default."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _text_w(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(math.ceil(right - min(left, 0)))


def _line_h(font) -> int:
    return int(math.ceil(font.getbbox("Agjy|")[3])) + 2


def _ellipsize(font, text: str, width: int) -> str:
    if _text_w(font, text) <= width:
        return text
    while text and _text_w(font, text + "...") > width:
        text = text[:-1]
    return text + "..." if text else ""


def _ink_for(color: RGB) -> RGB:
    """Black or white text, whichever reads better on ``color``."""
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _scale_box(box: Sequence[float], sx: float, sy: float, w: int, h: int) -> tuple[int, int, int, int] | None:
    """A half-open original-pixel box -> half-open display pixels, clamped; None if off the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        return None
    X1, X2 = min(max(round(x1 * sx), 0), w), min(max(round(x2 * sx), 0), w)
    Y1, Y2 = min(max(round(y1 * sy), 0), h), min(max(round(y2 * sy), 0), h)
    if x2 * sx <= 0 or y2 * sy <= 0 or x1 * sx >= w or y1 * sy >= h:
        return None
    if X2 <= X1:  # thinner than a display pixel: keep one pixel
        X1, X2 = min(X1, w - 1), min(X1, w - 1) + 1
    if Y2 <= Y1:
        Y1, Y2 = min(Y1, h - 1), min(Y1, h - 1) + 1
    return X1, Y1, X2, Y2


def _region_edge(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels of ``mask`` within ``thickness`` of its boundary (the image border counts as outside)."""
    inner = mask.copy()
    for _ in range(thickness):
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        eroded[0, :] = eroded[-1, :] = False
        eroded[:, 0] = eroded[:, -1] = False
        inner = eroded
    return mask & ~inner


def _blend(arr: np.ndarray, mask: np.ndarray, color: RGB, alpha: float) -> None:
    """In place: ``arr[mask] = round(arr * (1 - alpha) + color * alpha)`` in integer arithmetic."""
    a = int(round(alpha * 255))
    src = arr[mask].astype(np.uint32)
    col = np.asarray(color, dtype=np.uint32)
    arr[mask] = ((src * (255 - a) + col * a + 127) // 255).astype(np.uint8)


def _dashed_rect(draw: ImageDraw.ImageDraw, rect, color: RGB, width: int, dash: int, gap: int) -> None:
    """Dashed outline inside the inclusive rectangle ``(x1, y1, x2, y2)``: each edge a run of short
    ``width``-thick line segments (drawn as filled rectangles, so they stay exactly inside the box);
    dashes start at the corners, so every corner is drawn."""
    x1, y1, x2, y2 = rect
    width = max(1, min(width, (x2 - x1 + 2) // 2, (y2 - y1 + 2) // 2))
    step = dash + gap
    for x in range(x1, x2 + 1, step):  # top and bottom edges
        xe = min(x + dash - 1, x2)
        draw.rectangle((x, y1, xe, y1 + width - 1), fill=color)
        draw.rectangle((x, y2 - width + 1, xe, y2), fill=color)
    for y in range(y1, y2 + 1, step):  # left and right edges
        ye = min(y + dash - 1, y2)
        draw.rectangle((x1, y, x1 + width - 1, ye), fill=color)
        draw.rectangle((x2 - width + 1, y, x2, ye), fill=color)


def _outline(draw: ImageDraw.ImageDraw, rect, color: RGB, width: int, dashed: bool) -> None:
    if dashed:
        _dashed_rect(draw, rect, color, width, dash=3 * width + 2, gap=2 * width + 2)
    else:
        draw.rectangle(rect, outline=color, width=width)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fit_scale(size: tuple[int, int], max_side: int, min_side: int) -> tuple[int, int]:
    """Drawn size: longer side shrunk to ``max_side``, or a small image enlarged by the smallest integer
    factor that brings its longer side to ``min_side`` (never beyond ``max_side``)."""
    w, h = size
    longest = max(w, h)
    if longest > max_side:
        s = max_side / longest
    elif 0 < longest < min_side:
        s = float(max(1, min(math.ceil(min_side / longest), max_side // longest)))  # crisp pixels
    else:
        return w, h
    return max(1, round(w * s)), max(1, round(h * s))


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def render_group_overlay(
    image: Image.Image,
    trajectories: Sequence[TrajectoryView],
    consensus: Sequence[Sequence[float]],
    *,
    title: str | None = None,
    max_side: int = 1024,
    min_side: int = 256,
) -> Image.Image:
    """Draw one image of a group: consensus fill + outline, per-trajectory box outlines, a legend.

    Args:
        image: the original image, any Pillow mode (converted with ``to_rgb8``).
        trajectories: the group's trajectories, boxes on *this* image in original-image pixels.
            Trajectory ``i`` is drawn in :func:`trajectory_color` ``(i)``.
        consensus: the consensus region on this image as ``(x1, y1, x2, y2)`` rectangles (pixels).
        title: a line above the picture (truncated to fit).
        max_side: longer side of the drawn image at most this (aspect kept, boxes scaled with it).
        min_side: images whose longer side is below this are enlarged by the smallest integer factor
            that reaches it (nearest neighbour), within ``max_side``.

    Returns:
        RGB image: the drawn image at the top left (below the title bar, if any), legend on the right.
        The image area is ``_fit_scale(image.size, max_side, min_side)`` pixels.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    src = to_rgb8(image)
    ow, oh = src.size
    w, h = _fit_scale((ow, oh), max_side, min_side)
    if (w, h) != (ow, oh):
        if w < ow:
            src = src.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=2.0)
        else:
            src = src.resize((w, h), Image.Resampling.NEAREST)
    sx, sy = w / ow, h / oh
    arr = np.array(src, dtype=np.uint8)

    longest = max(w, h)
    line_w = max(2, round(longest / 400))
    font_size = min(20, max(12, round(longest / 60)))
    font = _font(font_size)
    lh = _line_h(font)

    # Consensus: translucent fill, opaque outline around the region (not around each rectangle).
    rects = [r for r in (_scale_box(b, sx, sy, w, h) for b in consensus) if r is not None]
    if rects:
        mask = np.zeros((h, w), dtype=bool)
        for X1, Y1, X2, Y2 in rects:
            mask[Y1:Y2, X1:X2] = True
        _blend(arr, mask, CONSENSUS_COLOR, CONSENSUS_ALPHA)
        arr[_region_edge(mask, line_w)] = CONSENSUS_COLOR
    canvas_img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(canvas_img)

    # Trajectory boxes, then their tags (tags on top of every outline).
    tags: list[tuple[tuple[int, int, int, int], str, RGB]] = []
    placed: list[tuple[int, int, int, int]] = []
    for i, traj in enumerate(trajectories):
        color = trajectory_color(i)
        for box in traj.boxes:
            r = _scale_box(box, sx, sy, w, h)
            if r is None:
                continue
            X1, Y1, X2, Y2 = r
            _outline(draw, (X1, Y1, X2 - 1, Y2 - 1), color, line_w, dashed=not traj.correct)
            tw, th = _text_w(font, traj.label) + 4, lh
            ty = Y1 - th if Y1 - th >= 0 else min(Y1 + line_w, max(0, h - th))
            tx = min(max(X1, 0), max(0, w - tw))
            tag = (tx, ty, tx + tw, ty + th)
            for _ in range(12):  # nudge right, then down, away from tags already placed
                if not any(_overlaps(tag, p) for p in placed):
                    break
                tx = tag[2] + 1
                if tx + tw > w:
                    tx, ty = min(max(X1, 0), max(0, w - tw)), min(ty + th + 1, max(0, h - th))
                tag = (tx, ty, tx + tw, ty + th)
            placed.append(tag)
            tags.append((tag, traj.label, color))
    for (x0, y0, x1, y1), label, color in tags:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
        draw.text((x0 + 2, y0 + 1), label, fill=_ink_for(color), font=font)

    # Legend rows.
    pad = max(6, font_size // 2)
    sw_w, sw_h = 2 * lh, lh - 4
    header = ("", "traj", "answer", "R", "tool", "IoU", "boxes")
    rows = [
        (
            "",
            t.label,
            "ok" if t.correct else "wrong",
            _fmt_num(t.reward, 2),
            _fmt_num(t.tool_reward, 1),
            "-" if t.iou is None else _fmt_num(t.iou, 2),
            str(len(t.boxes)),
        )
        for t in trajectories
    ]
    col_w = [max(_text_w(font, r[c]) for r in [header, *rows]) for c in range(len(header))]
    col_w[0] = sw_w
    gap = pad + 2
    table_w = sum(col_w) + gap * (len(col_w) - 1)
    cons_text = "consensus region" if rects else "no consensus"
    notes = ["solid = correct, dashed = wrong", "IoU vs consensus; - = not in quorum"]
    legend_w = 2 * pad + max(table_w, sw_w + gap + _text_w(font, cons_text), *(_text_w(font, n) for n in notes))
    row_h = lh + 4
    legend_h = 2 * pad + row_h * (2 + len(rows)) + pad + row_h * len(notes)

    title_h = (lh + 2 * pad) if title else 0
    cw, ch = w + legend_w, title_h + max(h, legend_h)
    out = Image.new("RGB", (cw, ch), BACKGROUND)
    out.paste(canvas_img, (0, title_h))
    d = ImageDraw.Draw(out)
    if title:
        d.text((pad, pad), _ellipsize(font, title, cw - 2 * pad), fill=TEXT_COLOR, font=font)

    x0, y = w + pad, title_h + pad
    # consensus swatch: the blended fill on mid gray with the outline colour
    sw = (x0, y + 2, x0 + sw_w - 1, y + 2 + sw_h - 1)
    if rects:
        fill = np.full((1, 1, 3), 128, dtype=np.uint8)
        _blend(fill, np.ones((1, 1), dtype=bool), CONSENSUS_COLOR, CONSENSUS_ALPHA)
        d.rectangle(sw, fill=tuple(int(v) for v in fill[0, 0]), outline=CONSENSUS_COLOR, width=2)
    else:
        d.rectangle(sw, outline=MUTED_COLOR, width=1)
    d.text((x0 + sw_w + gap, y), cons_text, fill=TEXT_COLOR if rects else MUTED_COLOR, font=font)
    y += row_h

    def cells(values, y, color):
        x = x0
        for c, text in enumerate(values):
            if c > 0 and text:
                # right-align the numbers, left-align the words
                tx = x + col_w[c] - _text_w(font, text) if c >= 3 else x
                d.text((tx, y), text, fill=color, font=font)
            x += col_w[c] + gap

    cells(header, y, MUTED_COLOR)
    y += row_h
    for i, (t, values) in enumerate(zip(trajectories, rows)):
        color = trajectory_color(i)
        _outline(d, (x0, y + 2, x0 + sw_w - 1, y + 2 + sw_h - 1), color, 2, dashed=not t.correct)
        cells(values, y, TEXT_COLOR if t.correct else MUTED_COLOR)
        y += row_h
    y += pad
    for note in notes:
        d.text((x0, y), note, fill=MUTED_COLOR, font=font)
        y += row_h
    return out


def _fmt_num(value: float | None, digits: int) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _consensus_map(consensus_by_image: Any) -> dict[int, list[Box]]:
    """``[(image_index, box), ...]`` or ``{image_index: [box, ...]}`` -> dict."""
    out: dict[int, list[Box]] = {}
    if not consensus_by_image:
        return out
    if isinstance(consensus_by_image, Mapping):
        for k, boxes in consensus_by_image.items():
            out.setdefault(int(k), []).extend(tuple(float(v) for v in b) for b in boxes)
        return out
    for k, box in consensus_by_image:
        out.setdefault(int(k), []).append(tuple(float(v) for v in box))
    return out


def _group_panels(
    images: Sequence[Image.Image],
    members: Sequence[MemberView],
    consensus_by_image: Any,
    *,
    title: str | None = None,
    max_side: int = 1024,
) -> list[tuple[int, Image.Image]]:
    cons = _consensus_map(consensus_by_image)
    used = {k for m in members for k, _ in m.boxes} | {k for k, v in cons.items() if v}
    missing = sorted(k for k in used if not 0 <= k < len(images))
    if missing:
        logger.warning("viz: boxes refer to image(s) %s but the prompt has %d image(s)", missing, len(images))
    panels = []
    indices = sorted(k for k in used if 0 <= k < len(images))
    for k in indices:
        panel_title = title
        if len(images) > 1:
            panel_title = f"{title} | image {k}" if title else f"image {k}"
        views = [m.on_image(k) for m in members]
        panels.append(
            (k, render_group_overlay(images[k], views, cons.get(k, []), title=panel_title, max_side=max_side))
        )
    return panels


def group_overlays(
    images: Sequence[Image.Image],
    members: Sequence[MemberView],
    consensus_by_image: Any,
    *,
    title: str | None = None,
    max_side: int = 1024,
) -> list[Image.Image]:
    """One :func:`render_group_overlay` panel per image index that has boxes or consensus, in index order.

    Args:
        images: the prompt's images, in the order the boxes' image indices refer to.
        members: the group's trajectories (boxes as ``(image_index, box)``).
        consensus_by_image: ``consensus_credit_by_image(...).consensus`` (a list of
            ``(image_index, box)``) or a mapping ``{image_index: [box, ...]}``.
    Boxes on an index the prompt does not have are skipped with a logged warning.
    """
    return [img for _, img in _group_panels(images, members, consensus_by_image, title=title, max_side=max_side)]


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically (temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# --------------------------------------------------------------------------------------------------
# Records (reward_extra_info / veRL dump lines)
# --------------------------------------------------------------------------------------------------


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    f = _as_float(value)
    if f is None or f != int(f):
        return None
    return int(f)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    f = _as_float(value)
    return None if f is None else f != 0


def parse_image_boxes(value: Any) -> list[ImageBox]:
    """``[[image_index, x1, y1, x2, y2], ...]`` (JSON text or list) -> ``[(image_index, box)]``.

    Malformed entries (wrong length, non-finite numbers, negative or fractional index, empty box)
    are dropped; malformed JSON gives ``[]``.
    """
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except (ValueError, RecursionError):
            return []
    if not isinstance(value, (list, tuple, np.ndarray)):
        return []
    out: list[ImageBox] = []
    for entry in value:
        if not isinstance(entry, (list, tuple, np.ndarray)) or len(entry) != 5:
            continue
        k = _as_int(entry[0])
        coords = [_as_float(v) for v in entry[1:]]
        if k is None or k < 0 or any(c is None for c in coords):
            continue
        x1, y1, x2, y2 = coords
        if x2 > x1 and y2 > y1:
            out.append((k, (x1, y1, x2, y2)))
    return out


def members_from_records(records: Sequence[Mapping[str, Any]]) -> tuple[list[MemberView], list[ImageBox]]:
    """Trajectory views (labels ``#1..#N`` in record order) and the group consensus from the records.

    ``correct`` is ``acc > 0``; ``reward`` is ``score`` (else ``reward``); IoU is shown only for quorum
    members (``cca_in_quorum``, or correct-and-zoomed when that field is absent). The consensus is the
    first non-empty ``cca_consensus_json`` of the group.
    """
    members: list[MemberView] = []
    consensus: list[ImageBox] = []
    for i, rec in enumerate(records):
        boxes = parse_image_boxes(rec.get(F_BOXES))
        acc = _as_float(rec.get("acc"))
        correct = acc is not None and acc > 0
        reward = _as_float(rec.get("score"))
        if reward is None:
            reward = _as_float(rec.get("reward"))
        in_quorum = _as_bool(rec.get("cca_in_quorum"))
        if in_quorum is None:
            in_quorum = correct and bool(boxes)
        iou = _as_float(rec.get("cca_iou")) if in_quorum else None
        tool = _as_float(rec.get("tool_reward"))
        members.append(
            MemberView(
                boxes=boxes,
                correct=correct,
                reward=math.nan if reward is None else reward,
                tool_reward=0.0 if tool is None else tool,
                iou=iou,
                label=f"#{i + 1}",
            )
        )
        if not consensus:
            consensus = parse_image_boxes(rec.get(F_CONSENSUS))
    return members, consensus


def _uid_of(rec: Mapping[str, Any]) -> str | None:
    """The group id of a record: ``group_uid`` (what ``medvr_cca`` writes), else ``uid``; None if empty."""
    for key in F_UIDS:
        uid = rec.get(key)
        if uid is None or (isinstance(uid, float) and math.isnan(uid)):
            continue
        uid = str(uid).strip()
        if uid and uid.lower() not in ("none", "nan"):
            return uid
    return None


def _uid8(uid: str | None) -> str:
    if not uid:
        return "nouid"
    short = re.sub(r"[^A-Za-z0-9_-]", "", uid)[:8]
    return short or "nouid"


def overlay_filename(step: Any, sample_index: int | None, uid: str | None, image_index: int | None = None) -> str:
    """``step{S}_idx{I}_{uid8}.png`` (``_img{k}`` added for a prompt with panels on several images)."""
    s = _as_int(step)
    name = f"step{s if s is not None else 'NA'}_idx{sample_index if sample_index is not None else 'NA'}_{_uid8(uid)}"
    if image_index is not None:
        name += f"_img{image_index}"
    return name + ".png"


def _group_title(step: Any, sample_index: int | None, uid: str | None, records, members) -> str:
    n = len(members)
    correct = sum(m.correct for m in members)
    quorum = None
    for rec in records:
        quorum = _as_int(rec.get("cca_quorum_size"))
        if quorum is not None:
            break
    if quorum is None:
        quorum = sum(1 for m in members if m.correct and m.boxes)
    parts = [f"step {_as_int(step) if _as_int(step) is not None else '?'}"]
    parts.append(f"idx {sample_index if sample_index is not None else '?'}")
    parts.append(f"uid {_uid8(uid)}")
    parts.append(f"correct {correct}/{n}")
    parts.append(f"quorum {quorum}")
    gts = records[0].get("gts") if records else None
    if gts is not None and not isinstance(gts, (dict, list)):
        parts.append(f"gt: {str(gts).strip()[:60]}")
    return " | ".join(parts)


def _render_records(
    images: Sequence[Image.Image],
    records: Sequence[Mapping[str, Any]],
    *,
    step: Any,
    sample_index: int | None,
    uid: str | None,
    max_side: int,
) -> list[tuple[str, Image.Image]]:
    """File name and picture for each panel of one group."""
    members, consensus = members_from_records(records)
    title = _group_title(step, sample_index, uid, records, members)
    panels = _group_panels(images, members, consensus, title=title, max_side=max_side)
    several = len(panels) > 1
    return [(overlay_filename(step, sample_index, uid, k if several else None), img) for k, img in panels]


def _has_boxes(records: Iterable[Mapping[str, Any]]) -> bool:
    return any(parse_image_boxes(r.get(F_BOXES)) or parse_image_boxes(r.get(F_CONSENSUS)) for r in records)


def _unique_path(out_dir: Path, name: str, used: set[str]) -> Path:
    stem, candidate, n = name[: -len(".png")], name, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}.png"
    used.add(candidate)
    return out_dir / candidate


def write_step_overlays(
    out_dir: str | os.PathLike,
    step: int,
    prompts_images: list[list[Image.Image]],
    group_records: list[list[dict]],
    max_groups: int,
    *,
    max_side: int = 1024,
) -> list[Path]:
    """Training-time hook: render up to ``max_groups`` groups of one step and return the PNG paths.

    ``prompts_images[g]`` are the images of group ``g``'s prompt; ``group_records[g]`` its
    trajectories' ``reward_extra_info`` dicts (fields in the module docstring). Groups without any
    zoom box or consensus are passed over (they would draw nothing), so up to ``max_groups`` groups
    *with* boxes are drawn, in order. Never raises for one bad group: it is logged and skipped.
    """
    out = Path(out_dir)
    written: list[Path] = []
    used: set[str] = set()
    drawn = 0
    for images, records in zip(prompts_images, group_records):
        if drawn >= max_groups:
            break
        if not records or not _has_boxes(records):
            continue
        uid = next((u for u in (_uid_of(r) for r in records) if u), None)
        index = next((i for i in (_as_int(r.get(F_INDEX)) for r in records) if i is not None and i >= 0), None)
        try:
            panels = _render_records(images, records, step=step, sample_index=index, uid=uid, max_side=max_side)
            for name, img in panels:
                written.append(save_png(img, _unique_path(out, name, used)))
        except Exception as exc:  # visualisation must never stop training
            logger.warning("viz: could not draw group uid=%s idx=%s at step %s: %r", uid, index, step, exc)
            continue
        drawn += 1
    return written


# --------------------------------------------------------------------------------------------------
# Dataset images (veRL parquet)
# --------------------------------------------------------------------------------------------------


def _decode_image(entry: Any, base_dir: Path | None) -> Image.Image:
    """One cell entry of veRL's ``images`` column -> PIL image (8-bit ``L``/``RGB``)."""
    if isinstance(entry, Image.Image):
        return entry
    if isinstance(entry, (bytes, bytearray, memoryview)):
        return load_medical_image(bytes(entry))
    if isinstance(entry, Mapping):
        if entry.get("bytes") is not None:
            return load_medical_image(bytes(entry["bytes"]))
        for key in ("image", "path", "image_url", "url"):
            if entry.get(key) is not None:
                return _decode_image(entry[key], base_dir)
        raise ValueError(f"image entry has none of bytes/image/path: keys {sorted(entry)}")
    if isinstance(entry, str):
        text = entry.strip()
        if text.startswith("data:image") and "," in text:
            try:
                return load_medical_image(base64.b64decode(text.split(",", 1)[1], validate=False))
            except binascii.Error as exc:
                raise ValueError(f"bad base64 image data: {exc}") from exc
        if text.startswith(("http://", "https://")):
            raise ValueError(f"remote image {text[:80]!r} is not fetched (no network access in viz)")
        if text.startswith("file://"):
            text = text[len("file://") :]
        path = Path(text).expanduser()
        if not path.is_absolute() and not path.exists() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        if not path.exists():
            raise FileNotFoundError(f"image file not found: {text}")
        return load_medical_image(str(path))
    raise ValueError(f"unsupported image entry of type {type(entry).__name__}")


class ParquetImages:
    """Images of veRL dataset rows, read lazily from one or more parquet files (concatenated in order).

    ``index_by``: ``"extra_info"`` maps a sample index through ``extra_info.index`` (what the reward
    manager writes as ``sample_index``); ``"row"`` uses the row position; ``"auto"`` (default) uses
    ``extra_info.index`` when every row has a distinct integer one, else the row position.
    Only the ``images`` column of the row group holding a row is read (two row groups cached).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], index_by: str = "auto", image_key: str = "images"):
        import pyarrow.parquet as pq

        if index_by not in ("auto", "row", "extra_info"):
            raise ValueError(f"index_by must be auto, row or extra_info, got {index_by!r}")
        self.image_key = image_key
        self._parts: list[tuple[Path, Any, int]] = []  # (path, ParquetFile, first global row)
        self._groups: list[tuple[int, int, int, int]] = []  # (first row, n rows, part, row group)
        row = 0
        for p in paths:
            path = Path(p)
            if not path.is_file():
                raise FileNotFoundError(f"dataset parquet not found: {path}")
            pf = pq.ParquetFile(str(path))
            names = pf.schema_arrow.names
            if image_key not in names:
                raise ValueError(f"{path} has no {image_key!r} column (columns: {names})")
            part = len(self._parts)
            self._parts.append((path, pf, row))
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                self._groups.append((row, n, part, rg))
                row += n
        self.num_rows = row
        self._starts = [g[0] for g in self._groups]
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._index_map: dict[int, int] | None = None
        self.index_by = "row"
        if index_by != "row":
            mapping = self._extra_info_index()
            if mapping is not None:
                self._index_map, self.index_by = mapping, "extra_info"
            elif index_by == "extra_info":
                raise ValueError("extra_info.index is missing or not unique in the dataset; use index_by='row'")

    def _extra_info_index(self) -> dict[int, int] | None:
        mapping: dict[int, int] = {}
        for _path, pf, first in self._parts:
            if "extra_info" not in pf.schema_arrow.names:
                return None
            values = pf.read(columns=["extra_info"]).column("extra_info").to_pylist()
            for offset, info in enumerate(values):
                idx = _as_int(info.get("index")) if isinstance(info, Mapping) else None
                if idx is None or idx in mapping:
                    return None
                mapping[idx] = first + offset
        return mapping

    def row_of(self, sample_index: int) -> int | None:
        """Global row of a sample index, None when the dataset has no such row."""
        if self._index_map is not None:
            return self._index_map.get(sample_index)
        return sample_index if 0 <= sample_index < self.num_rows else None

    def _column(self, g: int):
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        _, _, part, rg = self._groups[g]
        column = self._parts[part][1].read_row_group(rg, columns=[self.image_key]).column(self.image_key)
        self._cache[g] = column
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return column

    def images(self, sample_index: int) -> list[Image.Image]:
        """Decoded images of a sample. Raises KeyError (no such row), ValueError/OSError (bad image)."""
        row = self.row_of(sample_index)
        if row is None:
            raise KeyError(f"sample_index {sample_index} not in the dataset ({self.num_rows} rows, by {self.index_by})")
        import bisect

        g = bisect.bisect_right(self._starts, row) - 1
        first, _, part, _ = self._groups[g]
        cell = self._column(g)[row - first].as_py()
        if cell is None:
            return []
        if not isinstance(cell, (list, tuple)):
            cell = [cell]
        base_dir = self._parts[part][0].parent
        return [_decode_image(entry, base_dir) for entry in cell]


# --------------------------------------------------------------------------------------------------
# Rollout dumps -> PNGs (the CLI)
# --------------------------------------------------------------------------------------------------


@dataclass
class RenderSummary:
    """Counts of one :func:`render_rollouts` run."""

    records: int = 0
    groups: int = 0
    groups_without_boxes: int = 0
    rendered_groups: int = 0
    written: list[Path] = field(default_factory=list)
    bad_lines: int = 0
    skipped_missing_index: int = 0
    """Records whose group has no usable ``sample_index`` (missing, -1, not an integer)."""
    skipped_missing_row: int = 0
    """Groups whose ``sample_index`` is not a row of the dataset."""
    skipped_image_error: int = 0
    """Groups whose images could not be read or drawn."""
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.skipped_missing_index + self.skipped_missing_row + self.skipped_image_error

    def lines(self) -> list[str]:
        return [
            f"records read:            {self.records} ({self.bad_lines} unreadable lines)",
            f"groups:                  {self.groups} ({self.groups_without_boxes} without any zoom box)",
            f"groups rendered:         {self.rendered_groups} -> {len(self.written)} PNG file(s)",
            f"skipped records, no sample_index: {self.skipped_missing_index}",
            f"skipped groups, row not in dataset: {self.skipped_missing_row}",
            f"skipped groups, image/draw error:   {self.skipped_image_error}",
        ]


def _jsonl_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():

            def key(f: Path):
                return (0, int(f.stem), f.name) if f.stem.isdigit() else (1, 0, f.name)

            files.extend(sorted(p.glob("*.jsonl"), key=key))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"rollout file not found: {p}")
    return files


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with veRL
        return iterable
    return tqdm(iterable, total=total, desc="viz", unit="group", file=sys.stderr, dynamic_ncols=True)


def _note(summary: RenderSummary, message: str, limit: int = 20) -> None:
    summary.warnings.append(message)
    if len(summary.warnings) <= limit:
        text = f"warning: {message}"
    elif len(summary.warnings) == limit + 1:
        text = "warning: further warnings are only counted in the summary"
    else:
        return
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(text, file=sys.stderr)


def render_rollouts(
    rollouts: Sequence[str | os.PathLike],
    data: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    step: int | None = None,
    max_groups: int | None = None,
    max_side: int = 1024,
    index_by: str = "auto",
    progress: bool = True,
) -> RenderSummary:
    """Draw the groups of veRL rollout dumps (JSONL) over their dataset images; see the module docstring.

    Records group by ``(step, uid)``; a record without ``uid`` groups by ``(step, sample_index)``.
    ``max_groups`` counts groups that have boxes (groups without any are counted, not drawn).
    Raises FileNotFoundError / ValueError for missing inputs or a parquet without images; bad
    records, rows and images are counted in the summary instead.
    """
    files = _jsonl_files(rollouts)
    source = ParquetImages(data, index_by=index_by)
    out = Path(out_dir)
    summary = RenderSummary()

    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    summary.bad_lines += 1
                    _note(summary, f"{path}:{lineno}: unreadable line ({exc})")
                    continue
                rec_step = _as_int(rec.get("step"))
                if step is not None and rec_step != step:
                    continue
                summary.records += 1
                uid = _uid_of(rec)
                if uid is not None:
                    key = (rec_step, "uid", uid)
                else:
                    index = _as_int(rec.get(F_INDEX))
                    if index is None or index < 0:
                        summary.skipped_missing_index += 1
                        _note(summary, f"{path}:{lineno}: record has neither uid nor sample_index; skipped")
                        continue
                    key = (rec_step, "idx", index)
                groups.setdefault(key, []).append(rec)
    summary.groups = len(groups)

    selected = []
    for (rec_step, kind, ident), records in groups.items():
        if not _has_boxes(records):
            summary.groups_without_boxes += 1
            continue
        indices = [i for i in (_as_int(r.get(F_INDEX)) for r in records) if i is not None and i >= 0]
        if not indices:
            summary.skipped_missing_index += len(records)
            _note(summary, f"group uid={ident} step={rec_step}: no record has a sample_index; skipped")
            continue
        index = max(set(indices), key=lambda i: (indices.count(i), -i))
        if len(set(indices)) > 1:
            _note(summary, f"group uid={ident} step={rec_step}: sample_index differs within the group, using {index}")
        uid = ident if kind == "uid" else None
        selected.append((rec_step, index, uid, records))
    if max_groups is not None:
        selected = selected[: max(0, max_groups)]

    used: set[str] = set()
    for rec_step, index, uid, records in _progress(selected, len(selected), progress):
        if source.row_of(index) is None:
            summary.skipped_missing_row += 1
            _note(summary, f"sample_index {index} (uid={uid}, step={rec_step}) is not a row of the dataset; skipped")
            continue
        try:
            images = source.images(index)
            panels = _render_records(images, records, step=rec_step, sample_index=index, uid=uid, max_side=max_side)
        except Exception as exc:
            summary.skipped_image_error += 1
            _note(summary, f"sample_index {index} (uid={uid}, step={rec_step}): {type(exc).__name__}: {exc}")
            continue
        if not panels:
            summary.skipped_image_error += 1
            _note(summary, f"sample_index {index} (uid={uid}): boxes refer to images the row does not have")
            continue
        for name, img in panels:
            summary.written.append(save_png(img, _unique_path(out, name, used)))
        summary.rendered_groups += 1
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medvr_verl.viz",
        description="Draw CCA groups (zoom boxes, consensus, rewards) from veRL rollout dumps "
        "(trainer.rollout_data_dir / trainer.validation_data_dir JSONL) over the dataset images.",
    )
    parser.add_argument("rollouts", nargs="+", help="rollout JSONL file(s) or folder(s) of {step}.jsonl")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="veRL dataset parquet file; repeat for several files, in the order the trainer concatenates them",
    )
    parser.add_argument("--out", required=True, help="output folder for the PNG files")
    parser.add_argument("--step", type=int, default=None, help="only records of this training step")
    parser.add_argument("--max-groups", type=int, default=None, help="draw at most this many groups (with boxes)")
    parser.add_argument("--max-side", type=int, default=1024, help="longer side of the drawn image (default 1024)")
    parser.add_argument(
        "--index-by",
        choices=("auto", "row", "extra_info"),
        default="auto",
        help="how sample_index finds the dataset row: extra_info.index, the row position, or auto (default)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.max_side < 16:
        parser.error("--max-side must be at least 16")
    try:
        summary = render_rollouts(
            args.rollouts,
            args.data,
            args.out,
            step=args.step,
            max_groups=args.max_groups,
            max_side=args.max_side,
            index_by=args.index_by,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    if summary.written:
        print(f"wrote {len(summary.written)} PNG file(s) to {args.out}")
    if summary.skipped:
        print(f"warning: {summary.skipped} skipped (see the counts above)", file=sys.stderr)
    failed = summary.skipped_missing_row + summary.skipped_image_error
    return 1 if failed and not summary.written else 0


if __name__ == "__main__":
    sys.exit(main())
