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
    result = group_rewards(_group(), "consensus", eta=0.5, w_tool=1.0)
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
