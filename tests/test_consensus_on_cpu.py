"""Tests for medvr_verl.consensus (CCA) against a brute-force pixel raster."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvr_verl.boxes import union_area
from medvr_verl.consensus import (
    QUORUM_RULES,
    CCAResult,
    consensus_credit,
    consensus_credit_by_image,
    tool_rewards,
)

W, H = 40, 32  # raster image for the property tests


# ----------------------------------------------------------------------------------------------
# Brute-force reference: the obvious definition on a pixel raster
# ----------------------------------------------------------------------------------------------


def raster(boxes, width=W, height=H) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


def raster_cca_by_image(tagged_per_traj, correct, eta, n_images, width=W, height=H, quorum_rule="correct_with_box"):
    """Reference CCA: rewards, ious, quorum size, consensus masks per image.

    ``quorum_rule``: "correct_with_box" (T+ = correct with a non-empty box) or "correct" (the paper's
    T+ = every correct trajectory; one without a box votes with an empty mask and earns nothing).
    """
    masks = [
        [raster([b for i, b in tagged if i == img], width, height) for img in range(n_images)]
        for tagged in tagged_per_traj
    ]
    has_box = [any(m.any() for m in masks[j]) for j in range(len(correct))]
    if quorum_rule == "correct":
        quorum = [j for j, c in enumerate(correct) if c]
    else:
        quorum = [j for j, c in enumerate(correct) if c and has_box[j]]
    q = len(quorum)
    consensus = []
    for img in range(n_images):
        count = sum((masks[j][img].astype(int) for j in quorum), np.zeros((height, width), int))
        consensus.append(2 * count > q)
    rewards = [0.0] * len(correct)
    ious = [None] * len(correct)
    for j in quorum:
        if not has_box[j]:
            continue
        inter = sum(int((masks[j][i] & consensus[i]).sum()) for i in range(n_images))
        union = sum(int((masks[j][i] | consensus[i]).sum()) for i in range(n_images))
        ious[j] = inter / union if union else 0.0
        rewards[j] = 1.0 if ious[j] > eta else 0.5
    return rewards, ious, q, consensus


def raster_cca(boxes_per_traj, correct, eta, width=W, height=H, quorum_rule="correct_with_box"):
    tagged = [[(0, b) for b in boxes] for boxes in boxes_per_traj]
    rewards, ious, q, consensus = raster_cca_by_image(tagged, correct, eta, 1, width, height, quorum_rule)
    return rewards, ious, q, consensus[0]


x_coord = st.integers(0, W)
y_coord = st.integers(0, H)
int_box = st.tuples(x_coord, y_coord, x_coord, y_coord)  # reversed/degenerate included
# Boxes that cluster, so that majorities actually form.
near_box = st.tuples(st.integers(8, 14), st.integers(6, 12), st.integers(20, 30), st.integers(16, 26))
traj_boxes = st.lists(st.one_of(int_box, near_box, near_box), max_size=4)


@st.composite
def groups(draw, max_traj=8):
    n = draw(st.integers(1, max_traj))
    boxes = draw(st.lists(traj_boxes, min_size=n, max_size=n))
    correct = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return boxes, correct


etas = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1)
quorums = st.sampled_from(QUORUM_RULES)


# ----------------------------------------------------------------------------------------------
# Property tests against the raster
# ----------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=250)
@given(groups(), etas, quorums)
def test_cca_matches_raster(group, eta, quorum):
    boxes, correct = group
    rewards, ious, q, consensus = raster_cca(boxes, correct, eta, quorum_rule=quorum)
    result = consensus_credit(boxes, correct, eta, quorum=quorum)
    assert result.rewards == rewards
    assert result.ious == ious  # exact: both are quotients of the same integer pixel counts
    assert result.quorum_size == q
    assert tool_rewards(boxes, correct, eta, quorum=quorum) == rewards
    # The consensus rectangles rasterize to exactly the majority mask, and are disjoint.
    region = [tuple(int(v) for v in b) for b in result.consensus]
    assert all(float(v).is_integer() for b in result.consensus for v in b)
    np.testing.assert_array_equal(raster(region), consensus)
    assert sum((b[2] - b[0]) * (b[3] - b[1]) for b in result.consensus) == consensus.sum()


@settings(deadline=None, max_examples=150)
@given(
    st.integers(1, 3).flatmap(
        lambda n_img: st.tuples(
            st.just(n_img),
            st.lists(
                st.lists(st.tuples(st.integers(0, n_img - 1), st.one_of(int_box, near_box)), max_size=4),
                min_size=1,
                max_size=7,
            ),
        )
    ),
    st.data(),
    etas,
    quorums,
)
def test_cca_by_image_matches_raster(n_and_tagged, data, eta, quorum):
    n_images, tagged = n_and_tagged
    correct = data.draw(st.lists(st.booleans(), min_size=len(tagged), max_size=len(tagged)))
    rewards, ious, q, consensus = raster_cca_by_image(tagged, correct, eta, n_images, quorum_rule=quorum)
    result = consensus_credit_by_image(tagged, correct, eta, quorum=quorum)
    assert result.rewards == rewards
    assert result.ious == ious
    assert result.quorum_size == q
    for img in range(n_images):
        region = [tuple(int(v) for v in b) for i, b in result.consensus if i == img]
        np.testing.assert_array_equal(raster(region), consensus[img])


@settings(deadline=None, max_examples=100)
@given(groups(), etas)
def test_single_image_is_by_image_on_image_zero(group, eta):
    boxes, correct = group
    single = consensus_credit(boxes, correct, eta)
    tagged = consensus_credit_by_image([[(0, b) for b in bs] for bs in boxes], correct, eta)
    assert single.rewards == tagged.rewards
    assert single.ious == tagged.ious
    assert single.quorum_size == tagged.quorum_size
    assert [(0, b) for b in single.consensus] == tagged.consensus


@settings(deadline=None, max_examples=150)
@given(
    groups(),
    st.floats(0.05, 20),
    st.floats(0.05, 20),
    st.sampled_from([0.0, 0.3, 0.5, 0.9]),
)
def test_scale_invariance(group, sx, sy, eta):
    boxes, correct = group
    base = consensus_credit(boxes, correct, eta)
    scaled_boxes = [[(x1 * sx, y1 * sy, x2 * sx, y2 * sy) for x1, y1, x2, y2 in bs] for bs in boxes]
    scaled = consensus_credit(scaled_boxes, correct, eta)
    assert scaled.quorum_size == base.quorum_size
    for a, b, ra, rb in zip(base.ious, scaled.ious, base.rewards, scaled.rewards):
        if a is None:
            assert b is None and ra == rb == 0.0
            continue
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
        if abs(a - eta) > 1e-9:  # float tolerance aside: a tie with eta may round either way
            assert ra == rb


@settings(deadline=None, max_examples=100)
@given(
    groups(),
    st.sampled_from([0.25, 0.5, 2.0, 4.0, 1024.0]),
    st.sampled_from([0.125, 1.0, 8.0, 64.0]),
    etas,
)
def test_scale_invariance_exact_for_powers_of_two(group, sx, sy, eta):
    boxes, correct = group
    scaled = [[(x1 * sx, y1 * sy, x2 * sx, y2 * sy) for x1, y1, x2, y2 in bs] for bs in boxes]
    assert consensus_credit(scaled, correct, eta).ious == consensus_credit(boxes, correct, eta).ious
    assert tool_rewards(scaled, correct, eta) == tool_rewards(boxes, correct, eta)


@settings(deadline=None, max_examples=100)
@given(groups(), st.randoms(use_true_random=False), quorums)
def test_permutation_equivariance(group, rnd, quorum):
    boxes, correct = group
    order = list(range(len(boxes)))
    rnd.shuffle(order)
    base = tool_rewards(boxes, correct, quorum=quorum)
    permuted = tool_rewards([boxes[i] for i in order], [correct[i] for i in order], quorum=quorum)
    assert permuted == [base[i] for i in order]


# ----------------------------------------------------------------------------------------------
# The quorum rule: the paper's T+ = every correct trajectory (default) against ours, correct_with_box
# ----------------------------------------------------------------------------------------------


def _nonempty(boxes):
    return any(x2 > x1 and y2 > y1 for x1, y1, x2, y2 in boxes)


@settings(deadline=None, max_examples=200)
@given(groups(), etas)
def test_quorum_rules_agree_when_every_correct_trajectory_zoomed(group, eta):
    boxes, correct = group
    correct = [c and _nonempty(b) for c, b in zip(correct, boxes)]
    assert consensus_credit(boxes, correct, eta, quorum="correct") == consensus_credit(
        boxes, correct, eta, quorum="correct_with_box"
    )


@settings(deadline=None, max_examples=200)
@given(groups(), etas)
def test_paper_quorum_counts_every_correct_trajectory_and_pays_only_zooms(group, eta):
    boxes, correct = group
    paper = consensus_credit(boxes, correct, eta, quorum="correct")
    ours = consensus_credit(boxes, correct, eta, quorum="correct_with_box")
    assert paper.quorum_size == sum(map(bool, correct))
    assert ours.quorum_size == sum(bool(c) and _nonempty(b) for c, b in zip(correct, boxes))
    for b, c, r, box_iou in zip(boxes, correct, paper.rewards, paper.ious):
        if not (c and _nonempty(b)):  # wrong, or correct without a zoom: no tool reward, no IoU
            assert r == 0.0 and box_iou is None
        else:
            assert r in (0.5, 1.0) and box_iou is not None
    # Box-less voters only raise the bar: the paper's consensus lies inside ours.
    mask_paper = raster([tuple(int(v) for v in b) for b in paper.consensus])
    mask_ours = raster([tuple(int(v) for v in b) for b in ours.consensus])
    assert not (mask_paper & ~mask_ours).any()


def test_paper_quorum_box_less_voters_can_empty_the_consensus():
    # 2 correct zoomers agree on A; 3 correct answers without a zoom. Ours: |T+| = 2, consensus A.
    # The paper's: |T+| = 5, A is covered by 2 <= 5/2: no consensus, both zoomers get 0.5.
    a = (0, 0, 10, 10)
    boxes, correct = [[a], [a], [], [], []], [True] * 5
    ours = consensus_credit(boxes, correct, quorum="correct_with_box")
    assert ours.rewards == [1.0, 1.0, 0.0, 0.0, 0.0] and ours.quorum_size == 2 and ours.consensus == [a]
    paper = consensus_credit(boxes, correct, quorum="correct")
    assert paper == CCAResult([0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, None, None, None], 5, [])
    # With one box-less voter the majority of 3 still holds A.
    paper = consensus_credit(boxes[:3], correct[:3], quorum="correct")
    assert paper == CCAResult([1.0, 1.0, 0.0], [1.0, 1.0, None], 3, [a])


def test_lone_correct_zoomer_and_its_opposite():
    """The case that separates the rules (README, departures): 8 correct trajectories, one zooms a
    5x5 corner. Ours makes it its own consensus (1.0 wherever it looked); the paper's T+ has 8 voters,
    7 for no region: no consensus, the zoom earns 0.5. The opposite: every correct trajectory zooms,
    and the rules agree."""
    corner = (0, 0, 5, 5)
    boxes, correct = [[corner]] + [[]] * 7, [True] * 8
    assert consensus_credit(boxes, correct, quorum="correct_with_box").rewards == [1.0] + [0.0] * 7
    assert consensus_credit(boxes, correct) == CCAResult([0.5] + [0.0] * 7, [0.0] + [None] * 7, 8, [])
    all_zoom = [[corner]] * 5 + [[(50, 50, 60, 60)]] * 3
    assert consensus_credit(all_zoom, correct) == consensus_credit(all_zoom, correct, quorum="correct_with_box")
    assert consensus_credit(all_zoom, correct).rewards == [1.0] * 5 + [0.5] * 3


def test_paper_quorum_without_any_box():
    assert consensus_credit([[], []], [True, True], quorum="correct") == CCAResult([0.0, 0.0], [None, None], 2, [])


@pytest.mark.parametrize("quorum", ["paper", "", None, 1, ["correct"], "Correct"])
def test_bad_quorum(quorum):
    with pytest.raises(ValueError, match="quorum must be one of"):
        consensus_credit([[(0, 0, 1, 1)]], [True], quorum=quorum)
    with pytest.raises(ValueError, match="quorum must be one of"):
        consensus_credit_by_image([[(0, (0, 0, 1, 1))]], [True], quorum=quorum)
    with pytest.raises(ValueError, match="quorum must be one of"):
        tool_rewards([[(0, 0, 1, 1)]], [True], quorum=quorum)


# ----------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------


def test_all_wrong_gives_zero():
    result = consensus_credit([[(0, 0, 10, 10)], [(0, 0, 10, 10)]], [False, False])
    assert result == CCAResult([0.0, 0.0], [None, None], 0, [])


def test_no_boxes_gives_zero():
    result = consensus_credit([[], [], []], [True, True, True])  # the paper's T+: 3 votes for no region
    assert result.rewards == [0.0, 0.0, 0.0] and result.quorum_size == 3 and result.consensus == []
    ours = consensus_credit([[], [], []], [True, True, True], quorum="correct_with_box")
    assert ours.rewards == [0.0, 0.0, 0.0] and ours.quorum_size == 0


def test_empty_group():
    assert tool_rewards([], []) == []


def test_single_correct_with_box():
    result = consensus_credit([[(5, 5, 20, 30)], [(0, 0, 3, 3)]], [True, False])
    assert result.rewards == [1.0, 0.0]
    assert result.ious == [1.0, None]
    assert result.quorum_size == 1
    assert result.consensus == [(5.0, 5.0, 20.0, 30.0)]


def test_correct_without_box_and_wrong_with_box_get_zero():
    boxes = [[(0, 0, 10, 10)], [], [(0, 0, 10, 10)]]
    # the paper's T+ = {0, 1}: the box has 1 vote of 2, no majority, so the zoom earns 0.5
    assert tool_rewards(boxes, [True, True, False]) == [0.5, 0.0, 0.0]
    # ours: the lone correct zoomer is its own consensus
    assert tool_rewards(boxes, [True, True, False], quorum="correct_with_box") == [1.0, 0.0, 0.0]


def test_degenerate_boxes_do_not_count():
    # Trajectory 1's only box is empty: not in the quorum, so trajectory 0 is alone.
    boxes = [[(0, 0, 10, 10)], [(5, 5, 5, 20), (30, 30, 20, 20)]]
    result = consensus_credit(boxes, [True, True], quorum="correct_with_box")
    assert result.rewards == [1.0, 0.0] and result.quorum_size == 1
    # the paper's rule: trajectory 1 votes for no region (its boxes are empty), no majority
    result = consensus_credit(boxes, [True, True])
    assert result.rewards == [0.5, 0.0] and result.quorum_size == 2


def test_tie_at_half_is_excluded():
    # Two disjoint boxes: every pixel has C = 1 = |T+| / 2, not a strict majority.
    result = consensus_credit([[(0, 0, 10, 10)], [(20, 20, 30, 30)]], [True, True])
    assert result.consensus == []
    assert result.rewards == [0.5, 0.5] and result.ious == [0.0, 0.0]
    # Four trajectories, two camps of two: still no majority anywhere.
    camps = [[(0, 0, 10, 10)], [(0, 0, 10, 10)], [(20, 0, 30, 10)], [(20, 0, 30, 10)]]
    result = consensus_credit(camps, [True] * 4)
    assert result.consensus == [] and result.rewards == [0.5] * 4
    # A third member of one camp makes it a majority.
    result = consensus_credit(camps + [[(0, 0, 10, 10)]], [True] * 5)
    assert result.consensus == [(0.0, 0.0, 10.0, 10.0)]
    assert result.rewards == [1.0, 1.0, 0.5, 0.5, 1.0]


def test_two_overlapping_take_intersection():
    result = consensus_credit([[(0, 0, 10, 10)], [(5, 0, 15, 10)]], [True, True])
    assert result.consensus == [(5.0, 0.0, 10.0, 10.0)]
    assert result.ious == [0.5, 0.5]
    assert result.rewards == [0.5, 0.5]  # IoU == eta is not > eta


def test_eta_boundary_is_strict():
    # Consensus is [0,10]x[0,10]; trajectory 2 covers twice that, IoU exactly 0.5.
    boxes = [[(0, 0, 10, 10)], [(0, 0, 10, 10)], [(0, 0, 20, 10)]]
    result = consensus_credit(boxes, [True, True, True], eta=0.5)
    assert result.ious == [1.0, 1.0, 0.5]
    assert result.rewards == [1.0, 1.0, 0.5]
    assert tool_rewards(boxes, [True] * 3, eta=0.4999) == [1.0, 1.0, 1.0]
    assert tool_rewards(boxes, [True] * 3, eta=1.0) == [0.5, 0.5, 0.5]  # IoU > 1 is impossible
    assert tool_rewards(boxes, [True] * 3, eta=0.0) == [1.0, 1.0, 1.0]


def test_eta_zero_needs_some_overlap():
    boxes = [[(0, 0, 10, 10)], [(0, 0, 10, 10)], [(50, 50, 60, 60)]]
    assert tool_rewards(boxes, [True] * 3, eta=0.0) == [1.0, 1.0, 0.5]


def test_union_of_own_boxes_is_used():
    # Trajectory 0 splits the consensus region into two boxes; its union matches exactly.
    boxes = [[(0, 0, 5, 10), (5, 0, 10, 10)], [(0, 0, 10, 10)], [(0, 0, 10, 10)]]
    result = consensus_credit(boxes, [True] * 3)
    assert result.ious == [1.0, 1.0, 1.0]
    # Overlapping boxes of one trajectory count once toward C.
    boxes = [
        [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10)],
        [(50, 50, 60, 60)],
        [(70, 70, 80, 80)],
    ]
    assert consensus_credit(boxes, [True] * 3).consensus == []


def test_consensus_rectangles_are_merged():
    # Three identical L-shapes: the consensus is that L as few disjoint rectangles.
    shape = [(0, 0, 30, 10), (0, 10, 10, 30)]
    region = consensus_credit([shape, shape, shape], [True] * 3).consensus
    assert sorted(region) == [(0.0, 0.0, 30.0, 10.0), (0.0, 10.0, 10.0, 30.0)]  # row runs, merged


def test_multi_image_iou_sums_over_images():
    tagged = [
        [(0, (0, 0, 10, 10)), (1, (0, 0, 10, 10))],
        [(0, (0, 0, 10, 10)), (1, (0, 0, 10, 10))],
        [(0, (0, 0, 10, 10))],  # nothing on image 1
    ]
    result = consensus_credit_by_image(tagged, [True, True, True])
    assert sorted(result.consensus) == [(0, (0.0, 0.0, 10.0, 10.0)), (1, (0.0, 0.0, 10.0, 10.0))]
    assert result.ious == [1.0, 1.0, 0.5]  # (100 + 0) / (100 + 100)
    assert result.rewards == [1.0, 1.0, 0.5]


def test_multi_image_same_box_on_different_images_do_not_agree():
    tagged = [[(0, (0, 0, 10, 10))], [(1, (0, 0, 10, 10))]]
    result = consensus_credit_by_image(tagged, [True, True])
    assert result.consensus == [] and result.rewards == [0.5, 0.5]


def test_accepts_numpy_and_truthy_inputs():
    boxes = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]]), np.zeros((0, 4))]
    correct = np.array([True, True, False])
    assert tool_rewards(boxes, correct) == [1.0, 1.0, 0.0]
    # R_acc as floats: > 0 counts as correct.
    assert tool_rewards([[(0, 0, 2, 2)], [(0, 0, 2, 2)]], [1.0, 0.0]) == [1.0, 0.0]
    assert consensus_credit_by_image([[(np.int64(2), (0, 0, 2, 2))]], [True]).rewards == [1.0]


def test_float_boxes_large_image():
    boxes = [[(100.5, 200.25, 3000.75, 4000.0)], [(100.5, 200.25, 3000.75, 4000.0)]]
    result = consensus_credit(boxes, [True, True])
    assert result.ious == [1.0, 1.0]


def test_result_is_frozen():
    result = consensus_credit([[(0, 0, 1, 1)]], [True])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rewards = []  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def test_length_mismatch():
    with pytest.raises(ValueError, match="correct has 1"):
        tool_rewards([[], []], [True])
    with pytest.raises(ValueError):
        consensus_credit_by_image([[]], [True, False])


@pytest.mark.parametrize("eta", [-0.01, 1.01, float("nan"), float("inf"), True, "0.5", None])
def test_bad_eta(eta):
    with pytest.raises(ValueError, match="eta"):
        tool_rewards([[(0, 0, 1, 1)]], [True], eta=eta)


@pytest.mark.parametrize(
    "boxes",
    [
        [[(0, 0, 1)]],
        [[(0, 0, 1, float("nan"))]],
        [[(0, 0, 1, 2, 3)]],
        [[("a", 0, 1, 1)]],
        [(0, 0, 1, 1)],
    ],
)
def test_malformed_boxes(boxes):
    with pytest.raises(ValueError):
        tool_rewards(boxes, [True] * len(boxes))


@pytest.mark.parametrize(
    "tagged",
    [
        [[(-1, (0, 0, 1, 1))]],
        [[(True, (0, 0, 1, 1))]],
        [[(0.0, (0, 0, 1, 1))]],
        [[(0, 0, 1, 1)]],
        [[((0, 0, 1, 1),)]],
    ],
)
def test_malformed_tagged_boxes(tagged):
    with pytest.raises(ValueError):
        consensus_credit_by_image(tagged, [True])


# ----------------------------------------------------------------------------------------------
# Bounded cost (issue 10): the sweep used for many boxes equals the dense grid and the raster
# ----------------------------------------------------------------------------------------------

import contextlib  # noqa: E402

import medvr_verl.boxes as boxes_module  # noqa: E402
from medvr_verl.boxes import intersection_area, iou, sweep_cover  # noqa: E402


@contextlib.contextmanager
def _sweep_only():
    """Route every exact-area computation through the sweep (as for a huge group)."""
    old = boxes_module.DENSE_MAX_CELLS
    boxes_module.DENSE_MAX_CELLS = -1
    try:
        yield
    finally:
        boxes_module.DENSE_MAX_CELLS = old


@settings(deadline=None, max_examples=250)
@given(groups(), etas, quorums)
def test_sweep_cca_matches_raster_and_dense(group, eta, quorum):
    boxes, correct = group
    rewards, ious, q, consensus = raster_cca(boxes, correct, eta, quorum_rule=quorum)
    dense = consensus_credit(boxes, correct, eta, quorum=quorum)
    with _sweep_only():
        result = consensus_credit(boxes, correct, eta, quorum=quorum)
        assert tool_rewards(boxes, correct, eta, quorum=quorum) == rewards
    assert result.rewards == rewards and result.ious == ious and result.quorum_size == q
    assert result == dense  # same rectangles in the same order, bit-identical IoUs
    region = [tuple(int(v) for v in b) for b in result.consensus]
    np.testing.assert_array_equal(raster(region), consensus)


@settings(deadline=None, max_examples=150)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 2), st.one_of(int_box, near_box)), max_size=5), min_size=1, max_size=7),
    st.data(),
    quorums,
)
def test_sweep_by_image_equals_dense(tagged, data, quorum):
    correct = data.draw(st.lists(st.booleans(), min_size=len(tagged), max_size=len(tagged)))
    dense = consensus_credit_by_image(tagged, correct, quorum=quorum)
    with _sweep_only():
        assert consensus_credit_by_image(tagged, correct, quorum=quorum) == dense


@settings(deadline=None, max_examples=150)
@given(st.lists(int_box, max_size=6), st.lists(int_box, max_size=6))
def test_sweep_union_intersection_iou_equal_dense(a, b):
    expected = (union_area(a), intersection_area(a, b), iou(a, b))
    with _sweep_only():
        assert (union_area(a), intersection_area(a, b), iou(a, b)) == expected
    assert expected[0] == raster(a).sum()


@settings(deadline=None, max_examples=100)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0, 100), st.floats(0, 100)).map(
            lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
        ),
        max_size=6,
    ),
    st.integers(1, 3),
)
def test_sweep_float_boxes_close_to_dense(arr_boxes, threshold):
    boxes = [b for b in arr_boxes if b[2] > b[0] and b[3] > b[1]]
    if not boxes:
        return
    arr = np.asarray(boxes)
    groups_ = np.arange(len(boxes)) % 3
    own, inter, area, _ = sweep_cover(arr, groups_, 3, threshold)
    for g in range(3):
        assert own[g] == pytest.approx(union_area([b for b, k in zip(boxes, groups_) if k == g]), rel=1e-9, abs=1e-9)


def test_many_boxes_stay_cheap():
    """Thousands of boxes per trajectory (a hostile rollout): exact, and without the dense grid's
    quadratic memory (the dense grid of this group would be 8 x 4000 x 4000 cells)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    group = []
    for _ in range(8):
        xy = rng.integers(0, 4000, size=(1000, 2))
        wh = rng.integers(1, 300, size=(1000, 2))
        group.append([(int(x), int(y), int(x + w), int(y + h)) for (x, y), (w, h) in zip(xy, wh)])
    tracemalloc.start()
    result = consensus_credit(group, [True] * 8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20, peak
    assert result.quorum_size == 8 and all(0.0 <= v <= 1.0 for v in result.ious)
