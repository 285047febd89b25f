"""Pure: the composite MedVR reward of each trajectory of one prompt group.

``R = R_base + 1(R_acc > 0) * w_tool * R_tool`` where ``R_base = R_acc + R_format`` comes from the
scoring function and ``R_tool`` from one of four variants (the paper's tool-reward ablation):

=============== =================================================================================
``none``          ``R_tool = 0``: accuracy and format only.
``unconditional`` ``R_tool = 1`` whenever the trajectory made a valid zoom, right or wrong; this
                  variant alone is not gated by accuracy (that is what makes it unconditional).
``correct``       ``R_tool = 1`` for a valid zoom in a correct trajectory.
``consensus``     CCA (:mod:`medvr_verl.consensus`): 1.0 if the trajectory's zoom region has
                  IoU > eta with the majority region of the quorum ``T+``, else 0.5.
=============== =================================================================================

``quorum`` (:data:`medvr_verl.consensus.QUORUM_RULES`) says who votes in the consensus and is
reported as ``in_quorum`` / ``quorum_size``: ``"correct"`` (default, the paper's ``T+``: every
correct trajectory; one without a zoom votes for no region and earns no tool reward) or
``"correct_with_box"`` (ours: correct trajectories with a valid zoom; a lone correct zoomer is then
its own consensus). The other variants do not use the consensus;
their rewards are the same under either rule.

Members are untrusted data (a custom scoring function, a broker payload, a rollout dump): a member's
non-finite or non-numeric ``base_score`` counts as 0.0 and its ``acc`` as wrong (0.0); its malformed
boxes (anything :func:`medvr_verl.tool_calls.validate_box` or the image-index rule refuses) are
dropped, and at most ``MAX_BOXES_PER_TRAJECTORY`` are kept. One member's bad data therefore never
raises and never changes another member's reward except through what it validly contributes, and
every reward is finite (given finite ``w_tool``).

Imports neither veRL nor torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvr_verl.consensus import DEFAULT_QUORUM, QUORUM_RULES, consensus_credit_by_image
from medvr_verl.tool_calls import MAX_BOXES_PER_TRAJECTORY, as_image_index, validate_box

Box = tuple[float, float, float, float]
ImageBox = tuple[int, Box]

TOOL_REWARD_VARIANTS = ("none", "unconditional", "correct", "consensus")


@dataclass(frozen=True)
class MemberOutcome:
    """One trajectory as the reward sees it: base score, accuracy, valid zoom boxes."""

    base_score: float
    acc: float
    boxes: Sequence[ImageBox]


@dataclass(frozen=True)
class MemberReward:
    reward: float
    """Composite reward ``R``."""
    tool_reward: float
    """``R_tool`` before the accuracy gate and ``w_tool``."""
    iou: float
    """IoU of the trajectory's zoom region with the consensus; 0.0 outside the quorum or variant."""
    in_quorum: bool
    """A voter of the consensus (``T+`` under the ``quorum`` rule): correct and zoomed, or correct."""


@dataclass(frozen=True)
class GroupRewards:
    members: list[MemberReward]
    quorum_size: int
    consensus: list[ImageBox]
    """The majority region as disjoint ``(image_index, box)`` rectangles (``consensus`` variant only)."""


def _finite(value: object) -> float:
    """A member's score as a finite float; 0.0 for anything else (NaN, inf, None, str, ...)."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if not isinstance(value, numbers.Real):
        return 0.0
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return out if math.isfinite(out) else 0.0


def clean_boxes(boxes: object) -> list[ImageBox]:
    """The valid ``(image_index, (x1, y1, x2, y2))`` entries of one member, malformed ones dropped,
    at most ``MAX_BOXES_PER_TRAJECTORY`` kept. Never raises."""
    if not isinstance(boxes, (list, tuple, np.ndarray)):
        return []
    out: list[ImageBox] = []
    try:
        entries = list(boxes)
    except Exception:
        return []
    for entry in entries:
        if len(out) >= MAX_BOXES_PER_TRAJECTORY:
            break
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            continue
        index = as_image_index(entry[0])
        box = validate_box(entry[1])
        if index is not None and box is not None:
            out.append((index, box))
    return out


def group_rewards(
    members: Sequence[MemberOutcome],
    variant: str = "consensus",
    eta: float = 0.5,
    w_tool: float = 1.0,
    quorum: str = DEFAULT_QUORUM,
) -> GroupRewards:
    """Composite rewards of one prompt group.

    Raises ValueError only for a bad ``variant``, ``eta``, ``w_tool`` or ``quorum`` (configuration);
    bad member data is cleaned (see the module docstring).
    """
    if variant not in TOOL_REWARD_VARIANTS:
        raise ValueError(f"tool reward variant must be one of {TOOL_REWARD_VARIANTS}, got {variant!r}")
    if not isinstance(quorum, str) or quorum not in QUORUM_RULES:
        raise ValueError(f"quorum must be one of {QUORUM_RULES}, got {quorum!r}")
    if isinstance(w_tool, bool) or not isinstance(w_tool, numbers.Real) or not math.isfinite(w_tool):
        raise ValueError(f"w_tool must be a finite number, got {w_tool!r}")
    bases = [_finite(getattr(m, "base_score", 0.0)) for m in members]
    accs = [_finite(getattr(m, "acc", 0.0)) for m in members]
    boxes = [clean_boxes(getattr(m, "boxes", None)) for m in members]
    correct = [a > 0 for a in accs]
    zoomed = [len(b) > 0 for b in boxes]
    in_quorum = [c and (z or quorum == "correct") for c, z in zip(correct, zoomed)]
    ious = [0.0] * len(members)
    consensus: list[ImageBox] = []

    if variant == "none":
        tool = [0.0] * len(members)
    elif variant == "unconditional":
        tool = [1.0 if z else 0.0 for z in zoomed]
    elif variant == "correct":
        tool = [1.0 if c and z else 0.0 for c, z in zip(correct, zoomed)]
    else:
        result = consensus_credit_by_image(boxes, correct, eta=eta, quorum=quorum)
        tool = list(result.rewards)
        ious = [iou if iou is not None else 0.0 for iou in result.ious]
        consensus = list(result.consensus)

    gated = [True] * len(members) if variant == "unconditional" else correct
    rewards = [
        MemberReward(reward=base + (float(w_tool) * t if g else 0.0), tool_reward=t, iou=iou, in_quorum=q)
        for base, t, g, iou, q in zip(bases, tool, gated, ious, in_quorum)
    ]
    return GroupRewards(rewards, sum(in_quorum), consensus)
