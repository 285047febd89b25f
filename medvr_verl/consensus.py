"""Consensus Credit Assignment (CCA), MedVR's tool reward. Pure: imports neither veRL nor torch.

Within one GRPO group (the trajectories sampled for one prompt):

- quorum ``T+``, by the ``quorum`` rule (:data:`QUORUM_RULES`):

  * ``"correct"`` (default; the paper's ``T+``, all successful trajectories): every correct
    trajectory; one without a box counts toward ``|T+|`` with an empty ``M_i`` (a vote for no
    region). When fewer than half of the correct trajectories zoom, no pixel reaches a majority: the
    consensus is empty and every zoom earns 0.5.
  * ``"correct_with_box"`` (ours, an option): trajectories that are correct **and** have at least
    one (non-empty) zoom box. Its weakness: a lone correct zoomer is its own consensus and earns 1.0
    wherever it looked.

  The two rules agree whenever every correct trajectory zoomed.
- ``M_i`` = union of trajectory i's boxes (per image);
- ``C(pixel)`` = number of quorum trajectories whose ``M_i`` covers the pixel;
- consensus = ``{pixel : C > |T+| / 2}``, a strict majority (a tie at exactly half is excluded);
- ``R_tool(j) = 1.0`` if ``IoU(M_j, consensus) > eta`` else ``0.5`` for j in ``T+`` with a box;
  ``0.0`` for every other trajectory (wrong answer, or no box: no zoom, no tool reward, under
  either rule). IoU with an empty consensus is 0.0; a quorum member without a box has IoU None.

Boxes are ``(x1, y1, x2, y2)`` in original-image pixels, half-open (see :mod:`medvr_verl.boxes`);
empty boxes (``x2 <= x1`` or ``y2 <= y1``) are dropped first, so a trajectory whose only boxes are
empty counts as one without a box.

Everything is exact at any resolution and never rasterizes: per image, the distinct box edges of
the quorum make a compressed grid of at most ``(2B - 1)^2`` cells for ``B`` boxes; coverage per
trajectory and per cell is one batched product of 0/1 row and column spans
(:func:`medvr_verl.boxes.group_cover`); areas are cell widths times heights. For
integer boxes every area is an exact integer in float64 (below 2**53), so rewards equal those of a
full pixel raster bit for bit.

Bounded cost: when ``|T+| x cells`` would exceed :data:`medvr_verl.boxes.DENSE_MAX_CELLS` (many
boxes), the same exact areas and consensus rectangles come from a sweep over x
(:func:`medvr_verl.boxes.sweep_cover`), whose memory is linear in the number of boxes. The reward
path also caps boxes per trajectory (:data:`medvr_verl.tool_calls.MAX_BOXES_PER_TRAJECTORY`,
the excess counted as invalid zooms), so a group's cost is bounded whatever a rollout holds.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvr_verl.boxes import Box, cell_areas, grid_edges, group_cover, iou, sweep_cover, use_dense

__all__ = [
    "DEFAULT_QUORUM",
    "QUORUM_RULES",
    "CCAResult",
    "consensus_credit",
    "consensus_credit_by_image",
    "gt_agreement",
    "tool_rewards",
]

REWARD_AGREE = 1.0  # IoU with the consensus above eta
REWARD_DISAGREE = 0.5  # in the quorum, IoU at or below eta
REWARD_NONE = 0.0  # wrong answer or no box

QUORUM_RULES = ("correct_with_box", "correct")
"""Who votes in the consensus (``T+``): correct trajectories with a zoom box, or every correct one."""
DEFAULT_QUORUM = "correct"


@dataclass(frozen=True)
class CCAResult:
    """Outcome of CCA for one group of N trajectories.

    Attributes:
        rewards: (N,) tool reward per trajectory, each 0.0, 0.5 or 1.0.
        ious: (N,) IoU(M_j, consensus) for quorum members with a box; None for every other
            trajectory (a box-less quorum member under the paper's ``quorum="correct"`` too).
        quorum_size: |T+|.
        consensus: the majority region as disjoint rectangles, ``(x1, y1, x2, y2)`` pixels from
            :func:`consensus_credit`; ``(image_index, box)`` pairs from
            :func:`consensus_credit_by_image`.
    """

    rewards: list[float]
    ious: list[float | None]
    quorum_size: int
    consensus: list


def _check_quorum(quorum: object) -> str:
    if not isinstance(quorum, str) or quorum not in QUORUM_RULES:
        raise ValueError(f"quorum must be one of {QUORUM_RULES}, got {quorum!r}")
    return str(quorum)


def _check_eta(eta: object) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    return float(eta)


def _box_array(coords: list) -> np.ndarray:
    """(K, 4) float64 of ``coords``; ValueError unless every entry is 4 finite numbers."""
    if not coords:
        return np.empty((0, 4), dtype=np.float64)
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("every box must be 4 numbers (x1, y1, x2, y2)") from None
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError("every box must be 4 numbers (x1, y1, x2, y2)")
    if not np.isfinite(arr).all():
        raise ValueError("box coordinates must be finite")
    return arr


def _is_index(value: object) -> bool:
    """An image index: a non-negative int (numpy ints too), not a bool."""
    if type(value) is int:  # fast path for the common case; the ABC check is slow
        return value >= 0
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral) and value >= 0


def _flatten_tagged(boxes_per_traj: Sequence[Sequence[tuple[int, Sequence[float]]]]):
    """Flatten ``(image_index, box)`` lists into arrays (see :func:`_credit` for the layout).

    Raises ValueError for an entry that is not ``(image_index, (x1, y1, x2, y2))`` or a negative
    or non-integer image index.
    """
    lengths: list[int] = []
    images: list[int] = []
    coords: list[Sequence[float]] = []
    for j, tagged in enumerate(boxes_per_traj):
        lengths.append(len(tagged))
        for entry in tagged:
            try:
                index, box = entry
            except (TypeError, ValueError):
                raise ValueError(f"trajectory {j}: expected (image_index, (x1, y1, x2, y2)), got {entry!r}") from None
            if not _is_index(index):
                raise ValueError(f"trajectory {j}: image index must be an int >= 0, got {index!r}")
            images.append(int(index))
            coords.append(box)
    traj = np.repeat(np.arange(len(lengths)), lengths)
    return traj, np.asarray(images, dtype=np.intp), _box_array(coords)


def _majority(arr: np.ndarray, groups: np.ndarray, n_groups: int):
    """Consensus on one image among ``n_groups`` trajectories.

    Args:
        arr: (K, 4) non-empty boxes, K >= 1; groups: (K,) quorum position of each box.
    Returns:
        cover (G, cells) bool, consensus (cells,) bool, cell areas (cells,), xs, ys, grid shape.
    """
    xs, ys = grid_edges(arr)
    cover = group_cover(arr, groups, n_groups, xs, ys)
    shape = cover.shape[1:]
    cover = cover.reshape(n_groups, -1)
    # Strict majority without float halves: C > G/2  <=>  2C > G.
    consensus = 2 * cover.sum(axis=0, dtype=np.intp) > n_groups
    return cover, consensus, cell_areas(xs, ys).ravel(), xs, ys, shape


def _rectangles(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> list[Box]:
    """Disjoint rectangles covering the True cells of ``mask`` (ny - 1, nx - 1).

    Horizontal runs per cell row, then runs with the same column span in consecutive rows merged
    into one rectangle. Vectorized; the only Python loop builds the output tuples.
    """
    rows, cols = mask.shape
    if rows == 0 or cols == 0 or not mask.any():
        return []
    padded = np.zeros((rows, cols + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    run_row, run_start = np.nonzero(step == 1)
    _, run_end = np.nonzero(step == -1)  # same row-major order, so runs pair up
    # Sort runs by (start, end, row); a run continues the previous one when the span matches and
    # it sits on the next row.
    order = np.lexsort((run_row, run_end, run_start))
    r, s, e = run_row[order], run_start[order], run_end[order]
    new = np.ones(len(r), dtype=bool)
    new[1:] = (s[1:] != s[:-1]) | (e[1:] != e[:-1]) | (r[1:] != r[:-1] + 1)
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(r)) - 1
    x1 = xs[s[first]]
    x2 = xs[e[first]]
    y1 = ys[r[first]]
    y2 = ys[r[last] + 1]
    return [tuple(b) for b in np.stack((x1, y1, x2, y2), axis=1).tolist()]


def _flatten_plain(boxes_per_traj: Sequence[Sequence[Sequence[float]]]):
    """Flatten untagged per-trajectory box lists: every box on image 0 (layout of :func:`_credit`)."""
    lengths = [len(boxes) for boxes in boxes_per_traj]
    coords = [box for boxes in boxes_per_traj for box in boxes]
    traj = np.repeat(np.arange(len(lengths)), lengths)
    return traj, np.zeros(len(coords), dtype=np.intp), _box_array(coords)


def _credit(
    traj: np.ndarray,
    img: np.ndarray,
    arr: np.ndarray,
    correct: Sequence[object],
    eta: float,
    *,
    region: bool = True,
    quorum_rule: str = DEFAULT_QUORUM,
) -> CCAResult:
    """The one CCA code path.

    Args:
        traj: (K,) trajectory index of each box, in [0, N) with N = len(correct).
        img: (K,) image index of each box.
        arr: (K, 4) boxes (x1, y1, x2, y2), finite; empty ones are dropped here.
        correct: (N,) truthy when correct. eta: threshold, already validated.
        region: build the consensus rectangles; :func:`tool_rewards` skips them (a third of the
            cost), leaving ``consensus`` empty.
        quorum_rule: one of :data:`QUORUM_RULES`, already validated.
    Returns:
        CCAResult with ``consensus`` as ``(image_index, box)`` pairs.
    """
    n = len(correct)
    keep = (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])
    traj, img, arr = traj[keep], img[keep], arr[keep]

    is_correct = np.fromiter((bool(c) for c in correct), dtype=bool, count=n)
    has_box = np.zeros(n, dtype=bool)
    has_box[traj] = True
    quorum = np.flatnonzero(is_correct & has_box if quorum_rule == "correct_with_box" else is_correct)
    q = len(quorum)
    rewards = [REWARD_NONE] * n
    ious: list[float | None] = [None] * n
    # Under the paper's rule a quorum may hold correct trajectories without boxes: they count toward
    # |T+| (the majority threshold) but earn nothing. No box in the quorum: no consensus at all.
    if q == 0 or not has_box[quorum].any():
        return CCAResult(rewards, ious, q, [])

    # Position of each trajectory inside the quorum (-1 outside), then keep the quorum's boxes.
    position = np.full(n, -1, dtype=np.intp)
    position[quorum] = np.arange(q)
    grp = position[traj]
    in_quorum = grp >= 0
    grp, img, arr = grp[in_quorum], img[in_quorum], arr[in_quorum]

    inter = np.zeros(q)
    union = np.zeros(q)
    consensus: list[tuple[int, Box]] = []
    images = [int(img[0])] if img.min() == img.max() else np.unique(img).tolist()
    for image in images:
        on_image = img == image
        sub_arr, sub_grp = arr[on_image], grp[on_image]
        if not use_dense(q, *grid_edges(sub_arr)):
            own, both, cons_area, rects = sweep_cover(sub_arr, sub_grp, q, q // 2 + 1, region=region)
            inter += both
            union += own + cons_area - both
            consensus.extend((image, b) for b in rects)
            continue
        cover, cons, area, xs, ys, shape = _majority(sub_arr, sub_grp, q)
        # |M_j| and |M_j ∩ C| in one product; |M_j ∪ C| = |M_j| + |C| - |M_j ∩ C|. Areas of
        # integer boxes are integers, which float64 sums exactly in any order (below 2**53).
        weights = np.stack((area, np.where(cons, area, 0.0)), axis=1)
        own, both = (cover.astype(np.float64) @ weights).T
        inter += both
        union += own + weights[:, 1].sum() - both
        if region:
            consensus.extend((image, b) for b in _rectangles(cons.reshape(shape), xs, ys))

    # Every quorum member with a box has union > 0; the guard keeps the rule total.
    values = np.divide(inter, union, out=np.zeros(q), where=union > 0).tolist()
    for j, value in zip(quorum.tolist(), values):
        if not has_box[j]:
            continue  # the paper's quorum: a correct answer without a zoom votes, earns no tool reward
        ious[j] = value
        rewards[j] = REWARD_AGREE if value > eta else REWARD_DISAGREE
    return CCAResult(rewards, ious, q, consensus)


def _check_lengths(boxes_per_traj: Sequence, correct: Sequence) -> None:
    if len(boxes_per_traj) != len(correct):
        raise ValueError(f"boxes_per_traj has {len(boxes_per_traj)} trajectories but correct has {len(correct)}")


def consensus_credit_by_image(
    boxes_per_traj: Sequence[Sequence[tuple[int, Sequence[float]]]],
    correct: Sequence[object],
    eta: float = 0.5,
    quorum: str = DEFAULT_QUORUM,
) -> CCAResult:
    """CCA for a group whose boxes may lie on several images.

    Args:
        boxes_per_traj: (N,) per trajectory, a list of ``(image_index, (x1, y1, x2, y2))``,
            original-image pixels of that image.
        correct: (N,) truthy when the trajectory's answer is correct (e.g. ``R_acc > 0``).
        eta: IoU threshold in [0, 1]; ``IoU > eta`` (strict) earns 1.0.
        quorum: who votes (:data:`QUORUM_RULES`): ``"correct"`` (default; the paper's ``T+``: every
            correct trajectory, a box-less one voting for no region) or ``"correct_with_box"`` (ours).

    The consensus is computed per image over the whole quorum (a quorum member without boxes on
    an image still counts toward ``|T+|`` there), and
    ``IoU_j = sum_img |M_j ∩ C_img| / sum_img |M_j ∪ C_img|``.

    Returns:
        CCAResult with ``consensus`` as a list of ``(image_index, box)``.
    Raises:
        ValueError: lengths differ, eta outside [0, 1], unknown quorum, malformed boxes or image
            indices.
    """
    _check_lengths(boxes_per_traj, correct)
    eta = _check_eta(eta)
    quorum = _check_quorum(quorum)
    return _credit(*_flatten_tagged(boxes_per_traj), correct, eta, quorum_rule=quorum)


def consensus_credit(
    boxes_per_traj: Sequence[Sequence[Sequence[float]]],
    correct: Sequence[object],
    eta: float = 0.5,
    quorum: str = DEFAULT_QUORUM,
) -> CCAResult:
    """CCA for a single-image group: :func:`consensus_credit_by_image` with every box on image 0.

    Args:
        boxes_per_traj: (N,) per trajectory, a list of ``(x1, y1, x2, y2)`` original-image px.
        correct: (N,) truthy when correct. eta: IoU threshold in [0, 1].
        quorum: who votes (:data:`QUORUM_RULES`).
    Returns:
        CCAResult with ``consensus`` as a list of boxes.
    Raises:
        ValueError: lengths differ, eta outside [0, 1], unknown quorum, malformed boxes.
    """
    return _single_image(boxes_per_traj, correct, eta, region=True, quorum=quorum)


def _single_image(
    boxes_per_traj: Sequence[Sequence[Sequence[float]]],
    correct: Sequence[object],
    eta: float,
    *,
    region: bool,
    quorum: str = DEFAULT_QUORUM,
) -> CCAResult:
    _check_lengths(boxes_per_traj, correct)
    eta = _check_eta(eta)
    quorum = _check_quorum(quorum)
    # Same core as the multi-image path; tagging skipped only to save per-box Python work.
    result = _credit(*_flatten_plain(boxes_per_traj), correct, eta, region=region, quorum_rule=quorum)
    return CCAResult(result.rewards, result.ious, result.quorum_size, [box for _, box in result.consensus])


def tool_rewards(
    boxes_per_traj: Sequence[Sequence[Sequence[float]]],
    correct: Sequence[object],
    eta: float = 0.5,
    quorum: str = DEFAULT_QUORUM,
) -> list[float]:
    """Per-trajectory CCA tool reward (1.0 / 0.5 / 0.0): ``consensus_credit(...).rewards``.

    Args:
        boxes_per_traj: (N,) per trajectory, a list of ``(x1, y1, x2, y2)`` in original-image px.
        correct: (N,) bools (truthy = correct).
        eta: IoU threshold in [0, 1] (default 0.5).
        quorum: who votes (:data:`QUORUM_RULES`, default ``"correct"``, the paper's).
    Returns:
        (N,) rewards. Skips building the consensus rectangles, which only the result object shows.
    """
    return _single_image(boxes_per_traj, correct, eta, region=False, quorum=quorum).rewards


def gt_agreement(
    consensus: Sequence[tuple[int, Sequence[float]]],
    zooms: Sequence[tuple[int, Sequence[float]]],
    gt_boxes: Sequence[Sequence[float]],
    eta: float,
    image: int = 0,
) -> dict[str, float]:
    """How a group's consensus and one trajectory's zooms agree with annotated boxes (the CCA monitor).

    ``consensus``: the group's consensus rectangles and ``zooms``: the trajectory's zoom boxes, both
    ``(image index, (x1, y1, x2, y2))`` in original-image pixels; ``gt_boxes``: the annotated boxes of
    image ``image`` (SLAKE's detection boxes, the synthetic set's cell), same pixels. Returns

    * ``cca_gt_iou``: IoU of the consensus region with the union of ``gt_boxes`` (NaN when the
      consensus is empty: no correct trajectory zoomed, so there is nothing to check);
      ``cca_gt_hit``: 1.0 when it exceeds ``eta``, else 0.0 (NaN likewise);
    * ``zoom_gt_iou``: mean over the trajectory's zooms of each box's IoU with the union of
      ``gt_boxes`` (NaN without a zoom); ``zoom_gt_hit``: the share of its zooms above ``eta``.

    Everything is NaN without ``gt_boxes``. Only boxes on image ``image`` count.
    """
    eta = _check_eta(eta)
    nan = float("nan")
    gt = [tuple(float(v) for v in b) for b in gt_boxes]
    gt = [b for b in gt if b[2] > b[0] and b[3] > b[1]]
    if not gt:
        return {"cca_gt_iou": nan, "cca_gt_hit": nan, "zoom_gt_iou": nan, "zoom_gt_hit": nan}
    region = [tuple(box) for k, box in consensus if k == image]
    cca = iou(region, gt) if region else nan
    ious = [iou([tuple(box)], gt) for k, box in zooms if k == image]
    return {
        "cca_gt_iou": cca,
        "cca_gt_hit": nan if not region else float(cca > eta),
        "zoom_gt_iou": float(np.mean(ious)) if ious else nan,
        "zoom_gt_hit": float(np.mean([v > eta for v in ious])) if ious else nan,
    }
