"""Pure box utilities: parse a model's ``bbox_2d``, map between pixel spaces, exact union areas.

Imports neither veRL nor torch (numpy and the standard library only), so it runs in the reward
path, in tests and on machines without a GPU.

Conventions
-----------
A box is ``(x1, y1, x2, y2)`` in pixels, floats, **half-open**: it covers pixel ``(u, v)`` iff
``x1 <= u < x2`` and ``y1 <= v < y2``. For integer boxes the area ``(x2 - x1) * (y2 - y1)`` is then
the number of integer pixels covered, so every area here equals a pixel count of a raster
``mask[y1:y2, x1:x2] = True``. A box with ``x2 <= x1`` or ``y2 <= y1`` is empty (degenerate); the
area functions ignore it, exactly as that raster slice would.

Areas of unions are computed exactly by coordinate compression: the distinct box edges cut the
plane into at most ``(2B - 1) x (2B - 1)`` cells for ``B`` boxes, each cell is either fully inside or
fully outside every box, so coverage is decided per cell and areas are cell widths times heights.
The cost depends on the number of boxes, never on the image resolution.

The dense grid costs ``O(G * B^2)`` memory for ``G`` box sets, fine for a GRPO group's few boxes
but not for thousands (a hostile rollout). Above ``DENSE_MAX_CELLS`` grid cells the same exact areas
come from a sweep over x (:func:`sweep_cover`): memory ``O(G * B)``, and time ``O(B * (rows spanned
+ G * rows whose majority flips))`` with a handful of numpy calls per box edge, so near-linear for
realistic boxes and at worst ``O(G * B^2)`` arithmetic without the memory. Both give bit-identical
results for integer boxes (every area is an exact integer below 2**53).

Size (over 500 lines): the pure box math the reward needs, including the exact union-area sweep;
kept in one module so the reward path imports one pure file.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]

__all__ = [
    "Box",
    "BoxError",
    "intersection_area",
    "iou",
    "parse_bbox",
    "scale_box",
    "sweep_cover",
    "union_area",
]

# Longest bbox_2d text we read: a real box is ~30 characters; the cap keeps json/float parsing of
# adversarial model output bounded.
MAX_TEXT_CHARS = 1024
# Longest single numeric string (one coordinate) we hand to float().
_MAX_NUMBER_CHARS = 64
# Largest list/array we even look at: anything longer cannot be 4 numbers.
_MAX_ITEMS = 64
# group_cover switches from a batched matmul to prefix sums above this many boxes in one group.
_MATMUL_MAX_BOXES = 64
# Above this many (box sets x grid cells) the dense compressed grid gives way to the sweep.
DENSE_MAX_CELLS = 1 << 21
_OPEN_TO_CLOSE = {"[": "]", "(": ")"}
_BRACKETS = frozenset("[](){}")


class BoxError(ValueError):
    """A bad ``bbox_2d`` from the model. The message is shown to the model as the tool's answer,
    so it says what was wrong and what a valid value looks like."""


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    """Short human form of a coordinate for error messages (12, 12.5, 1e+30)."""
    return f"{x:.6g}"


def _fmt_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(_fmt(v) for v in box) + "]"


def _preview(text: str, limit: int = 60) -> str:
    """repr of a bad string, cut to ``limit`` characters so an error message stays short.

    Only ever called on ``str`` (other bad values are named by type), so no foreign ``__repr__``
    runs while building a BoxError.
    """
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _check_positive(name: str, value: object, *, allow_inf: bool = False) -> float:
    """Validate a programmer-supplied size (not model output): a finite number > 0 (or +inf)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        # ValueError, not TypeError: callers treat every bad size the same way (documented).
        raise ValueError(f"{name} must be a positive number, got {value!r}")  # noqa: TRY004
    out = float(value)
    if not ((math.isfinite(out) or (allow_inf and out == math.inf)) and out > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return out


def _check_size(name: str, size: object) -> tuple[float, float]:
    """Validate a ``(width, height)`` pair."""
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be (width, height), got {size!r}")
    return _check_positive(f"{name}[0]", size[0]), _check_positive(f"{name}[1]", size[1])


def _split_plain(text: str) -> list[str]:
    """Split '1, 2, 3, 4' / '(1 2 3 4)' / '[1 2 3 4]' into number strings (not yet converted).

    Strips one pair of outer brackets; splits on commas when there are any, else on whitespace, so
    '1,,2,3' gives an empty item (rejected later) instead of silently closing the gap.
    """
    inner = text
    if len(inner) >= 2 and _OPEN_TO_CLOSE.get(inner[0]) == inner[-1]:
        inner = inner[1:-1]
    if any(ch in _BRACKETS for ch in inner):
        raise BoxError(f"bbox_2d must be 4 numbers [x1, y1, x2, y2], could not read {_preview(text)}")
    parts = inner.split(",") if "," in inner else inner.split()
    return [p.strip() for p in parts]


def _parse_text(text: str) -> object:
    """Turn a textual bbox_2d into a list (JSON first, then the plain '1, 2, 3, 4' form)."""
    if len(text) > MAX_TEXT_CHARS:
        raise BoxError(f"bbox_2d text is too long ({len(text)} characters); give 4 numbers [x1, y1, x2, y2]")
    stripped = text.strip()
    if not stripped:
        raise BoxError("bbox_2d is empty; give 4 numbers [x1, y1, x2, y2]")
    if stripped[0] in "[{":
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):
            pass  # e.g. '[1 2 3 4]': not JSON, but the plain reader below takes it
    return _split_plain(stripped)


def _as_items(value: object) -> list | None:
    """The items of a list/tuple/ndarray, or None when ``value`` is not such a sequence."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return None
        if value.size > _MAX_ITEMS:
            raise BoxError(f"bbox_2d must have 4 numbers [x1, y1, x2, y2], got an array of {value.size}")
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _to_number(item: object, position: int) -> float:
    """One coordinate: a real number or a numeric string; never bool, None, nested or non-finite."""
    if isinstance(item, (bool, np.bool_)):
        raise BoxError(f"bbox_2d values must be numbers, got a boolean at position {position}")
    if isinstance(item, str):
        if len(item) > _MAX_NUMBER_CHARS:
            raise BoxError(f"bbox_2d value at position {position} is too long to be a number")
        try:
            out = float(item.strip())
        except ValueError:
            raise BoxError(f"bbox_2d values must be numbers, got {_preview(item)} at position {position}") from None
    elif isinstance(item, numbers.Real):
        try:
            out = float(item)
        except (OverflowError, ValueError, TypeError):
            raise BoxError(f"bbox_2d value at position {position} is not a usable number") from None
    else:
        raise BoxError(f"bbox_2d values must be numbers, got {type(item).__name__} at position {position}")
    if not math.isfinite(out):
        raise BoxError(f"bbox_2d values must be finite numbers, got {_fmt(out)} at position {position}")
    return out


def _coerce_four(value: object) -> tuple[float, float, float, float]:
    """Read exactly four finite numbers out of any accepted bbox_2d form (see parse_bbox)."""
    if isinstance(value, str):
        value = _parse_text(value)
    items = _as_items(value)
    if items is None:
        raise BoxError(f"bbox_2d must be a list of 4 numbers [x1, y1, x2, y2], got {type(value).__name__}")
    # Models sometimes wrap the box once more: [[x1, y1, x2, y2]]. Unwrap exactly one level.
    if len(items) == 1:
        inner = _as_items(items[0])
        if inner is not None:
            items = inner
    if len(items) <= _MAX_ITEMS and any(isinstance(v, (list, tuple, dict, np.ndarray)) for v in items):
        raise BoxError("bbox_2d must be a flat list of 4 numbers [x1, y1, x2, y2], got nested lists")
    if len(items) != 4:
        raise BoxError(f"bbox_2d must have 4 numbers [x1, y1, x2, y2], got {len(items)}")
    x1, y1, x2, y2 = (_to_number(v, i) for i, v in enumerate(items))
    return x1, y1, x2, y2


def parse_bbox(value: object, width: float, height: float, *, min_size: float = 1.0) -> Box:
    """Parse and validate a model's ``bbox_2d`` argument against an image of ``width x height`` px.

    Accepted forms of ``value``: a list/tuple/numpy array of 4 numbers (ints, floats or numeric
    strings such as ``"12.5"``); a JSON string ``"[1, 2, 3, 4]"``; a plain string ``"1, 2, 3, 4"``
    or ``"(1 2 3 4)"``; the box nested once, ``[[1, 2, 3, 4]]``.

    Returns ``(x1, y1, x2, y2)`` floats with ``x1 < x2``, ``y1 < y2``, clamped to
    ``[0, width] x [0, height]``.

    Reversed corners are re-ordered rather than rejected: models emit the two corners in either
    order, and the rectangle they span is unambiguous.

    Raises:
        BoxError: for any bad ``value`` (wrong length, non-numeric, bool, None, dict, NaN, inf,
            deeper nesting, text over ``MAX_TEXT_CHARS``, zero width/height, box entirely outside
            the image, clamped width or height below ``min_size`` pixels). Nothing else escapes
            for bad ``value``; the message is meant for the model.
        ValueError: ``width``/``height`` not positive numbers, or ``min_size`` < 0 (a
            programmer error, not the model's). ``math.inf`` stands for an unknown image size
            (boxes read from text): everything is validated but nothing is clamped from above.
    """
    w = _check_positive("width", width, allow_inf=True)
    h = _check_positive("height", height, allow_inf=True)
    if (
        isinstance(min_size, bool)
        or not isinstance(min_size, numbers.Real)
        or not (math.isfinite(min_size) and min_size >= 0)
    ):
        raise ValueError(f"min_size must be a finite number >= 0, got {min_size!r}")

    x1, y1, x2, y2 = _coerce_four(value)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    raw = (x1, y1, x2, y2)
    if x1 == x2 or y1 == y2:
        side = "width (x1 == x2)" if x1 == x2 else "height (y1 == y2)"
        raise BoxError(f"bbox_2d {_fmt_box(raw)} has zero {side}; give a box with some area")
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        raise BoxError(
            f"bbox_2d {_fmt_box(raw)} lies outside the image (width {_fmt(w)}, height {_fmt(h)}); "
            f"use pixel coordinates with 0 <= x <= {_fmt(w)} and 0 <= y <= {_fmt(h)}"
        )
    box = (max(x1, 0.0), max(y1, 0.0), min(x2, w), min(y2, h))
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw < min_size or bh < min_size:
        raise BoxError(
            f"bbox_2d {_fmt_box(raw)} is too small inside the image (width {_fmt(w)}, height "
            f"{_fmt(h)}): {_fmt(bw)} x {_fmt(bh)} px, each side must be at least {_fmt(min_size)} px"
        )
    return box


# ----------------------------------------------------------------------------------------------
# Coordinate mapping
# ----------------------------------------------------------------------------------------------


def scale_box(box: Sequence[float], from_size: Sequence[float], to_size: Sequence[float]) -> Box:
    """Map ``box`` between two pixel spaces of the same image, e.g. Qwen2.5-VL's resized input
    space -> original image pixels.

    Args:
        box: ``(x1, y1, x2, y2)`` in ``from_size`` pixels.
        from_size, to_size: ``(width, height)`` of the two spaces, pixels.

    Per-axis linear scaling: ``x * to_w / from_w``, ``y * to_h / from_h`` (the resize is
    per-axis, so aspect-ratio changes are honoured). Corners are not re-ordered or clamped.
    """
    fw, fh = _check_size("from_size", from_size)
    tw, th = _check_size("to_size", to_size)
    x1, y1, x2, y2 = (float(v) for v in box)
    sx, sy = tw / fw, th / fh
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


# ----------------------------------------------------------------------------------------------
# Exact areas by coordinate compression
# ----------------------------------------------------------------------------------------------


def boxes_array(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Stack boxes into a float64 array of shape ``(N, 4)``, dropping empty boxes.

    Raises ValueError when an entry is not 4 numbers or a coordinate is not finite.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.empty((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be a sequence of (x1, y1, x2, y2), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("box coordinates must be finite")
    keep = (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])
    return arr if keep.all() else arr[keep]


def grid_edges(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct x edges (nx,) and y edges (ny,) of the boxes ``arr`` (N, 4), N >= 1.

    Consecutive edges bound the ``(ny - 1) x (nx - 1)`` cells of the compressed grid.
    """
    xs = np.unique(arr[:, 0::2])
    ys = np.unique(arr[:, 1::2])
    return xs, ys


def cell_areas(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Area of every grid cell, shape ``(ny - 1, nx - 1)``, px^2."""
    return np.outer(np.diff(ys), np.diff(xs))


def group_cover(arr: np.ndarray, groups: np.ndarray, n_groups: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Which cells each group's union of boxes covers.

    Args:
        arr: (N, 4) non-empty boxes whose edges are all in ``xs``/``ys``.
        groups: (N,) int group index of each box, in ``[0, n_groups)``.
        n_groups: G.
        xs, ys: grid edges from :func:`grid_edges` (possibly of a superset of boxes).

    Returns:
        bool array (G, ny - 1, nx - 1): cell covered by at least one box of the group.

    A box covers exactly the cells in its row span times its column span, so with ``R`` (G, K,
    rows) and ``C`` (G, K, cols) the 0/1 span indicators of each group's (at most K) boxes, the
    batched product ``R^T @ C`` counts the group's boxes over every cell. That is one BLAS call,
    O(G * cells * K), and much faster than 2D prefix sums at the sizes of a GRPO group. For many
    boxes per group (K large) the 2D difference-array prefix sum, O(G * cells), takes over.
    """
    rows, cols = len(ys) - 1, len(xs) - 1
    groups = np.asarray(groups, dtype=np.intp)
    ix1 = np.searchsorted(xs, arr[:, 0])
    ix2 = np.searchsorted(xs, arr[:, 2])
    iy1 = np.searchsorted(ys, arr[:, 1])
    iy2 = np.searchsorted(ys, arr[:, 3])
    per_group = np.bincount(groups, minlength=n_groups)
    k = int(per_group.max()) if len(groups) else 0
    if k > _MATMUL_MAX_BOXES:
        return _group_cover_prefix(groups, n_groups, ix1, ix2, iy1, iy2, rows, cols)
    # Slot of each box inside its group: rank among the group's boxes (stable order).
    order = np.argsort(groups, kind="stable")
    starts = np.cumsum(per_group) - per_group
    slot = np.empty_like(groups)
    slot[order] = np.arange(len(groups)) - starts[groups[order]]
    row_idx = np.arange(rows)
    col_idx = np.arange(cols)
    row_span = np.zeros((n_groups, k, rows), dtype=np.float32)
    col_span = np.zeros((n_groups, k, cols), dtype=np.float32)
    # float32 holds the small integer counts exactly (k < 2**24).
    row_span[groups, slot] = (row_idx >= iy1[:, None]) & (row_idx < iy2[:, None])
    col_span[groups, slot] = (col_idx >= ix1[:, None]) & (col_idx < ix2[:, None])
    return np.matmul(row_span.transpose(0, 2, 1), col_span) > 0


def _group_cover_prefix(
    groups: np.ndarray,
    n_groups: int,
    ix1: np.ndarray,
    ix2: np.ndarray,
    iy1: np.ndarray,
    iy2: np.ndarray,
    rows: int,
    cols: int,
) -> np.ndarray:
    """:func:`group_cover` by 2D difference arrays (+1/-1 at the four corners of each box in
    edge-index space, then a 2D prefix sum); same result, cost independent of boxes per group."""
    ny, nx = rows + 1, cols + 1
    base = groups * (ny * nx)
    size = n_groups * ny * nx
    plus = np.concatenate((base + iy1 * nx + ix1, base + iy2 * nx + ix2))
    minus = np.concatenate((base + iy1 * nx + ix2, base + iy2 * nx + ix1))
    diff = np.bincount(plus, minlength=size) - np.bincount(minus, minlength=size)
    count = diff.reshape(n_groups, ny, nx).cumsum(axis=1).cumsum(axis=2)
    return count[:, :-1, :-1] > 0


def use_dense(n_groups: int, xs: np.ndarray, ys: np.ndarray) -> bool:
    """True when the dense grid of ``n_groups`` sets over edges ``xs``/``ys`` stays small."""
    return n_groups * max(len(xs) - 1, 0) * max(len(ys) - 1, 0) <= DENSE_MAX_CELLS


def sweep_cover(
    arr: np.ndarray, groups: np.ndarray, n_groups: int, threshold: int, *, region: bool = False
) -> tuple[np.ndarray, np.ndarray, float, list[Box]]:
    """Exact areas of ``G`` unions of boxes and of their ``threshold``-majority, by a sweep over x.

    Args:
        arr: (N, 4) non-empty boxes; groups: (N,) set of each box in ``[0, n_groups)``.
        threshold: the majority region is ``{pixel : D >= threshold}`` with ``D`` the number of sets
            whose union covers the pixel (a set covering a pixel with several boxes counts once).
        region: also return the majority region as disjoint rectangles.

    Returns:
        ``own`` (G,) ``|M_g|``, ``inter`` (G,) ``|M_g ∩ majority|``, the majority's area, and its
        rectangles (the same ones, in the same order, as the dense grid gives; ``[]`` unless
        ``region``).

    Memory is ``O(G * rows)`` with ``rows < 2N`` distinct y edges. Per box edge, in x order, the
    set's cover counts over the rows the box spans are updated; the rows where the set's coverage
    flips update ``D``, and the rows where the majority flips update every set's running
    intersection length. Between two x edges every running length times the gap adds to the areas.
    """
    groups = np.asarray(groups, dtype=np.intp)
    ys = np.unique(arr[:, 1::2])
    heights = np.diff(ys)
    rows = len(heights)
    iy1 = np.searchsorted(ys, arr[:, 1])
    iy2 = np.searchsorted(ys, arr[:, 3])
    n = len(arr)
    # Events: each box opens at x1 (+1) and closes at x2 (-1); sorted by x (stable).
    ex = np.concatenate((arr[:, 0], arr[:, 2]))
    order = np.argsort(ex, kind="stable")
    ex = ex[order].tolist()
    box_of = np.concatenate((np.arange(n), np.arange(n)))[order].tolist()
    sign_of = np.concatenate((np.ones(n, dtype=np.int32), -np.ones(n, dtype=np.int32)))[order].tolist()
    lo_of, hi_of, grp_of = iy1.tolist(), iy2.tolist(), groups.tolist()

    count = np.zeros((n_groups, rows), dtype=np.int32)
    depth = np.zeros(rows, dtype=np.int32)  # sets covering each row strip
    majority = np.zeros(rows, dtype=bool)
    own_len = np.zeros(n_groups)  # covered length of the current x column, per set
    inter_len = np.zeros(n_groups)
    major_len = 0.0
    own = np.zeros(n_groups)
    inter = np.zeros(n_groups)
    major_area = 0.0
    starts = np.zeros(rows)  # x where each row's current majority run began
    runs_row: list[np.ndarray] = []
    runs_x1: list[np.ndarray] = []
    runs_x2: list[np.ndarray] = []
    prev_x = ex[0] if ex else 0.0
    for x, b, sign in zip(ex, box_of, sign_of):
        if x != prev_x:
            dx = x - prev_x
            own += dx * own_len
            inter += dx * inter_len
            major_area += dx * major_len
            prev_x = x
        g, a, z = grp_of[b], lo_of[b], hi_of[b]
        seg = count[g, a:z]
        before = seg > 0
        seg += sign
        after = seg > 0
        flip = before != after
        if not flip.any():
            continue
        h = heights[a:z]
        dcov = after.astype(np.int32) - before
        old_major = majority[a:z]
        own_len[g] += float(h @ dcov)
        inter_len[g] += float((h * old_major) @ dcov)
        d = depth[a:z]
        d += dcov
        new_major = d >= threshold
        mflip = np.flatnonzero(new_major != old_major)
        if len(mflip):
            idx = mflip + a
            dmaj = new_major[mflip].astype(np.float64) - old_major[mflip]
            weights = heights[idx] * dmaj
            inter_len += (count[:, idx] > 0) @ weights
            major_len += float(weights.sum())
            if region:
                on = dmaj > 0
                starts[idx[on]] = x
                off = idx[~on]
                if len(off):
                    runs_row.append(off)
                    runs_x1.append(starts[off].copy())
                    runs_x2.append(np.full(len(off), x))
            majority[idx] = new_major[mflip]
    rects: list[Box] = []
    if region and runs_row:
        rects = _runs_to_rectangles(np.concatenate(runs_row), np.concatenate(runs_x1), np.concatenate(runs_x2), ys)
    return own, inter, float(major_area), rects


def _runs_to_rectangles(row: np.ndarray, x1: np.ndarray, x2: np.ndarray, ys: np.ndarray) -> list[Box]:
    """Disjoint rectangles from per-row x runs: empty runs dropped, touching runs of a row joined
    into maximal runs, then runs with the same span on consecutive rows merged (the dense grid's
    order: by x1, x2, row)."""
    keep = x2 > x1
    row, x1, x2 = row[keep], x1[keep], x2[keep]
    if not len(row):
        return []
    order = np.lexsort((x1, row))
    row, x1, x2 = row[order], x1[order], x2[order]
    # Join runs of one row that touch (a run ending where the next begins, e.g. at an edge where
    # one box ends and another starts).
    new = np.ones(len(row), dtype=bool)
    new[1:] = (row[1:] != row[:-1]) | (x1[1:] > x2[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(row)) - 1
    row, x1, x2 = row[first], x1[first], np.maximum.reduceat(x2, first) if len(first) else x2[last]
    order = np.lexsort((row, x2, x1))
    r, s, e = row[order], x1[order], x2[order]
    new = np.ones(len(r), dtype=bool)
    new[1:] = (s[1:] != s[:-1]) | (e[1:] != e[:-1]) | (r[1:] != r[:-1] + 1)
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(r)) - 1
    out = np.stack((s[first], ys[r[first]], e[first], ys[r[last] + 1]), axis=1)
    return [tuple(b) for b in out.tolist()]


def _set_areas(a_boxes: Sequence[Sequence[float]], b_boxes: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """``(|A|, |B|, |A ∩ B|)`` of two unions, exact; dense grid or sweep by size."""
    a, b = boxes_array(a_boxes), boxes_array(b_boxes)
    if len(a) + len(b) == 0:
        return 0.0, 0.0, 0.0
    arr = np.concatenate((a, b))
    groups = np.repeat(np.arange(2), (len(a), len(b)))
    xs, ys = grid_edges(arr)
    if use_dense(2, xs, ys):
        cover = group_cover(arr, groups, 2, xs, ys).reshape(2, -1)
        area = cell_areas(xs, ys).ravel()
        return float(area[cover[0]].sum()), float(area[cover[1]].sum()), float(area[cover[0] & cover[1]].sum())
    own, _, both, _ = sweep_cover(arr, groups, 2, 2)
    return float(own[0]), float(own[1]), both


def union_area(boxes: Sequence[Sequence[float]]) -> float:
    """Exact area (px^2) of the union of ``boxes``; 0.0 for none. Empty boxes are ignored."""
    return _set_areas(boxes, [])[0]


def intersection_area(a_boxes: Sequence[Sequence[float]], b_boxes: Sequence[Sequence[float]]) -> float:
    """Exact area (px^2) of ``(union of a_boxes) ∩ (union of b_boxes)``."""
    return _set_areas(a_boxes, b_boxes)[2]


def iou(a_boxes: Sequence[Sequence[float]], b_boxes: Sequence[Sequence[float]]) -> float:
    """IoU of the two unions, ``|A ∩ B| / |A ∪ B|``; 0.0 when ``A ∪ B`` is empty.

    Both areas are exact, so for integer boxes the ratio is the correctly rounded quotient of two
    pixel counts.
    """
    a, b, both = _set_areas(a_boxes, b_boxes)
    union = a + b - both
    if union <= 0.0:
        return 0.0
    return both / union
