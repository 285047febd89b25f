"""medvr_cca through veRL's own code: config schema, RewardLoopWorker actors, AgentLoopWorker.

Two settings, as a user meets them:

(a) this plugin's recipe: the V1 worker asks the reward loop once per group
    (``medvr_verl.group_reward.group_reward_data``; tests/test_agent_loop_tq_on_cpu.py runs it);
(b) dropped into a stock veRL tool-agent setup: stock ``AgentLoopWorker`` + stock ``tool_agent``,
    rewards computed per trajectory while rolling out, only ``reward.reward_manager.name=medvr_cca``
    set. Members meet in the group broker.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import ray
import torch
import verl  # noqa: F401  (loads the plugin)
from cca_script import MC, VARIANTS, cca_config, chest_image, make_script, variant_of
from tensordict import TensorDict
from verl.protocol import DataProto
from verl.utils.config import omega_conf_to_dataclass

from medvr_verl.group_broker import GroupBroker
from medvr_verl.reward_manager import GROUP_META_KEY, GROUP_REWARDS_KEY, CCARewardSettings
from medvr_verl.testing.harness import make_agent_batch, make_sample, run_agent_loop_worker
from medvr_verl.testing.scripted_server import ScriptedLLMClient


def test_config_resolves_through_veRL(tiny_model_path):
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    from medvr_verl.reward_manager import MedVRCCARewardManager

    config = cca_config(tiny_model_path)
    # the lookup veRL's RewardLoopManager and RewardLoopWorker make
    assert resolve_reward_manager_cls(config) is MedVRCCARewardManager
    # (veRL 0.9.1's RewardManagerConfig dataclass cannot be built at all: its __post_init__ calls a
    # super().__post_init__ that BaseConfig lacks, so veRL itself keeps config.reward a DictConfig)
    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    assert rollout.multi_turn.tool_config_path.endswith("recipes/medvr/zoom_tool.yaml")
    assert CCARewardSettings.from_config(config) == CCARewardSettings(group_timeout_s=120, scorer="medvr")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tool_reward": "always"}, "tool_reward"),
        ({"eta": 1.5}, "eta"),
        ({"group_size": 0}, "group_size"),
        ({"group_timeout_s": 0}, "group_timeout_s"),
        ({"w_tool": float("nan")}, "finite"),
        ({"quorum": "paper"}, "quorum must be one of"),
    ],
)
def test_bad_settings_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CCARewardSettings(**kwargs)


def test_quorum_setting_reaches_the_group_rewards():
    """reward.reward_kwargs.quorum: correct (default, the paper's T+) | correct_with_box (ours)."""
    from omegaconf import OmegaConf

    from medvr_verl.composite import MemberOutcome
    from medvr_verl.reward_manager import MedVRCCARewardManager

    assert CCARewardSettings().quorum == "correct"
    config = OmegaConf.create({"reward": {"reward_kwargs": {"tool_reward": "consensus", "quorum": "correct_with_box"}}})
    assert CCARewardSettings.from_config(config).quorum == "correct_with_box"
    box = (0, (0.0, 0.0, 10.0, 10.0))
    # two correct zooms on the same box, two correct answers without a zoom
    members = [MemberOutcome(1.0, 1.0, [box]), MemberOutcome(1.0, 1.0, [box])] + [MemberOutcome(1.0, 1.0, [])] * 2
    manager = object.__new__(MedVRCCARewardManager)
    for quorum, rewards, quorum_size in (
        ("correct_with_box", [2.0, 2.0, 1.0, 1.0], 2),  # consensus of the 2 zooms: the box
        ("correct", [1.5, 1.5, 1.0, 1.0], 4),  # 2 of 4 voters is no majority: no consensus
    ):
        manager.settings = CCARewardSettings(quorum=quorum)
        group = manager._group_rewards(members)
        assert [m.reward for m in group.members] == rewards and group.quorum_size == quorum_size


def _responses(output, tokenizer):
    width = output.batch["responses"].shape[1]
    masks = output.batch["attention_mask"][:, -width:].bool()
    return [tokenizer.decode(r[m]) for r, m in zip(output.batch["responses"], masks)]


@pytest.mark.vl_stack
def test_stock_worker_and_tool_agent_get_consensus_rewards(tiny_model_path, reward_workers, tokenizer):
    """(b): veRL's stock AgentLoopWorker and tool_agent; only the reward manager is ours."""
    config = cca_config(tiny_model_path)
    samples = [
        make_sample(f"[script:p{i}] Which lung is abnormal?", images=[chest_image()], extra_info=MC, ground_truth="A")
        for i in range(2)
    ]
    batch = make_agent_batch(samples, n=len(VARIANTS), agent_name="tool_agent")
    client = ScriptedLLMClient(config, script=make_script())
    output = run_agent_loop_worker(config, batch, client, reward_loop_worker_handles=reward_workers)

    rewards = output.batch["rm_scores"].sum(-1).tolist()
    variants = [variant_of(t) for t in _responses(output, tokenizer)]
    expected = [VARIANTS[v] for v in variants]
    assert sorted(variants) == sorted(list(range(len(VARIANTS))) * 2)  # each group got every variant
    assert rewards == pytest.approx([e[2] for e in expected])
    assert output.non_tensor_batch["tool_reward"].tolist() == pytest.approx([e[3] for e in expected])
    assert output.non_tensor_batch["cca_quorum_size"].tolist() == [3] * 8
    assert output.non_tensor_batch["cca_group_size"].tolist() == [4] * 8
    assert not any(output.non_tensor_batch["cca_partial_group"])
    # the zoom tool's records, in original-image pixels, were the box source
    assert not any(output.non_tensor_batch["boxes_from_text"])
    assert set(output.meta_info["reward_extra_keys"]) >= {"acc", "format", "tool_reward", "cca_iou", "cca_quorum_size"}


# ---- the same reward manager called directly, through veRL's RewardLoopWorker -------------------


def _row_batch(tokenizer, responses, uid, extra_info=None, extra_fields=None, ground_truth="A"):
    """A DataProto as veRL's agent loop sends it to the reward loop, one row per response text."""
    n = len(responses)
    prompt = tokenizer.encode("Which lung?", add_special_tokens=False)
    encoded = [tokenizer.encode(r, add_special_tokens=False) for r in responses]
    width = max(len(e) for e in encoded)
    responses_t = torch.zeros((n, width), dtype=torch.int64)
    mask = torch.zeros((n, len(prompt) + width), dtype=torch.int64)
    for i, e in enumerate(encoded):
        responses_t[i, : len(e)] = torch.tensor(e)
        mask[i, : len(prompt) + len(e)] = 1
    batch = TensorDict(
        {"prompts": torch.tensor([prompt] * n), "responses": responses_t, "attention_mask": mask}, batch_size=n
    )

    def column(values):
        arr = np.empty(n, dtype=object)
        arr[:] = values
        return arr

    non_tensor = {
        "uid": column([uid] * n),
        "data_source": column(["vqa_rad"] * n),
        "reward_model": column([{"ground_truth": ground_truth}] * n),
        "extra_info": column([dict(extra_info or MC)] * n),
        "tool_extra_fields": column(extra_fields or [{}] * n),
    }
    return DataProto(batch=batch, non_tensor_batch=non_tensor)


def _answer(box, letter):
    from cca_script import zoom_call

    zoom = zoom_call(box) if box else ""
    tool_turn = "\nuser\n<tool_response>\ncrop\n</tool_response>\nassistant\n"
    return f"<think>look</think>{zoom}{tool_turn}<think>ok</think><answer>{letter}</answer>"


def _score_each(handle, data):
    return ray.get([handle.compute_score.remote(data[i : i + 1]) for i in range(len(data))])


@pytest.mark.parametrize(
    "answers, expected",
    [
        # all wrong: no quorum, no tool reward, no format penalty (well formatted)
        ([([0, 0, 50, 50], "B")] * 4, [0.0] * 4),
        # correct without a box: no tool reward, and it does not vote
        ([(None, "A"), ([0, 0, 50, 50], "A"), ([0, 0, 50, 50], "A"), (None, "B")], [1.0, 2.0, 2.0, 0.0]),
    ],
)
def test_one_member_per_call_across_reward_workers(reward_workers, tokenizer, answers, expected):
    """As with the stock worker: each member alone, on one of two RewardLoopWorker actors."""
    data = _row_batch(tokenizer, [_answer(b, a) for b, a in answers], uid=uuid.uuid4().hex)
    results = ray.get([reward_workers[i % 2].compute_score.remote(data[i : i + 1]) for i in range(len(data))])
    assert [r["reward_score"] for r in results] == pytest.approx(expected)
    assert all(r["reward_extra_info"]["cca_group_size"] == 4 for r in results)


def test_whole_group_call_returns_every_member(reward_workers, tokenizer):
    from cca_script import BOTTOM_RIGHT, TOP_LEFT

    answers = [(TOP_LEFT, "A"), (TOP_LEFT, "A"), (BOTTOM_RIGHT, "A"), (TOP_LEFT, "B")]
    data = _row_batch(tokenizer, [_answer(b, a) for b, a in answers], uid="g")
    data.meta_info[GROUP_META_KEY] = True
    result = ray.get(reward_workers[0].compute_score.remote(data))
    members = result[GROUP_REWARDS_KEY]
    assert [m["reward_score"] for m in members] == pytest.approx([2.0, 2.0, 1.5, 0.0])
    assert result["reward_score"] == members[-1]["reward_score"]
    assert all(m["reward_extra_info"]["boxes_from_text"] for m in members)


def test_validation_split_without_a_group_is_scored_alone(reward_workers, tokenizer):
    """n=1 validation: extra_info.split='test' -> group size val_kwargs.n (1): no waiting."""
    data = _row_batch(tokenizer, [_answer([0, 0, 50, 50], "A")], uid="v1", extra_info={**MC, "split": "test"})
    (result,) = _score_each(reward_workers[1], data)
    assert result["reward_score"] == pytest.approx(2.0)  # a lone correct zoom is its own consensus
    assert result["reward_extra_info"]["cca_group_size"] == 1


# ---- the broker's failure behaviour ---------------------------------------------------------------


def test_broker_complete_partial_and_late_groups():
    async def scenario():
        broker = GroupBroker()
        complete = await asyncio.gather(*[broker.join("g", f"m{i}", i, expected=3, timeout_s=5) for i in range(3)])
        assert all(not r["partial"] for r in complete)
        assert all([m for m, _ in r["members"]] == ["m0", "m1", "m2"] for r in complete)

        partial = await asyncio.gather(*[broker.join("h", f"m{i}", i, expected=3, timeout_s=0.2) for i in range(2)])
        assert all(r["partial"] and not r["late"] and len(r["members"]) == 2 for r in partial)

        late = await broker.join("h", "m2", 2, expected=3, timeout_s=5)  # arrives after the seal
        assert late["partial"] and late["late"] and [m for m, _ in late["members"]] == ["m0", "m1", "m2"]

    asyncio.run(scenario())


def test_validation_split_names_and_the_warning_for_unknown_ones(tokenizer, caplog):
    """One-per-call scoring: a group of a split named in val_splits expects val_kwargs.n members;
    an unknown split name expects rollout.n and says once how to avoid waiting group_timeout_s."""
    import logging

    from omegaconf import OmegaConf

    from medvr_verl.reward_manager import MedVRCCARewardManager

    def manager(**reward_kwargs):
        config = OmegaConf.create(
            {
                "reward": {"reward_kwargs": reward_kwargs},
                "actor_rollout_ref": {"rollout": {"n": 4, "val_kwargs": {"n": 1}}},
            }
        )
        return MedVRCCARewardManager(config, tokenizer, None)

    default = manager()
    assert default._expected_group_size({"split": "Validation"}) == 1
    assert default._expected_group_size({"split": "train"}) == 4
    with caplog.at_level(logging.WARNING, logger="medvr_verl.reward_manager"):
        assert default._expected_group_size({"split": "holdout"}) == 4
        assert default._expected_group_size({"split": "holdout"}) == 4
    warnings = [r.getMessage() for r in caplog.records if "holdout" in r.getMessage()]
    assert len(warnings) == 1 and "reward.reward_kwargs.val_splits" in warnings[0]
    assert manager(val_splits=["holdout"])._expected_group_size({"split": "holdout"}) == 1
    with pytest.raises(ValueError, match="val_splits"):
        manager(val_splits="holdout")
    with pytest.raises(ValueError, match="scorer must be one of"):
        manager(scorer="mine")
