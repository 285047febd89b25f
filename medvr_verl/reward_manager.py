"""veRL reward manager ``medvr_cca``: MedVR's composite reward with Consensus Credit Assignment.

``R = R_acc + R_format + 1(R_acc > 0) * w_tool * R_tool`` per trajectory, with ``R_tool`` computed
over the whole group of a prompt (same ``uid``). Select it with ``reward.reward_manager.name=medvr_cca``
and tune it under ``reward.reward_kwargs`` (veRL's place for reward-manager options)::

    reward:
      reward_manager: {source: register, name: medvr_cca}
      reward_kwargs:
        tool_reward: consensus   # none | unconditional | correct | consensus
        eta: 0.5                 # IoU threshold of CCA
        quorum: correct_with_box # who votes in CCA (T+): correct_with_box | correct (the paper's)
        w_tool: 1.0
        format_weight: 0.1       # size of R_format (penalty: lost by a badly formatted response)
        format_mode: penalty     # penalty: R = acc - w * (1 - format); bonus: R = acc + w * format
        tool_name: image_zoom_in_tool
        group_size: null         # members per uid; null: rollout.n (val_kwargs.n for val splits)
        group_timeout_s: 600     # how long a member waits for the rest of its group

The group reaches ``run_single`` in one of two ways:

* **Whole group in one call** (this plugin's rollout managers, :mod:`medvr_verl.rollout`): the data
  holds every member of one group and ``meta_info["medvr_group"]`` is set. The result carries each
  member's reward under ``"medvr_group_rewards"``; the top-level reward is the last row's, as veRL's
  convention for multi-row data expects.
* **One trajectory per call** (veRL's stock ``AgentLoopWorker``): members meet in a named Ray actor
  (:mod:`medvr_verl.group_broker`) keyed by ``uid`` until the group is complete. Failure behaviour
  is the broker's: missing members time out, late ones are scored against the sealed group.

Boxes come from the zoom tool's records in ``tool_extra_fields`` when the loop kept them
(``medvr_agent``), else from the hermes tool calls in the response text (:mod:`medvr_verl.tool_calls`).
Scoring: the configured ``reward.custom_reward_function``, else :func:`medvr_verl.scoring.compute_score`.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from medvr_verl import scoring
from medvr_verl.composite import TOOL_REWARD_VARIANTS, GroupRewards, MemberOutcome, group_rewards
from medvr_verl.consensus import DEFAULT_QUORUM, QUORUM_RULES, gt_agreement
from medvr_verl.tool_calls import DEFAULT_TOOL_NAME, trajectory_boxes

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

GROUP_META_KEY = "medvr_group"
GROUP_REWARDS_KEY = "medvr_group_rewards"
GROUP_EXPECTED_KEY = "medvr_group_expected"
"""meta_info key: how many members the group should have had (fewer arrived: a partial group)."""
_GT_BOXES = "_medvr_gt_boxes"  # carried from _score_row to _result only, never returned
VALIDATION_SPLITS = frozenset({"test", "val", "valid", "validation", "eval", "dev"})


@dataclass(frozen=True)
class CCARewardSettings:
    """``reward.reward_kwargs`` of the ``medvr_cca`` manager, validated."""

    tool_reward: str = "consensus"
    eta: float = 0.5
    w_tool: float = 1.0
    format_weight: float = 0.1
    format_mode: str = "penalty"
    tool_name: str = DEFAULT_TOOL_NAME
    group_size: int | None = None
    group_timeout_s: float = 600.0
    quorum: str = DEFAULT_QUORUM

    def __post_init__(self):
        if self.tool_reward not in TOOL_REWARD_VARIANTS:
            raise ValueError(
                f"reward.reward_kwargs.tool_reward must be one of {TOOL_REWARD_VARIANTS}, got {self.tool_reward!r}"
            )
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"reward.reward_kwargs.eta must lie in [0, 1], got {self.eta}")
        if not math.isfinite(self.w_tool) or not math.isfinite(self.format_weight):
            raise ValueError("reward.reward_kwargs.w_tool and format_weight must be finite numbers")
        if self.format_mode not in scoring.FORMAT_MODES:
            raise ValueError(
                f"reward.reward_kwargs.format_mode must be one of {scoring.FORMAT_MODES}, got {self.format_mode!r}"
            )
        if self.format_weight < 0:
            raise ValueError(f"reward.reward_kwargs.format_weight must be >= 0, got {self.format_weight}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"reward.reward_kwargs.group_size must be >= 1 or null, got {self.group_size}")
        if not self.group_timeout_s > 0:
            raise ValueError(f"reward.reward_kwargs.group_timeout_s must be > 0, got {self.group_timeout_s}")
        if self.quorum not in QUORUM_RULES:
            raise ValueError(f"reward.reward_kwargs.quorum must be one of {QUORUM_RULES}, got {self.quorum!r}")

    @classmethod
    def from_config(cls, config) -> CCARewardSettings:
        kwargs = dict(config.reward.get("reward_kwargs", None) or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:  # a typo would silently keep a default: say so (other managers' keys may sit here too)
            logger.warning("medvr_cca ignores reward.reward_kwargs %s; its options are %s", unknown, sorted(known))
        return cls(**{k: v for k, v in kwargs.items() if k in known})


def gt_boxes_of(extra_info: Any) -> list[list[float]]:
    """``extra_info["gt_boxes"]`` (the converters' annotated boxes, pixels of image 0) as float lists;
    ``[]`` when absent or malformed (a parquet round trip gives numpy arrays of arrays)."""
    raw = extra_info.get("gt_boxes") if isinstance(extra_info, dict) else None
    if raw is None:
        return []
    boxes = []
    try:
        for box in raw:
            values = [float(v) for v in box]
            if len(values) == 4 and all(math.isfinite(v) for v in values):
                boxes.append(values)
    except (TypeError, ValueError):
        return []
    return boxes


@register("medvr_cca")
class MedVRCCARewardManager(RewardManagerBase):
    """Composite MedVR reward with group-level Consensus Credit Assignment."""

    def __init__(self, config, tokenizer, compute_score, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        self.settings = CCARewardSettings.from_config(config)
        custom = config.reward.get("custom_reward_function", None) or {}
        # Without a custom function veRL hands us its data_source-keyed default, which knows no
        # medical VQA set: use MedVR's scoring instead.
        self.compute_score = compute_score if custom.get("path") else scoring.compute_score
        self.is_async_reward_score = inspect.iscoroutinefunction(self.compute_score)
        rollout = config.actor_rollout_ref.rollout
        self.train_group_size = self.settings.group_size or int(rollout.n)
        self.val_group_size = self.settings.group_size or int(rollout.val_kwargs.n)
        self._broker = None

    async def run_single(self, data: DataProto) -> dict:
        if data.meta_info.get(GROUP_META_KEY):
            return await self._run_group(data)
        return await self._run_member(data[-1:])

    # -- whole group in one call -----------------------------------------------------------------
    async def _run_group(self, data: DataProto) -> dict:
        scored = [await self._score_row(data[i : i + 1]) for i in range(len(data))]
        group = self._group_rewards([outcome for outcome, _ in scored])
        partial = len(data) < int(data.meta_info.get(GROUP_EXPECTED_KEY, len(data)))
        results = [self._result(info, group, i, partial=partial) for i, (_, info) in enumerate(scored)]
        return {**results[-1], GROUP_REWARDS_KEY: results}

    # -- one trajectory per call: meet the group in the broker -------------------------------------
    async def _run_member(self, data: DataProto) -> dict:
        outcome, info = await self._score_row(data)
        uid = data.non_tensor_batch.get("uid")
        if uid is None or self.settings.tool_reward != "consensus":
            # only consensus needs the group: the other variants score a trajectory on its own
            return self._result(info, self._group_rewards([outcome]), 0, partial=False)

        member_id = uuid.uuid4().hex
        expected = self._expected_group_size(data.non_tensor_batch.get("extra_info", [None])[0])
        payload = {"base_score": outcome.base_score, "acc": outcome.acc, "boxes": list(outcome.boxes)}
        joined = await self._get_broker().join.remote(
            str(uid[0]), member_id, payload, expected, self.settings.group_timeout_s
        )
        if joined["partial"]:
            logger.warning(
                "medvr_cca: group %s scored with %d of %d members (%s)",
                uid[0],
                len(joined["members"]),
                expected,
                "late arrival" if joined["late"] else "timed out",
            )
        members = [
            MemberOutcome(p["base_score"], p["acc"], [(int(k), tuple(b)) for k, b in p["boxes"]])
            for _, p in joined["members"]
        ]
        me = [mid for mid, _ in joined["members"]].index(member_id)
        return self._result(info, self._group_rewards(members), me, partial=joined["partial"])

    def _group_rewards(self, members: list[MemberOutcome]) -> GroupRewards:
        s = self.settings
        return group_rewards(members, s.tool_reward, s.eta, s.w_tool, quorum=s.quorum)

    def _expected_group_size(self, extra_info: Any) -> int:
        split = extra_info.get("split") if isinstance(extra_info, dict) else None
        if isinstance(split, str) and split.lower() in VALIDATION_SPLITS:
            return self.val_group_size
        return self.train_group_size

    def _get_broker(self):
        if self._broker is None:
            from medvr_verl.group_broker import get_group_broker

            self._broker = get_group_broker()
        return self._broker

    # -- one trajectory's own score ------------------------------------------------------------------
    async def _score_row(self, data: DataProto) -> tuple[MemberOutcome, dict]:
        """Score one row: ``(outcome for the group, per-trajectory extra info)``."""
        item = data[0]
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        response_str = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(response_ids[:valid_length], skip_special_tokens=True)
        )
        non_tensor = item.non_tensor_batch
        extra_info = dict(non_tensor.get("extra_info", None) or {})
        tool_extra_fields = non_tensor.get("tool_extra_fields", None) or {}
        kwargs = dict(
            data_source=non_tensor.get("data_source", "unknown"),
            solution_str=response_str,
            ground_truth=non_tensor["reward_model"]["ground_truth"],
            extra_info=extra_info,
        )
        if self.compute_score is scoring.compute_score:
            kwargs["format_weight"] = self.settings.format_weight
            kwargs["format_mode"] = self.settings.format_mode
        if self.is_async_reward_score:
            result = await self.compute_score(**kwargs)
        else:
            result = await self.loop.run_in_executor(None, lambda: self.compute_score(**kwargs))

        if isinstance(result, dict):
            base = float(result["score"])
            acc = float(result.get("acc", base))
            info = {k: v for k, v in result.items() if k != "score"}
        else:
            base = acc = float(result)
            info = {}
        boxes, num_invalid, source = trajectory_boxes(tool_extra_fields, response_str, self.settings.tool_name)
        index = extra_info.get("index", -1)
        info.update(
            acc=acc,
            num_zoom=len(boxes),
            num_zoom_invalid=num_invalid,
            boxes_from_text=source == "text",
            zoom_boxes_json=json.dumps([[k, *box] for k, box in boxes]),
            group_uid=str(non_tensor.get("uid", "")),
            sample_index=int(index) if isinstance(index, int | np.integer) else -1,
        )
        info[_GT_BOXES] = gt_boxes_of(extra_info)
        return MemberOutcome(base_score=base, acc=acc, boxes=boxes), info

    def _result(self, info: dict, group: GroupRewards, member: int, partial: bool) -> dict:
        """veRL's reward result of one member; every member's extra info has the same keys.

        With annotated boxes (``extra_info.gt_boxes``) it also carries the consensus monitor
        (:func:`medvr_verl.consensus.gt_agreement`: ``cca_gt_iou``, ``cca_gt_hit``, ``zoom_gt_iou``,
        ``zoom_gt_hit``; NaN where undefined), which the V1 worker turns into ``medvr/...`` metrics."""
        reward = group.members[member]
        info = dict(info)
        gt = info.pop(_GT_BOXES, [])
        if info.get("boxes_from_text"):
            gt = []  # boxes in the model's image space, gt boxes in the original's: not comparable
        zooms = [(int(z[0]), tuple(z[1:])) for z in json.loads(info.get("zoom_boxes_json", "[]"))]
        monitor = gt_agreement(group.consensus, zooms, gt, self.settings.eta)
        info = {
            **info,
            **monitor,
            "tool_reward": reward.tool_reward,
            "cca_iou": reward.iou,
            "cca_in_quorum": reward.in_quorum,
            "cca_quorum_size": group.quorum_size,
            "cca_group_size": len(group.members),
            "cca_partial_group": partial,
            "cca_consensus_json": json.dumps([[k, *box] for k, box in group.consensus]),
        }
        info.setdefault("format", 0.0)
        return {"reward_score": reward.reward, "reward_extra_info": info}
