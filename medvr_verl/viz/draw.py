"""Drawing one group over an image: consensus fill and outline, zoom boxes, tags, a legend panel.

Pillow only (no matplotlib, no numpy): the consensus is a mask of its rectangles, blended in with
``Image.paste(colour, mask=...)`` and outlined with the mask's edge (the mask minus its erosion by
``ImageFilter.MinFilter``), so overlapping rectangles form one region with one outline. Pillow has
no dashed line style; :func:`_dashed_rect` draws the dashes of a wrong trajectory's box.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

from medvr_verl.io_utils import AtomicFile
from medvr_verl.tools.image_io import to_rgb8

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
ImageBox = tuple[int, Box]
RGB = tuple[int, int, int]

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


@dataclass(frozen=True)
class TrajectoryView:
    """One trajectory as drawn on one image: its boxes there (original-image pixels) and its scores.

    ``fork``: True for an EVR fork, False for a base trajectory, None when unknown (not shown);
    ``fork_of``: the label of the base a fork left, when known.
    """

    boxes: list[Box]
    correct: bool
    reward: float
    tool_reward: float
    iou: float | None
    label: str
    fork: bool | None = None
    fork_of: str | None = None


@dataclass(frozen=True)
class MemberView:
    """One trajectory of a group across all of its images: boxes as ``(image_index, box)``."""

    boxes: list[ImageBox]
    correct: bool
    reward: float
    tool_reward: float
    iou: float | None
    label: str
    fork: bool | None = None
    fork_of: str | None = None

    def on_image(self, image_index: int) -> TrajectoryView:
        return TrajectoryView(
            boxes=[b for k, b in self.boxes if k == image_index],
            correct=self.correct,
            reward=self.reward,
            tool_reward=self.tool_reward,
            iou=self.iou,
            label=self.label,
            fork=self.fork,
            fork_of=self.fork_of,
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
# Helpers
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


def _fmt_num(value: float | None, digits: int) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _scale_box(box: Sequence[float], sx: float, sy: float, w: int, h: int) -> tuple[int, int, int, int] | None:
    """A half-open original-pixel box -> half-open display pixels, clamped; None if off the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        return None
    if x2 * sx <= 0 or y2 * sy <= 0 or x1 * sx >= w or y1 * sy >= h:
        return None
    X1, X2 = min(max(round(x1 * sx), 0), w), min(max(round(x2 * sx), 0), w)
    Y1, Y2 = min(max(round(y1 * sy), 0), h), min(max(round(y2 * sy), 0), h)
    if X2 <= X1:  # thinner than a display pixel: keep one pixel
        X1 = min(X1, w - 1)
        X2 = X1 + 1
    if Y2 <= Y1:
        Y1 = min(Y1, h - 1)
        Y2 = Y1 + 1
    return X1, Y1, X2, Y2


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


def _draw_consensus(canvas: Image.Image, rects: list[tuple[int, int, int, int]], width: int) -> None:
    """Translucent fill of the union of ``rects`` and an opaque outline ``width`` px inside its edge
    (the image border counts as outside)."""
    mask = Image.new("L", canvas.size, 0)
    md = ImageDraw.Draw(mask)
    for X1, Y1, X2, Y2 in rects:
        md.rectangle((X1, Y1, X2 - 1, Y2 - 1), fill=255)
    alpha = round(CONSENSUS_ALPHA * 255)
    canvas.paste(CONSENSUS_COLOR, mask=mask.point(lambda v: alpha if v else 0))
    inner = ImageOps.expand(mask, border=width, fill=0).filter(ImageFilter.MinFilter(2 * width + 1))
    inner = inner.crop((width, width, width + canvas.width, width + canvas.height))
    canvas.paste(CONSENSUS_COLOR, mask=ImageChops.subtract(mask, inner))


def _dashed_rect(draw: ImageDraw.ImageDraw, rect, color: RGB, width: int) -> None:
    """Dashed outline inside the inclusive rectangle ``(x1, y1, x2, y2)``: each edge a run of
    ``width``-thick dashes that start at the corners, so every corner is drawn."""
    x1, y1, x2, y2 = rect
    width = max(1, min(width, (x2 - x1 + 2) // 2, (y2 - y1 + 2) // 2))
    dash, step = 3 * width + 2, 5 * width + 4
    for x in range(x1, x2 + 1, step):  # top and bottom edges
        xe = min(x + dash - 1, x2)
        draw.rectangle((x, y1, xe, y1 + width - 1), fill=color)
        draw.rectangle((x, y2 - width + 1, xe, y2), fill=color)
    for y in range(y1, y2 + 1, step):  # left and right edges
        ye = min(y + dash - 1, y2)
        draw.rectangle((x1, y, x1 + width - 1, ye), fill=color)
        draw.rectangle((x2 - width + 1, y, x2, ye), fill=color)


def _box(draw: ImageDraw.ImageDraw, rect, color: RGB, width: int, *, dashed: bool, fork: bool) -> None:
    """A trajectory's box: solid (correct) or dashed (wrong) outline; a fork also gets a filled
    triangle in its bottom-right corner."""
    if dashed:
        _dashed_rect(draw, rect, color, width)
    else:
        draw.rectangle(rect, outline=color, width=width)
    if fork:
        x1, y1, x2, y2 = rect
        s = min(max(8, 6 * width + 2), x2 - x1 + 1, y2 - y1 + 1)
        draw.polygon([(x2 - s + 1, y2), (x2, y2), (x2, y2 - s + 1)], fill=color)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_tag(box, size: tuple[int, int], w: int, h: int, line_w: int, placed: list) -> tuple[int, int, int, int]:
    """A tag's rectangle: above the box's top-left corner (inside it at the top edge), nudged right,
    then down, away from tags already placed."""
    X1, Y1 = box[0], box[1]
    tw, th = size
    ty = Y1 - th if Y1 - th >= 0 else min(Y1 + line_w, max(0, h - th))
    tx = min(max(X1, 0), max(0, w - tw))
    tag = (tx, ty, tx + tw, ty + th)
    for _ in range(12):
        if not any(_overlaps(tag, p) for p in placed):
            break
        tx = tag[2] + 1
        if tx + tw > w:
            tx, ty = min(max(X1, 0), max(0, w - tw)), min(ty + th + 1, max(0, h - th))
        tag = (tx, ty, tx + tw, ty + th)
    placed.append(tag)
    return tag


def _kind(t: TrajectoryView) -> str:
    if t.fork is None:
        return "?"
    if not t.fork:
        return "base"
    return f"fork of {t.fork_of}" if t.fork_of else "fork"


def _legend(trajectories: Sequence[TrajectoryView], has_consensus: bool, font, font_size: int) -> Image.Image:
    """The legend panel: consensus swatch, one row per trajectory (swatch, label, kind when known,
    answer, R, tool reward, IoU, boxes), notes."""
    lh = _line_h(font)
    pad = max(6, font_size // 2)
    gap = pad + 2
    sw_w, sw_h = 2 * lh, lh - 4
    row_h = lh + 4
    show_kind = any(t.fork is not None for t in trajectories)
    header = ["", "traj", *(["kind"] if show_kind else []), "answer", "R", "tool", "IoU", "boxes"]
    numeric = {"R", "tool", "IoU", "boxes"}
    rows = [
        [
            "",
            t.label,
            *([_kind(t)] if show_kind else []),
            "ok" if t.correct else "wrong",
            _fmt_num(t.reward, 2),
            _fmt_num(t.tool_reward, 1),
            "-" if t.iou is None else _fmt_num(t.iou, 2),
            str(len(t.boxes)),
        ]
        for t in trajectories
    ]
    col_w = [max(_text_w(font, r[c]) for r in [header, *rows]) for c in range(len(header))]
    col_w[0] = sw_w
    table_w = sum(col_w) + gap * (len(col_w) - 1)
    cons_text = "consensus region" if has_consensus else "no consensus"
    notes = ["solid = correct, dashed = wrong", "IoU vs consensus; - = not in quorum"]
    if any(t.fork for t in trajectories):
        notes.append("corner triangle = EVR fork")
    width = 2 * pad + max(table_w, sw_w + gap + _text_w(font, cons_text), *(_text_w(font, n) for n in notes))
    height = 2 * pad + row_h * (2 + len(rows)) + pad + row_h * len(notes)
    panel = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(panel)

    x0, y = pad, pad
    swatch = (x0, y + 2, x0 + sw_w - 1, y + 2 + sw_h - 1)
    if has_consensus:  # the blended fill on mid gray, with the outline colour
        d.rectangle(swatch, fill=(128,) * 3, outline=CONSENSUS_COLOR, width=2)
        _draw_consensus(panel, [(swatch[0], swatch[1], swatch[2] + 1, swatch[3] + 1)], 2)
    else:
        d.rectangle(swatch, outline=MUTED_COLOR, width=1)
    d.text((x0 + sw_w + gap, y), cons_text, fill=TEXT_COLOR if has_consensus else MUTED_COLOR, font=font)
    y += row_h

    def cells(values, y, color):
        x = x0
        for c, text in enumerate(values):
            if c > 0 and text:  # numbers right-aligned, words left-aligned
                tx = x + col_w[c] - _text_w(font, text) if header[c] in numeric else x
                d.text((tx, y), text, fill=color, font=font)
            x += col_w[c] + gap

    cells(header, y, MUTED_COLOR)
    y += row_h
    for i, (t, values) in enumerate(zip(trajectories, rows)):
        swatch = (x0, y + 2, x0 + sw_w - 1, y + 2 + sw_h - 1)
        _box(d, swatch, trajectory_color(i), 2, dashed=not t.correct, fork=bool(t.fork))
        cells(values, y, TEXT_COLOR if t.correct else MUTED_COLOR)
        y += row_h
    y += pad
    for note in notes:
        d.text((x0, y), note, fill=MUTED_COLOR, font=font)
        y += row_h
    return panel


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
            Trajectory ``i`` is drawn in :func:`trajectory_color` ``(i)``: solid for a correct
            answer, dashed for a wrong one, a filled corner triangle for an EVR fork.
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
    canvas = to_rgb8(image)
    ow, oh = canvas.size
    w, h = _fit_scale((ow, oh), max_side, min_side)
    if (w, h) != (ow, oh):
        resample = Image.Resampling.LANCZOS if w < ow else Image.Resampling.NEAREST
        canvas = canvas.resize((w, h), resample, reducing_gap=2.0 if w < ow else None)
    else:
        canvas = canvas.copy()  # never draw on the caller's image
    sx, sy = w / ow, h / oh

    longest = max(w, h)
    line_w = max(2, round(longest / 400))
    font_size = min(20, max(12, round(longest / 60)))
    font = _font(font_size)
    lh = _line_h(font)

    rects = [r for r in (_scale_box(b, sx, sy, w, h) for b in consensus) if r is not None]
    if rects:
        _draw_consensus(canvas, rects, line_w)
    draw = ImageDraw.Draw(canvas)

    # Trajectory boxes, then their tags (tags on top of every outline).
    tags: list[tuple[tuple[int, int, int, int], str, RGB]] = []
    placed: list[tuple[int, int, int, int]] = []
    for i, traj in enumerate(trajectories):
        color = trajectory_color(i)
        for box in traj.boxes:
            r = _scale_box(box, sx, sy, w, h)
            if r is None:
                continue
            _box(draw, (r[0], r[1], r[2] - 1, r[3] - 1), color, line_w, dashed=not traj.correct, fork=bool(traj.fork))
            tag = _place_tag(r, (_text_w(font, traj.label) + 4, lh), w, h, line_w, placed)
            tags.append((tag, traj.label, color))
    for (x0, y0, x1, y1), label, color in tags:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
        draw.text((x0 + 2, y0 + 1), label, fill=_ink_for(color), font=font)

    legend = _legend(trajectories, bool(rects), font, font_size)
    pad = max(6, font_size // 2)
    title_h = (lh + 2 * pad) if title else 0
    cw = w + legend.width
    out = Image.new("RGB", (cw, title_h + max(h, legend.height)), BACKGROUND)
    out.paste(canvas, (0, title_h))
    out.paste(legend, (w, title_h))
    if title:
        ImageDraw.Draw(out).text((pad, pad), _ellipsize(font, title, cw - 2 * pad), fill=TEXT_COLOR, font=font)
    return out


def consensus_map(consensus_by_image: Any) -> dict[int, list[Box]]:
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


def group_panels(
    images: Sequence[Image.Image],
    members: Sequence[MemberView],
    consensus_by_image: Any,
    *,
    title: str | None = None,
    max_side: int = 1024,
) -> list[tuple[int, Image.Image]]:
    """:func:`group_overlays` with each panel's image index."""
    cons = consensus_map(consensus_by_image)
    used = {k for m in members for k, _ in m.boxes} | {k for k, v in cons.items() if v}
    missing = sorted(k for k in used if not 0 <= k < len(images))
    if missing:
        logger.warning("viz: boxes refer to image(s) %s but the prompt has %d image(s)", missing, len(images))
    panels = []
    for k in sorted(k for k in used if 0 <= k < len(images)):
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
    return [img for _, img in group_panels(images, members, consensus_by_image, title=title, max_side=max_side)]


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically, with the user's umask (:class:`medvr_verl.io_utils.AtomicFile`)."""
    target = AtomicFile(path)
    with target as tmp:
        image.save(tmp, format="PNG")
    return target.path
