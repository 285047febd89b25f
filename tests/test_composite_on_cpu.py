"""medvr_verl.composite: R = R_base + 1(R_acc > 0) * w_tool * R_tool under each tool-reward variant."""

import pytest

from medvr_verl.composite import MemberOutcome, group_rewards

BOX_A = (0, (0.0, 0.0, 10.0, 10.0))
BOX_B = (0, (50.0, 50.0, 60.0, 60.0))


def _group():
    # two correct trajectories agreeing on A, one correct on B, one wrong on A, one correct without zoom
    return [
        MemberOutcome(base_score=2.0, acc=1.0, boxes=[BOX_A]),
        MemberOutcome(base_score=2.0, acc=1.0, boxes=[BOX_A]),
        MemberOutcome(base_score=2.0, acc=1.0, boxes=[BOX_B]),
        MemberOutcome(base_score=1.0, acc=0.0, boxes=[BOX_A]),
        MemberOutcome(base_score=2.0, acc=1.0, boxes=[]),
    ]


def test_consensus_variant():
    # our quorum rule (correct and zoomed); the paper's default: test_paper_quorum_counts_...
    result = group_rewards(_group(), "consensus", eta=0.5, w_tool=1.0, quorum="correct_with_box")
    rewards, quorum = result.members, result.quorum_size
    assert quorum == 3
    assert result.consensus == [BOX_A]
    assert [r.tool_reward for r in rewards] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert [r.reward for r in rewards] == [3.0, 3.0, 2.5, 1.0, 2.0]
    assert [r.in_quorum for r in rewards] == [True, True, True, False, False]
    assert rewards[0].iou == pytest.approx(1.0) and rewards[2].iou == 0.0


def test_correct_variant_rewards_every_correct_zoom():
    rewards = group_rewards(_group(), "correct", w_tool=0.5).members
    assert [r.reward for r in rewards] == [2.5, 2.5, 2.5, 1.0, 2.0]


def test_unconditional_variant_is_not_gated_by_accuracy():
    rewards = group_rewards(_group(), "unconditional").members
    assert [r.reward for r in rewards] == [3.0, 3.0, 3.0, 2.0, 2.0]


def test_none_variant_keeps_the_base_score():
    rewards = group_rewards(_group(), "none").members
    assert [r.reward for r in rewards] == [m.base_score for m in _group()]


def test_all_wrong_gets_no_tool_reward():
    members = [MemberOutcome(0.5, 0.0, [BOX_A]) for _ in range(4)]
    result = group_rewards(members)
    assert (
        result.quorum_size == 0
        and result.consensus == []
        and all(r.reward == 0.5 and r.tool_reward == 0.0 for r in result.members)
    )


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="tool reward variant"):
        group_rewards(_group(), "sometimes")


# ------------------------------------------------------------------------------------------------
# quorum (issue 13): who votes in the consensus
# ------------------------------------------------------------------------------------------------


def test_paper_quorum_counts_the_correct_answer_without_a_zoom():
    # T+ = the 4 correct trajectories (3 zoomers + 1 without a zoom): A is covered by 2, not > 4/2,
    # so there is no consensus and every correct zoom gets 0.5; the one without a zoom votes, earns 0.
    result = group_rewards(_group(), "consensus", eta=0.5, w_tool=1.0, quorum="correct")
    assert result.quorum_size == 4 and result.consensus == []
    assert [r.tool_reward for r in result.members] == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert [r.reward for r in result.members] == [2.5, 2.5, 2.5, 1.0, 2.0]
    assert [r.in_quorum for r in result.members] == [True, True, True, False, True]
    assert [r.iou for r in result.members] == [0.0] * 5


def test_default_quorum_is_the_papers():
    assert group_rewards(_group(), "consensus") == group_rewards(_group(), "consensus", quorum="correct")
    assert group_rewards(_group(), "consensus") != group_rewards(_group(), "consensus", quorum="correct_with_box")


@pytest.mark.parametrize("variant", ["none", "unconditional", "correct"])
def test_quorum_changes_no_reward_outside_the_consensus_variant(variant):
    ours = group_rewards(_group(), variant, quorum="correct_with_box")
    paper = group_rewards(_group(), variant, quorum="correct")
    assert [r.reward for r in ours.members] == [r.reward for r in paper.members]
    assert [r.tool_reward for r in ours.members] == [r.tool_reward for r in paper.members]
    assert (ours.quorum_size, paper.quorum_size) == (3, 4)


@pytest.mark.parametrize("quorum", ["paper", None, "CORRECT"])
def test_unknown_quorum_is_refused(quorum):
    with pytest.raises(ValueError, match="quorum must be one of"):
        group_rewards(_group(), "consensus", quorum=quorum)


# ------------------------------------------------------------------------------------------------
# Hostile member data (issue 10): never raises, never leaks into another member's reward
# ------------------------------------------------------------------------------------------------

import math  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medvr_verl.composite import TOOL_REWARD_VARIANTS, clean_boxes  # noqa: E402
from medvr_verl.consensus import QUORUM_RULES, consensus_credit_by_image  # noqa: E402

_BAD_BOXES = [
    (0, (math.nan, 0.0, 1.0, 1.0)),
    (0, (0.0, 0.0, math.inf, 1.0)),
    (None, (0.0, 0.0, 1.0, 1.0)),
    (-1, (0.0, 0.0, 1.0, 1.0)),
    ("0", (0.0, 0.0, 1.0, 1.0)),
    (10**30, (0.0, 0.0, 1.0, 1.0)),
    (0, (0.0, 0.0, 1.0)),
    (0, "box"),
    "entry",
    [0, [1, 2, 3, 4], 5],
]


def test_bad_boxes_of_one_member_change_nobody_else():
    clean = group_rewards(_group(), "consensus")
    hostile = list(_group())
    hostile[3] = MemberOutcome(base_score=1.0, acc=0.0, boxes=[BOX_A, *_BAD_BOXES])
    hostile[4] = MemberOutcome(base_score=2.0, acc=1.0, boxes=_BAD_BOXES)  # only bad boxes: no zoom
    result = group_rewards(hostile, "consensus")
    assert result.members == clean.members
    assert result.consensus == clean.consensus


def test_non_finite_scores_are_zero_and_rewards_finite():
    members = [
        MemberOutcome(base_score=math.nan, acc=math.nan, boxes=[BOX_A]),
        MemberOutcome(base_score=math.inf, acc=1.0, boxes=[BOX_A]),
        MemberOutcome(base_score="2", acc=None, boxes=None),
        MemberOutcome(base_score=2.0, acc=1.0, boxes=[BOX_A]),
    ]
    for variant in TOOL_REWARD_VARIANTS:
        rewards = [r.reward for r in group_rewards(members, variant).members]
        assert all(math.isfinite(r) for r in rewards), (variant, rewards)
    consensus = group_rewards(members, "consensus").members
    assert [r.reward for r in consensus] == [0.0, 1.0, 0.0, 3.0]


def test_bad_w_tool_is_a_configuration_error():
    with pytest.raises(ValueError):
        group_rewards(_group(), "consensus", w_tool=math.nan)


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
_any = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner), max_leaves=12)
_coordinate = st.one_of(st.integers(0, 20), st.floats(allow_nan=True, allow_infinity=True))
_box_entry = st.one_of(
    _any,
    st.tuples(
        st.one_of(st.integers(-2, 3), _leaf),
        st.one_of(st.tuples(*[_coordinate] * 4), _any),
    ),
)
_member = st.builds(
    MemberOutcome,
    base_score=st.one_of(_leaf, st.floats(-3, 3)),
    acc=st.one_of(_leaf, st.sampled_from([0.0, 1.0])),
    boxes=st.one_of(_any, st.lists(_box_entry, max_size=5)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_member, max_size=6), st.sampled_from(TOOL_REWARD_VARIANTS), st.sampled_from(QUORUM_RULES))
def test_any_member_data_gives_finite_rewards(members, variant, quorum):
    result = group_rewards(members, variant, quorum=quorum)
    assert len(result.members) == len(members)
    for r in result.members:
        assert math.isfinite(r.reward) and r.tool_reward in (0.0, 0.5, 1.0) and math.isfinite(r.iou)


@settings(max_examples=150, deadline=None)
@given(st.lists(_member, min_size=1, max_size=5), st.lists(_box_entry, max_size=5))
def test_a_members_junk_boxes_do_not_change_others(members, junk):
    """Appending boxes to member 0 changes others' rewards only through the valid ones it adds."""
    base = group_rewards(members, "consensus")
    extra = [e for e in junk if not clean_boxes([e])]  # keep only what validation refuses
    first = members[0]
    hostile = [MemberOutcome(first.base_score, first.acc, [*clean_boxes(first.boxes), *extra]), *members[1:]]
    cleaned = [MemberOutcome(first.base_score, first.acc, clean_boxes(first.boxes)), *members[1:]]
    base2 = group_rewards(cleaned, "consensus")
    assert group_rewards(hostile, "consensus").members == base2.members
    assert base.members == base2.members


def test_reward_manager_data_flow_with_one_hostile_member():
    """records -> trajectory_boxes -> group_rewards, as medvr_cca runs it: a member whose records
    are garbage gets no tool reward and counts invalid zooms; the others keep their rewards."""
    from medvr_verl.tool_calls import trajectory_boxes

    good = {"valid": True, "root_image_index": 0, "bbox_root": [0, 0, 10, 10]}
    hostile_records = [
        {"valid": True, "root_image_index": None, "bbox_root": [0, 0, 10, 10]},
        {"valid": True, "root_image_index": 0, "bbox_root": [math.nan, 0, 10, 10]},
        {"valid": True, "root_image_index": "0", "bbox_root": "0 0 10 10"},
        "record",
        [good],
    ]
    fields = [{"medvr_zoom_calls": [good]}, {"medvr_zoom_calls": [good]}, {"medvr_zoom_calls": hostile_records}]
    outcomes = []
    for extra in fields:
        boxes, invalid, _ = trajectory_boxes(extra, "")
        outcomes.append((MemberOutcome(1.0, 1.0, boxes), invalid))
    assert [invalid for _, invalid in outcomes] == [0, 0, 5]
    for quorum in ("correct", "correct_with_box"):
        with_hostile = group_rewards([o for o, _ in outcomes], "consensus", quorum=quorum).members
        without = group_rewards([o for o, _ in outcomes[:2]], "consensus", quorum=quorum).members
        assert with_hostile[:2] == without and with_hostile[2].reward == 1.0 and with_hostile[2].tool_reward == 0.0
        # the paper's T+ counts the correct answer whose boxes were all refused as a vote for no region
        assert with_hostile[2].in_quorum == (quorum == "correct")


@settings(max_examples=200, deadline=None)
@given(st.lists(_member, max_size=6), st.sampled_from(QUORUM_RULES), st.sampled_from([0.0, 0.5, 0.9]))
def test_consensus_variant_is_cca_of_the_cleaned_members(members, quorum, eta):
    """Under either quorum rule the consensus variant is R_base + 1(acc > 0) * w * CCA reward of the
    cleaned boxes (CCA itself is checked against a raster in test_consensus_on_cpu)."""
    from medvr_verl.composite import _finite

    result = group_rewards(members, "consensus", eta=eta, w_tool=2.0, quorum=quorum)
    boxes = [clean_boxes(m.boxes) for m in members]
    correct = [_finite(m.acc) > 0 for m in members]
    cca = consensus_credit_by_image(boxes, correct, eta, quorum=quorum)
    assert [r.tool_reward for r in result.members] == cca.rewards
    assert result.quorum_size == cca.quorum_size and result.consensus == cca.consensus
    expected = [_finite(m.base_score) + (2.0 * t if c else 0.0) for m, t, c in zip(members, cca.rewards, correct)]
    assert [r.reward for r in result.members] == expected
    voters = [c and (bool(b) or quorum == "correct") for c, b in zip(correct, boxes)]
    assert [r.in_quorum for r in result.members] == voters
