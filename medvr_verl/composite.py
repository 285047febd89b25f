"""Pure: the composite MedVR reward of each trajectory of one prompt group.

``R = R_base + 1(R_acc > 0) * w_tool * R_tool`` where ``R_base = R_acc + R_format`` comes from the
scoring function and ``R_tool`` from one of four variants (the paper's tool-reward ablation):

=============== =================================================================================
``none``          ``R_tool = 0``: accuracy and format only.
``unconditional`` ``R_tool = 1`` whenever the trajectory made a valid zoom, right or wrong; this
                  variant alone is not gated by accuracy (that is what makes it unconditional).
``correct``       ``R_tool = 1`` for a valid zoom in a correct trajectory.
``consensus``     CCA (:mod:`medvr_verl.consensus`): 1.0 if the trajectory's zoom region has
                  IoU > eta with the majority region of the correct trajectories, else 0.5.
=============== =================================================================================

Imports neither veRL nor torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medvr_verl.consensus import consensus_credit_by_image

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
    """Correct and zoomed: a voter of the consensus."""


@dataclass(frozen=True)
class GroupRewards:
    members: list[MemberReward]
    quorum_size: int
    consensus: list[ImageBox]
    """The majority region as disjoint ``(image_index, box)`` rectangles (``consensus`` variant only)."""


def group_rewards(
    members: Sequence[MemberOutcome], variant: str = "consensus", eta: float = 0.5, w_tool: float = 1.0
) -> GroupRewards:
    """Composite rewards of one prompt group."""
    if variant not in TOOL_REWARD_VARIANTS:
        raise ValueError(f"tool reward variant must be one of {TOOL_REWARD_VARIANTS}, got {variant!r}")
    correct = [m.acc > 0 for m in members]
    zoomed = [len(m.boxes) > 0 for m in members]
    in_quorum = [c and z for c, z in zip(correct, zoomed)]
    ious = [0.0] * len(members)
    consensus: list[ImageBox] = []

    if variant == "none":
        tool = [0.0] * len(members)
    elif variant == "unconditional":
        tool = [1.0 if z else 0.0 for z in zoomed]
    elif variant == "correct":
        tool = [1.0 if q else 0.0 for q in in_quorum]
    else:
        result = consensus_credit_by_image([list(m.boxes) for m in members], correct, eta=eta)
        tool = list(result.rewards)
        ious = [iou if iou is not None else 0.0 for iou in result.ious]
        consensus = list(result.consensus)

    gated = [True] * len(members) if variant == "unconditional" else correct
    rewards = [
        MemberReward(reward=m.base_score + (w_tool * t if g else 0.0), tool_reward=t, iou=iou, in_quorum=q)
        for m, t, g, iou, q in zip(members, tool, gated, ious, in_quorum)
    ]
    return GroupRewards(rewards, sum(in_quorum), consensus)
