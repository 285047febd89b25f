"""veRL reward manager ``medvr_cca``: MedVR's composite reward with Consensus Credit Assignment.

``R = R_acc + R_format + 1(R_acc > 0) * w_tool * R_tool`` per trajectory, with ``R_tool`` computed
over the whole group of a prompt (same ``uid``). Select it with ``reward.reward_manager.name=medvr_cca``
and tune it under ``reward.reward_kwargs`` (veRL's place for reward-manager options)::

    reward:
      reward_manager: {source: register, name: medvr_cca}
      reward_kwargs:
        tool_reward: consensus   # none | unconditional | correct | consensus
        eta: 0.5                 # IoU threshold of CCA
        quorum: correct          # who votes in CCA (T+): correct (the paper's) | correct_with_box (ours)
        w_tool: 1.0
        format_weight: 0.1       # size of R_format (penalty: lost by a badly formatted response)
        format_mode: penalty     # penalty: R = acc - w * (1 - format); bonus: R = acc + w * format
        tool_name: image_zoom_in_tool
        scorer: auto             # auto | medvr | host: who scores a row's answer (below)
        group_size: null         # members per uid; null: rollout.n (val_kwargs.n for val splits)
        group_timeout_s: 600     # how long a member waits for the rest of its group
        val_splits: [test, val, valid, validation, eval, dev]  # extra_info.split names of validation rows

On a stock veRL config (no ``reward_kwargs`` node) each option is added with a ``+``:
``+reward.reward_kwargs.w_tool=0.5``.

The group reaches ``run_single`` in one of two ways:

* **Whole group in one call** (this plugin's V1 worker, :mod:`medvr_verl.agent_loop_tq`, through
  :func:`medvr_verl.group_reward.group_reward_data`): the data
  holds every member of one group and ``meta_info["medvr_group"]`` is set. The result carries each
  member's reward under ``"medvr_group_rewards"``; the top-level reward is the last row's, as veRL's
  convention for multi-row data expects.
* **One trajectory per call** (veRL's stock ``AgentLoopWorker``): members meet in a named Ray actor
  (:mod:`medvr_verl.group_broker`) keyed by ``uid`` until the group is complete. Failure behaviour
  is the broker's: missing members time out, late ones are scored against the sealed group.

Boxes come from the zoom tool's records in ``tool_extra_fields`` when the loop kept them
(``medvr_agent``), else from the hermes tool calls in the response text (:mod:`medvr_verl.tool_calls`).
Scoring (each row's base score, before CCA adds the tool reward): the scorer the host recipe would
use, called exactly as veRL's ``naive`` manager calls it (same arguments, same ``extra_info`` with
``num_turns``, ``rollout_reward_scores`` and the tool's extra fields, ``reward_router_address`` /
``reward_model_tokenizer`` when a reward model router exists), except for MedVR's own rows:

* a ``reward.custom_reward_function`` (or a ``compute_score`` other than veRL's default handed to
  the manager) scores every row;
* otherwise ``scorer: auto`` (default) scores rows of MedVR's data sources
  (:data:`MEDVR_DATA_SOURCES`, what ``python -m medvr_verl.data`` writes) with
  :func:`medvr_verl.scoring.compute_score` (``format_weight`` / ``format_mode`` from here) and every
  other row with veRL's ``default_compute_score`` (dispatched by ``data_source``: GSM8K, MATH, ...);
  ``scorer: medvr`` (the MedVR recipes) scores every row with MedVR's scorer; ``scorer: host``
  every row with veRL's.

``reward_extra_info`` keeps the scorer's dict (``score`` included) or ``acc`` for a plain number, as
``naive`` does, plus CCA's keys.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import uuid
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.utils.reward_score import default_compute_score

from medvr_verl import scoring
from medvr_verl.composite import GroupRewards, MemberOutcome, group_rewards
from medvr_verl.consensus import gt_agreement
from medvr_verl.ground_truth import ground_truth_problem
from medvr_verl.settings import (  # noqa: F401  (typed options; re-exported here)
    SCORERS,
    VALIDATION_SPLITS,
    CCARewardSettings,
)
from medvr_verl.tool_calls import trajectory_boxes

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

GROUP_META_KEY = "medvr_group"
GROUP_REWARDS_KEY = "medvr_group_rewards"
GROUP_EXPECTED_KEY = "medvr_group_expected"
"""meta_info key: how many members the group should have had (fewer arrived: a partial group)."""
TRAINING_SPLITS = ("train", "training")
MEDVR_DATA_SOURCES = frozenset(
    {"vqa_rad", "slake", "path_vqa", "pmc_vqa", "omnimedvqa", "medxpertqa_mm", "huatuo_eval"}
)
"""``data_source`` values MedVR's converters write (``medvr_verl.data``; a test keeps them equal)."""
_GT_BOXES = "_medvr_gt_boxes"  # carried from _score_row to _result only, never returned


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
        # the host recipe's scorer, as veRL's naive manager holds it
        self.compute_score = compute_score or default_compute_score
        self.is_async_reward_score = inspect.iscoroutinefunction(self.compute_score)
        self.reward_router_address = reward_router_address
        self.reward_model_tokenizer = reward_model_tokenizer
        custom = _select(config, "reward.custom_reward_function") or {}
        # the user chose a scorer: a custom function, or a caller's own compute_score
        self.host_scorer_chosen = bool(custom.get("path")) or not _is_verl_default(self.compute_score)
        self.train_group_size = self.settings.group_size or int(_select(config, "actor_rollout_ref.rollout.n") or 1)
        self.val_group_size = self.settings.group_size or int(
            _select(config, "actor_rollout_ref.rollout.val_kwargs.n") or 1
        )
        self._broker = None
        self._warned_splits: set[str] = set()
        self._warned_ground_truths: set[str] = set()

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
        name = split.lower() if isinstance(split, str) else None
        if name in self.settings.val_splits:
            return self.val_group_size
        if (
            self.val_group_size != self.train_group_size
            and name not in TRAINING_SPLITS
            and str(split) not in self._warned_splits
        ):
            self._warned_splits.add(str(split))
            logger.warning(
                "medvr_cca: extra_info.split=%r is no known split name: its groups wait for rollout.n=%d "
                "members. If these are validation rows (val_kwargs.n=%d), each group waits "
                "group_timeout_s=%s s: add the name to reward.reward_kwargs.val_splits, or set "
                "reward.reward_kwargs.group_size",
                split,
                self.train_group_size,
                self.val_group_size,
                self.settings.group_timeout_s,
            )
        return self.train_group_size

    def _get_broker(self):
        if self._broker is None:
            from medvr_verl.group_broker import get_group_broker

            self._broker = get_group_broker()
        return self._broker

    # -- one trajectory's own score ------------------------------------------------------------------
    def uses_medvr_scorer(self, data_source: Any) -> bool:
        """Whether a row of ``data_source`` is scored by MedVR's scorer (else by the host's)."""
        if self.host_scorer_chosen or self.settings.scorer == "host":
            return False
        return self.settings.scorer == "medvr" or data_source in MEDVR_DATA_SOURCES

    async def _score_row(self, data: DataProto) -> tuple[MemberOutcome, dict]:
        """Score one row: ``(outcome for the group, per-trajectory extra info)``."""
        item = data[0]
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        response_str = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(response_ids[:valid_length], skip_special_tokens=True)
        )
        non_tensor = item.non_tensor_batch
        row_extra_info = dict(non_tensor.get("extra_info", None) or {})
        tool_extra_fields = non_tensor.get("tool_extra_fields", None) or {}
        # what veRL's naive manager hands a reward function (verl/experimental/reward_loop/reward_manager/naive.py)
        extra_info = {**row_extra_info, **dict(tool_extra_fields.items())}
        extra_info["num_turns"] = non_tensor.get("__num_turns__", None)
        extra_info["rollout_reward_scores"] = non_tensor.get("reward_scores", {})
        data_source = non_tensor.get("data_source", "unknown")
        kwargs = dict(
            data_source=data_source,
            solution_str=response_str,
            ground_truth=non_tensor["reward_model"]["ground_truth"],
            extra_info=extra_info,
        )
        if self.reward_router_address is not None:
            kwargs["reward_router_address"] = self.reward_router_address
            kwargs["reward_model_tokenizer"] = self.reward_model_tokenizer
        if self.uses_medvr_scorer(data_source):
            fn = functools.partial(
                scoring.compute_score, format_weight=self.settings.format_weight, format_mode=self.settings.format_mode
            )
            result = await self.loop.run_in_executor(None, lambda: fn(**kwargs))
        elif self.is_async_reward_score:
            result = await self.compute_score(**kwargs)
        else:
            result = await self.loop.run_in_executor(None, lambda: self._host_score(kwargs))

        if isinstance(result, dict):
            base = float(result["score"])
            acc = float(result.get("acc", base))
            info = dict(result)  # "score" kept, as naive keeps it
        else:
            base = acc = float(result)
            info = {}
        boxes, num_invalid, source = trajectory_boxes(tool_extra_fields, response_str, self.settings.tool_name)
        index = row_extra_info.get("index", -1)
        problem = ground_truth_problem(kwargs["ground_truth"], row_extra_info)
        if problem is not None and problem.kind not in self._warned_ground_truths:
            self._warned_ground_truths.add(problem.kind)  # once per cause and process; counted in every row
            logger.warning(
                "medvr_cca: a row's answer can never score (data_source=%r, extra_info.index=%r): %s. Such rows "
                "are counted in medvr/gt_unusable/count (gt_unusable in reward_extra_info)",
                data_source,
                index,
                problem.message,
            )
        info.update(
            acc=acc,
            num_zoom=len(boxes),
            num_zoom_invalid=num_invalid,
            boxes_from_text=source == "text",
            zoom_boxes_json=json.dumps([[k, *box] for k, box in boxes]),
            gt_unusable=float(problem is not None),
            group_uid=str(non_tensor.get("uid", "")),
            sample_index=int(index) if isinstance(index, int | np.integer) else -1,
            # what the evaluation report reads from veRL's validation dump (trainer.validation_data_dir,
            # one JSON line per sample with every reward_extra_info key): medvr_verl.eval.dump
            data_source=str(data_source),
            question_type=str(row_extra_info.get("question_type") or ""),
        )
        info[_GT_BOXES] = gt_boxes_of(extra_info)
        return MemberOutcome(base_score=base, acc=acc, boxes=boxes), info

    def _host_score(self, kwargs: dict):
        try:
            return self.compute_score(**kwargs)
        except NotImplementedError as e:
            if not _is_verl_default(self.compute_score):
                raise
            raise NotImplementedError(
                f"{e}. medvr_cca scores a data_source veRL does not know with MedVR's scorer only when "
                "asked: set reward.reward_kwargs.scorer=medvr (+reward.reward_kwargs.scorer=medvr on a stock "
                "config), or give a reward.custom_reward_function"
            ) from e

    def _result(self, info: dict, group: GroupRewards, member: int, partial: bool) -> dict:
        """veRL's reward result of one member; every member's extra info has the same keys.

        With annotated boxes (``extra_info.gt_boxes``) it also carries the consensus monitor
        (:func:`medvr_verl.consensus.gt_agreement`: ``cca_gt_iou``, ``cca_gt_hit``, ``zoom_gt_iou``,
        ``zoom_gt_hit``; NaN where undefined), which the V1 worker turns into ``medvr/...`` metrics."""
        reward = group.members[member]
        info = dict(info)
        gt = info.pop(_GT_BOXES, [])
        info["gt_boxes_json"] = json.dumps(gt)  # as annotated (image 0 pixels), for the grounding report
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


def _is_verl_default(fn) -> bool:
    """Whether ``fn`` is veRL's ``default_compute_score`` (bare, or bound to sandbox arguments by veRL)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn is default_compute_score


def _select(config, path: str):
    """``config.<path>`` or ``None``: a full trainer config, a partial one (tests) or a plain dict."""
    node = config
    for key in path.split("."):
        if node is None:
            return None
        try:
            node = node.get(key, None)
        except AttributeError:
            return None
    return node
