"""Rollout managers and workers that keep each prompt's group together (veRL ``AgentLoopManager``).

Select with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=medvr_verl.rollout.GroupAgentLoopManager``.

veRL's stock manager cuts the batch into equal chunks, one per worker, so the ``rollout.n`` samples of a
prompt may land on two workers, and the stock worker scores every trajectory alone as it finishes.
:class:`GroupAgentLoopManager` cuts only between groups (runs of equal ``uid``), and
:class:`GroupAgentLoopWorker` holds each finished trajectory until its whole group has finished, then
asks the reward loop once for the group (``meta_info["medvr_group"]``, see
:mod:`medvr_verl.reward_manager`): no cross-process rendezvous and no waiting on timeouts.
Group reward statistics reach veRL's step metrics through the manager's timing dict
(``timing_s/medvr/...``, the one channel veRL 0.9.1 opens from rollout to the logger).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections import Counter
from typing import Any

import numpy as np
import ray
import torch
from tensordict import TensorDict
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopManager,
    AgentLoopOutput,
    AgentLoopWorker,
    _agent_loop_registry,
)
from verl.protocol import DataProto
from verl.utils.ray_utils import auto_await
from verl.utils.skip import SkipManager

from medvr_verl.agent_loop import RUNTIME_KWARGS, TRAJECTORY_STORE, MedVRAgentLoop
from medvr_verl.entropy import delta_h, keyed_rng, plan_forks_counted, prompt_key, qualifies
from medvr_verl.reward_manager import GROUP_META_KEY, GROUP_REWARDS_KEY
from medvr_verl.settings import EVR_MODES, EVRSettings  # noqa: F401  (re-exported: medvr_verl.rollout.EVRSettings)
from medvr_verl.trajectory import RECORD_KEY, record_of

EVR_SLOT_KEY = "medvr_evr_slot"
# Per-sample kwargs a group reward call leaves out: process-local ones, and the prompt's messages and
# images, which every member shares and the reward does not read (they would be pickled M times).
_NOT_SENT_TO_REWARD = frozenset(RUNTIME_KWARGS) | {EVR_SLOT_KEY, RECORD_KEY, "raw_prompt", "multi_modal_data"}

WORKER_STATS_KEY = "medvr_worker_stats"
"""meta_info key of a worker's step statistics: ``{name: [values]}``, merged by the manager."""

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

# Reward statistics of a step, logged as timing_s/medvr/<name>/mean.
_REWARD_STATS = ("acc", "format", "tool_reward", "cca_iou", "cca_quorum_size", "num_zoom", "num_zoom_invalid")


def group_spans(uids: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of equal uids, in order."""
    spans, start = [], 0
    for i in range(1, len(uids) + 1):
        if i == len(uids) or uids[i] != uids[start]:
            spans.append((start, i))
            start = i
    return spans


def split_groups(uids: np.ndarray, num_workers: int) -> list[tuple[int, int]]:
    """Cut ``[0, len(uids))`` into ``num_workers`` contiguous ranges at group boundaries.

    Greedy on sample counts: worker k gets groups until it reaches ``(k + 1) / num_workers`` of the
    batch. Ranges may be empty when there are fewer groups than workers.
    """
    spans = group_spans(uids)
    total = len(uids)
    bounds, k = [0], 1
    for _, end in spans:
        while k < num_workers and end >= total * k / num_workers:
            bounds.append(end)
            k += 1
    bounds += [total] * (num_workers + 1 - len(bounds))
    return [(bounds[i], bounds[i + 1]) for i in range(num_workers)]


class _PendingGroup:
    def __init__(self, size: int):
        self.size = size
        self.members: list[tuple[AgentLoopOutput, dict]] = []
        self.done = asyncio.Event()
        self.error: BaseException | None = None


class GroupAgentLoopWorker(AgentLoopWorker):
    """``AgentLoopWorker`` that scores the trajectories of one ``uid`` together, in one reward call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: dict[str, _PendingGroup] = {}

    async def generate_sequences(self, batch: DataProto) -> DataProto:
        uids = batch.non_tensor_batch.get("uid")
        if uids is not None and self.reward_loop_worker_handles is not None:
            # uids are fresh per step (veRL draws uuid4s), so groups of concurrent calls never collide.
            self._pending.update({uid: _PendingGroup(count) for uid, count in Counter(uids.tolist()).items()})
        return await super().generate_sequences(batch)

    async def _compute_score(self, outputs: list[AgentLoopOutput], kwargs: dict) -> None:
        group = self._pending.get(kwargs.get("uid"))
        if group is None or outputs[-1].reward_score is not None:
            return await super()._compute_score(outputs, kwargs)
        group.members.append((outputs[-1], kwargs))
        if len(group.members) == group.size:
            try:
                await self._score_group(group.members)
            except BaseException as e:  # every waiting member must see the failure, not hang
                group.error = e
            group.done.set()
            self._pending.pop(kwargs.get("uid"), None)
        await group.done.wait()
        if group.error is not None:
            raise group.error

    async def _score_group(self, members: list[tuple[AgentLoopOutput, dict]]) -> None:
        data = group_reward_data(members)
        handle = random.choice(self.reward_loop_worker_handles)
        result = await handle.compute_score.remote(data)
        per_member = result.get(GROUP_REWARDS_KEY)
        if per_member is None or len(per_member) != len(members):
            raise RuntimeError(
                "the reward manager did not return per-member rewards for a group; "
                "GroupAgentLoopManager needs reward.reward_manager.name=medvr_cca"
            )
        for (output, _), member in zip(members, per_member):
            output.reward_score = member["reward_score"]
            output.extra_fields["reward_extra_info"] = member["reward_extra_info"]


def group_reward_data(members: list[tuple[AgentLoopOutput, dict]]) -> DataProto:
    """The group as veRL's reward loop expects it: left-padded prompts, right-padded responses.

    No ``multi_modal_inputs``: rewards read text and tool records, never pixels, so the processor
    is not run again for scoring.
    """
    prompt_len = max(len(o.prompt_ids) for o, _ in members)
    response_len = max(len(o.response_ids) for o, _ in members)
    n = len(members)
    prompts = torch.zeros((n, prompt_len), dtype=torch.int64)
    responses = torch.zeros((n, response_len), dtype=torch.int64)
    attention_mask = torch.zeros((n, prompt_len + response_len), dtype=torch.int64)
    for i, (o, _) in enumerate(members):
        p, r = len(o.prompt_ids), len(o.response_ids)
        prompts[i, prompt_len - p :] = torch.tensor(o.prompt_ids, dtype=torch.int64)
        responses[i, :r] = torch.tensor(o.response_ids, dtype=torch.int64)
        attention_mask[i, prompt_len - p : prompt_len + r] = 1
    batch = TensorDict({"prompts": prompts, "responses": responses, "attention_mask": attention_mask}, batch_size=n)
    keys = set().union(*(kw.keys() for _, kw in members)) - _NOT_SENT_TO_REWARD
    non_tensor: dict[str, Any] = {}
    for key in keys:
        column = np.empty(n, dtype=object)
        column[:] = [kw.get(key) for _, kw in members]
        non_tensor[key] = column
    extra = np.empty(n, dtype=object)
    extra[:] = [{k: v for k, v in o.extra_fields.items() if k not in _NOT_SENT_TO_REWARD} for o, _ in members]
    non_tensor["tool_extra_fields"] = extra
    non_tensor["__num_turns__"] = np.array([o.num_turns for o, _ in members])
    return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info={GROUP_META_KEY: True})


class GroupAgentLoopManager(AgentLoopManager):
    """``AgentLoopManager`` that never splits a ``uid`` group across workers."""

    worker_cls: type[AgentLoopWorker] = GroupAgentLoopWorker

    def __init__(self, *args, **kwargs):
        if not hasattr(self, "agent_loop_workers_class"):
            self.agent_loop_workers_class = ray.remote(self.worker_cls)
        super().__init__(*args, **kwargs)

    @auto_await
    @SkipManager.annotate(role="rollout")
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        if "priority" not in prompts.non_tensor_batch:
            prompts.non_tensor_batch["priority"] = np.arange(len(prompts), dtype=np.int64)
        if "uid" in prompts.non_tensor_batch:
            ranges = split_groups(prompts.non_tensor_batch["uid"], len(self.agent_loop_workers))
        else:
            step = -(-len(prompts) // len(self.agent_loop_workers))
            ranges = [
                (min(i * step, len(prompts)), min((i + 1) * step, len(prompts)))
                for i in range(len(self.agent_loop_workers))
            ]
        jobs = [
            (worker, prompts.slice(start, end))
            for worker, (start, end) in zip(self.agent_loop_workers, ranges, strict=True)
            if end > start
        ]
        outputs = await asyncio.gather(*[worker.generate_sequences.remote(chunk) for worker, chunk in jobs])
        worker_stats = [o.meta_info.pop(WORKER_STATS_KEY, {}) for o in outputs]
        output = DataProto.concat(outputs)
        metrics = [o.meta_info.pop("metrics") for o in outputs]
        timing = self._performance_metrics(metrics, output)
        timing.update(reward_statistics(output))
        timing.update(merge_worker_stats(worker_stats))
        output.meta_info = {"timing": timing, **outputs[0].meta_info}
        self._maybe_write_overlays(prompts, output)
        return output

    def _maybe_write_overlays(self, prompts: DataProto, output: DataProto) -> None:
        """Every ``rollout.custom.viz.interval`` training steps, draw a few groups' zooms and consensus."""
        viz = dict((self.rollout_config.get("custom", None) or {}).get("viz", None) or {})
        step = prompts.meta_info.get("global_steps", -1)
        if not viz.get("dir") or prompts.meta_info.get("validate", False) or step < 0:
            return
        if step % int(viz.get("interval", 50)) != 0 or "rm_scores" not in output.batch.keys():
            return
        from medvr_verl.tools.image_io import OriginalImages
        from medvr_verl.viz import write_step_overlays

        keys = [k for k in output.meta_info.get("reward_extra_keys", []) if k in output.non_tensor_batch]
        scores = output.batch["rm_scores"].sum(-1).tolist()
        images, records = [], []
        for start, end in group_spans(prompts.non_tensor_batch["uid"])[: int(viz.get("max_groups", 2)) * 4]:
            originals = OriginalImages(list(prompts.non_tensor_batch["raw_prompt"][start]))
            images.append([originals.get(i) for i in range(len(originals))])
            records.append(
                [{**{k: output.non_tensor_batch[k][i] for k in keys}, "score": scores[i]} for i in range(start, end)]
            )
        try:
            write_step_overlays(viz["dir"], step, images, records, int(viz.get("max_groups", 2)))
        except Exception:  # drawing must never cost a training step
            logger.exception("medvr: writing step %s overlays failed", step)


def reward_statistics(output: DataProto) -> dict[str, float]:
    """Means of the ``medvr_cca`` extra info over a step's trajectories, keyed ``medvr/<name>/mean``."""
    stats = {}
    for name in _REWARD_STATS:
        values = output.non_tensor_batch.get(name)
        if values is not None and len(values):
            stats[f"medvr/{name}/mean"] = float(np.mean(values.astype(np.float64)))
    partial = output.non_tensor_batch.get("cca_partial_group")
    if partial is not None and len(partial):
        stats["medvr/cca_partial_group/count"] = float(np.sum(partial.astype(np.float64)))
    return stats


def merge_worker_stats(per_worker: list[dict[str, list[float]]]) -> dict[str, float]:
    """Workers' ``{name: [values]}`` into ``medvr/<name>/{mean,max,sum}`` over the whole step."""
    merged: dict[str, list[float]] = {}
    for stats in per_worker:
        for name, values in stats.items():
            merged.setdefault(name, []).extend(values)
    out = {}
    for name, values in merged.items():
        if values:
            out[f"medvr/{name}/mean"] = float(np.mean(values))
            out[f"medvr/{name}/max"] = float(np.max(values))
            out[f"medvr/{name}/sum"] = float(np.sum(values))
    return out


# --------------------------------------------------------------------------------------------------
# EVR: Entropy-guided Visual Regrounding
# --------------------------------------------------------------------------------------------------


class _EVRGroup:
    """One prompt's budget: ``num_base`` base samples first, then forks from their zoom calls."""

    def __init__(self, uid: str, size: int, rng_key: tuple = ()):
        self.size = size
        self.rng_key = rng_key  # (seed, global step, prompt key): see medvr_verl.entropy.keyed_rng
        self.num_base = math.ceil(size / 2)
        self.base_keys = [f"{uid}/base{i}" for i in range(self.num_base)]
        self.plan: asyncio.Task | None = None


def fork_candidates(base_states, settings: EVRSettings) -> list[tuple[int, int, float, int]]:
    """``(base, call, dH, coordinate offset)`` for every zoom call of the finished base trajectories.

    ``base_states`` are the bases' final ``AgentData`` (``None`` for a base that failed: it offers no
    fork point).
    """
    candidates = []
    for b, state in enumerate(base_states):
        if state is None:
            continue
        record = record_of(state.extra_fields)
        for c, point in enumerate(record.fork_points):
            candidates.append((b, c, call_delta_h(record, c, settings), point.coord_start))
    return candidates


def call_delta_h(record, call: int, settings: EVRSettings) -> float:
    """``dH`` of zoom call ``call`` of a trajectory's record; 0.0 when the server returned no entropies
    (every point then ties and the fallback spreads forks over them)."""
    first = record.first_turn_entropy()
    coords = record.coordinate_entropy(record.fork_points[call])
    if first is None or coords is None:
        return 0.0
    return delta_h(first, coords, settings.base_tokens, settings.tool_window)


def record_fork_stats(stats: dict[str, list[float]], point) -> None:
    """A started fork's depth (response tokens before its coordinates) and reused prefix (tokens)."""
    stats.setdefault("evr/fork_depth_tokens", []).append(point.coord_start)
    stats.setdefault("evr/prefix_tokens_reused", []).append(point.fork_prefix_len)


def plan_group_forks(
    base_states, num_forks: int, settings: EVRSettings, rng: random.Random, stats: dict[str, list[float]]
) -> list[tuple[int, int] | None]:
    """Each fork's ``(base, call)`` (``None``: a fresh sample), with EVR statistics added to ``stats``."""
    candidates = fork_candidates(base_states, settings)
    plan, num_chosen = plan_forks_counted(
        [c[2] for c in candidates],
        num_forks,
        p_base=settings.p_base,
        gamma=settings.gamma,
        threshold=settings.threshold,
        rng=rng,
        fallback=settings.fallback,
    )
    stats.setdefault("evr/delta_h", []).extend(c[2] for c in candidates)
    slots = max(num_forks, 1)
    stats.setdefault("evr/fork_rate", []).append(sum(p is not None for p in plan) / slots)
    # where the fork slots went (fork_rate = qualified + fallback): see _StreamingEVRGroup.finish
    stats.setdefault("evr/fork_rate_qualified", []).append(num_chosen / slots)
    stats.setdefault("evr/fork_rate_fallback", []).append(sum(p is not None for p in plan[num_chosen:]) / slots)
    stats.setdefault("evr/fresh_rate", []).append(sum(p is None for p in plan) / slots)
    stats.setdefault("evr/qualified_points", []).append(
        sum(qualifies(c[2], settings.threshold, settings.gamma) for c in candidates)
    )
    for p in plan:
        if p is not None:
            base, call, _, _ = candidates[p]
            record_fork_stats(stats, record_of(base_states[base].extra_fields).fork_points[call])
    return [None if p is None else (candidates[p][0], candidates[p][1]) for p in plan]


class EVRAgentLoopWorker(GroupAgentLoopWorker):
    """Runs ``ceil(M/2)`` base trajectories per prompt, then ``M - ceil(M/2)`` forks from their zoom calls.

    Always two-phase (``rollout.custom.evr.mode`` applies to the V1 worker only); ``gamma``,
    ``fallback`` and ``mask_fork_prefix`` apply as on V1.

    Needs ``medvr_agent`` (it records the fork points). Validation batches (``meta_info["validate"]``),
    groups of one, and other agent loops run unforked.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evr = EVRSettings.from_config(self.config)
        seed = self.evr.seed if self.evr.seed is not None else self.config.actor_rollout_ref.rollout.get("seed", 0)
        self._seed = int(seed or 0)
        self._evr_groups: dict[str, _EVRGroup] = {}
        self._evr_stats: dict[str, list[float]] = {}

    async def generate_sequences(self, batch: DataProto) -> DataProto:
        uids = batch.non_tensor_batch.get("uid")
        if not self.evr.enable or batch.meta_info.get("validate", False) or uids is None:
            return await super().generate_sequences(batch)

        agent_names = batch.non_tensor_batch.get("agent_name")
        slots, seen, first_row = np.zeros(len(batch), dtype=np.int64), Counter(), {}
        groups = {}
        for i, uid in enumerate(uids.tolist()):
            slots[i] = seen[uid]  # a sample's place in its group: the first ceil(M/2) are the bases
            seen[uid] += 1
            first_row.setdefault(uid, i)
        for uid, size in seen.items():
            default = self.rollout_config.agent.default_agent_loop
            name = agent_names[first_row[uid]] if agent_names is not None else default
            if size > 1 and is_medvr_agent(name):
                row = first_row[uid]
                index = batch.non_tensor_batch["index"][row] if "index" in batch.non_tensor_batch else None
                raw = batch.non_tensor_batch["raw_prompt"][row] if "raw_prompt" in batch.non_tensor_batch else None
                step = batch.meta_info.get("global_steps")
                step = int(step) if isinstance(step, (int, np.integer)) else -1
                groups[uid] = _EVRGroup(uid, size, (self._seed, step, prompt_key(index, raw)))
            elif size > 1:
                logger.warning("EVR needs agent loop 'medvr_agent'; group %s uses %r and runs unforked", uid, name)
        for group in groups.values():
            for key in group.base_keys:
                TRAJECTORY_STORE.expect(key)
        self._evr_groups.update(groups)
        self._evr_stats = {}
        batch.non_tensor_batch[EVR_SLOT_KEY] = slots
        try:
            output = await super().generate_sequences(batch)
        finally:
            batch.non_tensor_batch.pop(EVR_SLOT_KEY, None)
            for uid, group in groups.items():
                for key in group.base_keys:
                    TRAJECTORY_STORE.discard(key)
                self._evr_groups.pop(uid, None)
        output.non_tensor_batch.pop(EVR_SLOT_KEY, None)
        output.meta_info[WORKER_STATS_KEY] = self._evr_stats
        return output

    async def _run_agent_loop(self, sampling_params, trajectory, *, agent_name, trace=True, **kwargs):
        slot = kwargs.pop(EVR_SLOT_KEY, None)
        group = self._evr_groups.get(kwargs.get("uid")) if slot is not None else None
        if group is None:
            return await super()._run_agent_loop(
                sampling_params, trajectory, agent_name=agent_name, trace=trace, **kwargs
            )
        if slot < group.num_base:
            kwargs["medvr_publish_key"] = group.base_keys[slot]
        else:
            if group.plan is None:
                group.plan = asyncio.ensure_future(self._plan_group(group))
            choice = (await asyncio.shield(group.plan))[slot - group.num_base]
            if choice is not None:
                base, call = choice
                kwargs["medvr_fork"] = {
                    "source": group.base_keys[base],
                    "call": call,
                    "mask_prefix": self.evr.mask_fork_prefix,
                }
        return await super()._run_agent_loop(sampling_params, trajectory, agent_name=agent_name, trace=trace, **kwargs)

    async def _plan_group(self, group: _EVRGroup) -> list[tuple[int, int] | None]:
        """Wait for the base trajectories, then pick each fork's ``(base, call)`` (``None``: fresh)."""
        states = await asyncio.gather(*[TRAJECTORY_STORE.expect(key) for key in group.base_keys])
        rng = keyed_rng(*group.rng_key, "plan")  # no generator state between steps: a resumed run draws alike
        return plan_group_forks(states, group.size - group.num_base, self.evr, rng, self._evr_stats)


class EVRAgentLoopManager(GroupAgentLoopManager):
    """``AgentLoopManager`` for MedVR's EVR rollout; select it with
    ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=medvr_verl.rollout.EVRAgentLoopManager``."""

    worker_cls = EVRAgentLoopWorker


def is_medvr_agent(agent_name) -> bool:
    entry = _agent_loop_registry.get(str(agent_name))
    if entry is None:
        return False
    target = entry.get("_target_", "")
    try:
        from verl.utils.import_utils import load_class_from_fqn

        return issubclass(load_class_from_fqn(target, "agent loop"), MedVRAgentLoop)
    except Exception:
        return False
