"""MedVR rollout on veRL's V1 trainer: EVR forks and whole-group CCA inside the TransferQueue worker.

Select with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=``
``medvr_verl.agent_loop_tq.MedVRAgentLoopManagerTQ``
(the MedVR recipes do). veRL's V1 worker (``verl/trainer/ppo/v1/agent_loop_tq.py``) already runs the
``n`` sessions of one prompt in one worker (``_run_prompt``), writes each finished session as rows
``{uid}_{session_id}_{index}`` and tags the uid ``finished``/``failure`` once every session settled.
:class:`MedVRAgentLoopWorkerTQ` keeps that contract and adds:

* **EVR** (training prompts on ``medvr_agent`` with ``n > 1``, ``rollout.custom.evr.enable``):
  sessions ``0 .. ceil(n/2)-1`` are base trajectories, ``ceil(n/2) .. n-1`` forks or fresh samples;
  exactly ``n`` sessions, ids ``0 .. n-1``. ``evr.mode: streaming`` (default): ``medvr_agent`` calls
  back right after a base generated a zoom call; the call is decided there
  (:func:`medvr_verl.entropy.decide_fork`) and a chosen one starts a fork at once from the base's
  state cut at its coordinates, while the base goes on (:class:`_StreamingEVRGroup`); slots left when
  every base settled are spent at once by ``evr.fallback``. ``evr.mode: two_phase``: forks wait for
  all bases, then :func:`medvr_verl.evr_plan.plan_group_forks` plans them. Validation and ``n = 1``
  run unforked. Fork state stays in this process (:data:`medvr_verl.agent_loop.TRAJECTORY_STORE`,
  :class:`medvr_verl.agent_loop.ForkState`).
* **Original images** of a ``medvr_agent`` prompt are read once (:class:`OriginalImages`, shared by
  its samples and forks, decoded in the zoom tool's executor, released when the group is done).
* **Whole-group CCA** (reward manager ``medvr_cca`` with streaming reward workers): finished sessions
  are held back; when all settled, the group goes to one reward worker in one call
  (``meta_info["medvr_group"]``), then the rows are written, already scored. Any other reward manager
  keeps veRL's per-session scoring and streaming writes. No reward is computed twice.
* **Lean rows**: the process-local :class:`~medvr_verl.trajectory.TrajectoryRecord` (per-token
  entropies, fork points) and the EVR kwargs never reach TransferQueue, nor does ``raw_prompt`` (its
  decoded images) once the reward is computed; only veRL's colocated reward path reads it from rows.

Every ``rollout.custom.viz.interval`` training steps, the first ``max_groups`` groups each worker
finishes are drawn to ``rollout.custom.viz.dir`` (zooms and consensus over the prompt's original
image, :func:`medvr_verl.viz.write_step_overlays`), off the event loop; drawing never fails a step.

Rollout statistics (reward parts, CCA, zoom counts, EVR, ``group_time_s`` from a group's start to
its last row, ``image_decodes`` per prompt) go into the rows' TransferQueue tags under
:data:`TAG_KEY`; :class:`medvr_verl.replay_buffer.MedVRReplayBuffer` turns the tags of each sampled
batch into ``medvr/...`` step metrics (V1's channel from rollout to the logger).

Failure: a session that raises is logged and leaves its group ``failure`` (veRL's ReplayBuffer still
samples the remaining rows; ``trainer.v1.sampler.sync_refill_failed_groups`` replaces such groups
instead). A failed base offers no fork points; forks planned from the other bases still run. A group
scored with a member missing is marked ``cca_partial_group``. A session that failed because the
rollout server's Ray actor died tags its group and rows :data:`medvr_verl.rollout_health.FATAL_TAG`; the
MedVR replay buffer stops the run with that one line (:mod:`medvr_verl.rollout_health`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import random
import time
from typing import Any

import numpy as np
import ray
import transfer_queue as tq
from verl.experimental.agent_loop import AgentLoopOutput
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ, apply_greedy_sampling_params

from medvr_verl.agent_loop import (
    BUDGET_OVERFLOW_KEY,
    RUNTIME_KWARGS,
    TRAJECTORY_STORE,
    cut_fork_state,
    is_medvr_agent,
)
from medvr_verl.config_check import check_settings
from medvr_verl.entropy import decide_fork, fill_forks, keyed_rng, prompt_key, qualifies
from medvr_verl.evr_plan import call_delta_h, plan_group_forks, record_fork_stats
from medvr_verl.group_reward import group_reward_data
from medvr_verl.reward_manager import GROUP_EXPECTED_KEY
from medvr_verl.rollout_health import FATAL_TAG, server_death
from medvr_verl.settings import EVRSettings
from medvr_verl.tools.image_io import OriginalImages
from medvr_verl.trajectory import FORK_KEY, RECORD_KEY, record_of

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

TAG_KEY = "medvr"
"""TransferQueue tag of a row: ``{name: number}`` (reward parts, fork flag) and, on a group's first row,
``"group": {name: [values]}`` (EVR statistics)."""

#: reward_extra_info entries copied into row tags (numbers only; see :mod:`medvr_verl.reward_manager`)
ROW_STATS = (
    "acc",
    "format",
    "tool_reward",
    "cca_iou",
    "cca_quorum_size",
    "cca_partial_group",
    "num_zoom",
    "num_zoom_invalid",
    "gt_unusable",
    # the consensus monitor (rows with annotated boxes only; NaN is skipped)
    "cca_gt_iou",
    "cca_gt_hit",
    "zoom_gt_iou",
    "zoom_gt_hit",
)

# veRL's Ray actor class cannot be subclassed; veRL itself unwraps it the same way.
_AgentLoopWorkerTQ = AgentLoopWorkerTQ.__ray_actor_class__


def scores_groups(config) -> bool:
    """Whether the configured reward manager scores a whole group in one call (``medvr_cca``)."""
    manager = config.reward.get("reward_manager", None) or {}
    return manager.get("name", None) == "medvr_cca"


class _EVRGroup:
    """One training prompt's EVR budget, two-phase: ``ceil(n/2)`` bases, then forks planned once from them."""

    streaming = False

    def __init__(
        self, uid: str, size: int, worker: MedVRAgentLoopWorkerTQ, stats: dict[str, list[float]], rng_key: tuple
    ):
        self.size = size
        self.rng_key = rng_key
        """``(seed, global step, prompt key)``: every draw of this group is keyed by it (:func:`keyed_rng`)."""
        self.num_base = math.ceil(size / 2)
        self.base_keys = [f"{uid}/base{i}" for i in range(self.num_base)]
        self._worker = worker
        self._stats = stats
        self._plan: asyncio.Task | None = None
        for key in self.base_keys:
            TRAJECTORY_STORE.expect(key)

    def session_kwargs_for_base(self, session_id: int) -> dict[str, Any]:
        return {"medvr_publish_key": self.base_keys[session_id]}

    async def session_kwargs_for_fork(self, session_id: int) -> dict[str, Any]:
        if self._plan is None:
            self._plan = asyncio.ensure_future(self._make_plan())
        choice = (await asyncio.shield(self._plan))[session_id - self.num_base]
        if choice is None:
            return {}
        base, call = choice
        mask = self._worker.evr.mask_fork_prefix
        return {"medvr_fork": {"source": self.base_keys[base], "call": call, "mask_prefix": mask}}

    async def _make_plan(self) -> list[tuple[int, int] | None]:
        results = await asyncio.gather(*[TRAJECTORY_STORE.expect(k) for k in self.base_keys], return_exceptions=True)
        states = [None if isinstance(r, BaseException) else r for r in results]
        worker = self._worker
        self._stats.setdefault("evr/streamed_forks", [0.0])
        rng = keyed_rng(*self.rng_key, "plan")
        return plan_group_forks(states, self.size - self.num_base, worker.evr, rng, self._stats)

    def close(self) -> None:
        for key in self.base_keys:
            TRAJECTORY_STORE.discard(key)


class _StreamingEVRGroup(_EVRGroup):
    """One training prompt's EVR budget, streaming: each zoom call of a base is decided when generated.

    A chosen call (:func:`medvr_verl.entropy.decide_fork`) takes the next fork session id at once and
    its fork starts from the base's state cut at that call (:func:`medvr_verl.agent_loop.cut_fork_state`)
    while the base goes on, as long as fork slots are left (first come, first served). When every
    base has settled, the slots left are spent at once by ``evr.fallback``
    (:func:`medvr_verl.entropy.fill_forks` over the finished bases' calls). Session ids stay
    ``0 .. n-1``: forks take ``ceil(n/2) ..`` in the order they start.
    """

    streaming = True

    def __init__(self, uid, size, worker, stats, rng_key, spawn):
        super().__init__(uid, size, worker, stats, rng_key)
        self._spawn = spawn  # spawn(session_id, kwargs): start a session task now
        self._next_session = self.num_base
        self._candidates: list[tuple[int, int, float]] = []  # (base, call, dH) in generation order
        self._chosen: list[int] = []  # indices into _candidates
        self._forks_from_calls = 0  # all forks (chosen calls and fallback slots)
        self._forks_qualified = 0  # forks at calls decide_fork chose (qualified dH)
        self._fresh = 0  # fallback slots spent on fresh samples

    def session_kwargs_for_base(self, session_id: int) -> dict[str, Any]:
        return {
            "medvr_publish_key": self.base_keys[session_id],
            "medvr_fork_hook": functools.partial(self._on_zoom_call, session_id),
        }

    def _on_zoom_call(self, base: int, agent_data, call: int) -> None:
        """``medvr_agent``'s hook, right after base ``base`` generated zoom call ``call``."""
        evr = self._worker.evr
        rng = keyed_rng(*self.rng_key, "call", base, call)  # the same decision whichever base comes first
        dh = call_delta_h(record_of(agent_data.extra_fields), call, evr)
        self._candidates.append((base, call, dh))
        if not decide_fork(dh, p_base=evr.p_base, gamma=evr.gamma, threshold=evr.threshold, rng=rng):
            return
        self._chosen.append(len(self._candidates) - 1)
        if self._next_session < self.size:
            self._start_fork(cut_fork_state(agent_data, call), qualified=True)
            self._stats.setdefault("evr/streamed_forks", [0.0])[0] += 1

    def _start_fork(self, state, qualified: bool) -> None:
        session_id, self._next_session = self._next_session, self._next_session + 1
        record_fork_stats(self._stats, state.point)
        self._forks_from_calls += 1
        self._forks_qualified += int(qualified)
        fork = {"state": state, "mask_prefix": self._worker.evr.mask_fork_prefix}
        self._spawn(session_id, {"medvr_fork": fork})

    async def finish(self) -> None:
        """After every base settled: spend the slots left by the fallback, then log the group's EVR stats."""
        results = await asyncio.gather(*[TRAJECTORY_STORE.expect(k) for k in self.base_keys], return_exceptions=True)
        finals = [None if isinstance(r, BaseException) else r for r in results]
        evr = self._worker.evr
        left = self.size - self._next_session
        if left > 0:
            # in (base, call) order, not arrival order: the fallback's draws do not depend on timing
            alive = sorted(
                (i for i, (b, _, _) in enumerate(self._candidates) if finals[b] is not None),
                key=lambda i: self._candidates[i][:2],
            )
            local = {i: j for j, i in enumerate(alive)}
            chosen = [local[i] for i in self._chosen if i in local]
            dhs = [self._candidates[i][2] for i in alive]
            rng = keyed_rng(*self.rng_key, "fallback")
            plan = fill_forks(chosen, dhs, len(chosen) + left, gamma=evr.gamma, fallback=evr.fallback, rng=rng)[
                len(chosen) :
            ]
            for j in plan:
                if j is None:  # a fresh, unforked sample
                    session_id, self._next_session = self._next_session, self._next_session + 1
                    self._fresh += 1
                    self._spawn(session_id, {})
                else:
                    base, call, _ = self._candidates[alive[j]]
                    self._start_fork(cut_fork_state(finals[base], call), qualified=False)
        num_forks = self.size - self.num_base
        slots = max(num_forks, 1)
        self._stats.setdefault("evr/delta_h", []).extend(c[2] for c in self._candidates)
        self._stats.setdefault("evr/fork_rate", []).append(self._forks_from_calls / slots)
        # where the fork slots went: forks at qualified (chosen) calls, forks the fallback placed,
        # fresh samples (fork_rate = qualified + fallback)
        self._stats.setdefault("evr/fork_rate_qualified", []).append(self._forks_qualified / slots)
        self._stats.setdefault("evr/fork_rate_fallback", []).append(
            (self._forks_from_calls - self._forks_qualified) / slots
        )
        self._stats.setdefault("evr/fresh_rate", []).append(self._fresh / slots)
        self._stats.setdefault("evr/qualified_points", []).append(
            sum(qualifies(c[2], evr.threshold, evr.gamma) for c in self._candidates)
        )
        self._stats.setdefault("evr/streamed_forks", [0.0])


class _PromptGroup:
    """What ``_run_prompt`` tracks for one uid: held-back members and the rows written."""

    def __init__(self, hold_for_group_reward: bool):
        self.hold = hold_for_group_reward
        self.members: list[tuple[list[AgentLoopOutput], dict]] = []
        self.row_keys: list[str] = []
        self.row_tags: list[dict] = []
        self.finals: list[AgentLoopOutput] = []  # each written session's last output
        self.stats: dict[str, list[float]] = {}


class MedVRAgentLoopWorkerTQ(_AgentLoopWorkerTQ):
    """veRL's V1 agent-loop worker with EVR forks, whole-group CCA and lean rows (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evr = EVRSettings.from_config(self.config)
        self.evr_seed = evr_seed(self.config)
        self.group_reward = scores_groups(self.config) and self.reward_loop_worker_handles is not None
        self._groups: dict[str, _PromptGroup] = {}
        custom = self.config.actor_rollout_ref.rollout.get("custom", None) or {}
        self.viz = dict(custom.get("viz", None) or {})
        self._viz_drawn: dict[int, int] = {}  # training step -> groups drawn by this worker

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        uid, validate = prompt["uid"], trajectory["validate"]
        started = time.monotonic()
        partition_id = "val" if validate else "train"
        await tq.async_kv_put(key=uid, partition_id=partition_id, tag={"status": "running"})
        group = self._groups[uid] = _PromptGroup(self.group_reward)
        evr_group: _EVRGroup | None = None
        originals: OriginalImages | None = None
        tasks: list[asyncio.Task] = []
        status = "failure"
        fatal: str | None = None
        try:
            rollout = self.config.actor_rollout_ref.rollout
            n = int(prompt.pop("__rollout_n__", rollout.val_kwargs.n if validate else rollout.n))
            run_params = dict(sampling_params)
            if not validate and not prompt.pop("__do_sample__", True):
                apply_greedy_sampling_params(run_params)
            prompt.pop("__do_sample__", None)
            shared: dict[str, Any] = {}
            medvr_prompt = is_medvr_agent(self._agent_name(prompt))
            if medvr_prompt:  # the prompt's originals, decoded once for all its samples
                originals = OriginalImages(list(prompt.get("raw_prompt") or []))
                shared["medvr_originals"] = originals

            def spawn(session_id: int, extra: dict) -> None:
                coro = self._run_agent_loop(
                    run_params, trajectory=trajectory, trace=trace, session_id=session_id, **prompt, **shared, **extra
                )
                tasks.append(asyncio.create_task(coro))

            if self._forks_group(prompt, n, validate, medvr_prompt):
                rng_key = (self.evr_seed, _plain_int(prompt.get("global_steps")), evr_prompt_key(prompt))
                if self.evr.mode == "streaming":
                    evr_group = _StreamingEVRGroup(uid, n, self, group.stats, rng_key, spawn)
                else:
                    evr_group = _EVRGroup(uid, n, self, group.stats, rng_key)
            if isinstance(evr_group, _StreamingEVRGroup):
                for i in range(evr_group.num_base):
                    spawn(i, evr_group.session_kwargs_for_base(i))
                errors = await _settle(list(tasks))  # bases (forks they started run on)
                await evr_group.finish()
                errors += await _settle(tasks[evr_group.num_base :])
            else:
                tasks.extend(
                    asyncio.create_task(
                        self._run_session(i, run_params, trajectory, trace, {**prompt, **shared}, evr_group)
                    )
                    for i in range(n)
                )
                errors = await _settle(tasks)
            if group.hold:
                try:
                    await self._score_and_write_group(group, n, validate)
                except Exception as e:
                    errors.append(e)
            fatal = server_death(errors, step=prompt.get("global_steps"))
            if group.row_keys:
                group.stats["group_time_s"] = [time.monotonic() - started]  # group start to its last row
                if originals is not None:  # images of this prompt read from their source (1 per image)
                    group.stats["image_decodes"] = [float(originals.decodes)]
                await self._tag_rows(group, partition_id, fatal)
            if not validate and not errors:
                await self._maybe_draw(prompt, group, originals)
            for error in errors:
                logger.error("medvr: session of uid=%s failed", uid, exc_info=(type(error), error, error.__traceback__))
            status = "failure" if errors else "finished"
        except Exception as e:
            logger.exception("medvr: rollout of uid=%s failed", uid)
            if tasks:
                await _settle(tasks)
            fatal = server_death([e], step=prompt.get("global_steps"))
        finally:
            self._groups.pop(uid, None)
            if evr_group is not None:
                evr_group.close()
            if originals is not None:
                originals.release()
        # terminal only after every row of the group is written (ReplayBuffer samples terminal groups)
        tag = {"status": status}
        if fatal:  # the rollout server died: medvr_verl.replay_buffer stops the run with this line
            logger.error(fatal)
            tag[FATAL_TAG] = fatal
        await tq.async_kv_put(key=uid, partition_id=partition_id, tag=tag)

    def _agent_name(self, prompt: dict) -> str:
        return prompt.get("agent_name", self.config.actor_rollout_ref.rollout.agent.default_agent_loop)

    def _forks_group(self, prompt: dict, n: int, validate: bool, medvr_prompt: bool) -> bool:
        if not self.evr.enable or validate or n < 2:
            return False
        if not medvr_prompt:
            logger.warning(
                "EVR needs agent loop 'medvr_agent'; uid %s uses %r and runs unforked",
                prompt["uid"],
                self._agent_name(prompt),
            )
            return False
        return True

    async def _run_session(self, session_id, sampling_params, trajectory, trace, prompt, evr_group):
        extra: dict[str, Any] = {}
        if evr_group is not None:
            if session_id < evr_group.num_base:
                extra = evr_group.session_kwargs_for_base(session_id)
            else:
                extra = await evr_group.session_kwargs_for_fork(session_id)
        return await self._run_agent_loop(
            sampling_params, trajectory=trajectory, trace=trace, session_id=session_id, **prompt, **extra
        )

    async def _agent_loop_postprocess(self, output, validate, **kwargs) -> None:
        for key in RUNTIME_KWARGS:
            kwargs.pop(key, None)
        outputs = output if isinstance(output, list) else [output]
        if not outputs:
            return await super()._agent_loop_postprocess(outputs, validate, **kwargs)
        for o in outputs:  # a new dict: a published base's AgentData still holds the record for its forks
            o.extra_fields = {k: v for k, v in o.extra_fields.items() if k != RECORD_KEY}
        group = self._groups.get(kwargs["uid"])
        if group is not None and group.hold:
            group.members.append((outputs, kwargs))
            return None
        await self._compute_score(outputs, kwargs=kwargs)
        await self._write_rows(group, outputs, validate, kwargs)

    async def _score_and_write_group(self, group: _PromptGroup, expected: int, validate: bool) -> None:
        if not group.members:
            return
        data = group_reward_data([(outputs[-1], kwargs) for outputs, kwargs in group.members])
        data.meta_info[GROUP_EXPECTED_KEY] = expected
        handle = random.choice(self.reward_loop_worker_handles)
        result = await handle.compute_score.remote(data)
        per_member = result.get("medvr_group_rewards")
        if per_member is None or len(per_member) != len(group.members):
            raise RuntimeError("reward manager medvr_cca did not return one reward per group member")
        for (outputs, kwargs), member in zip(group.members, per_member):
            outputs[-1].reward_score = member["reward_score"]
            outputs[-1].extra_fields["reward_extra_info"] = member["reward_extra_info"]
            await self._write_rows(group, outputs, validate, kwargs)

    async def _write_rows(self, group: _PromptGroup | None, outputs: list[AgentLoopOutput], validate, kwargs) -> None:
        """veRL's own write (scores already set, so it computes none), minus ``raw_prompt``."""
        if self.reward_loop_worker_handles is not None:
            kwargs = {k: v for k, v in kwargs.items() if k != "raw_prompt"}
        await super()._agent_loop_postprocess(outputs, validate, **kwargs)
        if group is not None:
            uid, session_id = kwargs["uid"], kwargs["session_id"]
            tag = _row_tag(outputs[-1])
            for i in range(len(outputs)):
                group.row_keys.append(f"{uid}_{session_id}_{i}")
                group.row_tags.append(tag)
            group.finals.append(outputs[-1])

    async def _maybe_draw(self, prompt: dict, group: _PromptGroup, originals: OriginalImages | None = None) -> None:
        """PNG overlay of this group's zooms and consensus, when ``rollout.custom.viz`` asks for it."""
        step = prompt.get("global_steps")
        if not self.viz.get("dir") or not isinstance(step, int) or step % int(self.viz.get("interval", 50)):
            return
        max_groups = int(self.viz.get("max_groups", 2))
        if self._viz_drawn.get(step, 0) >= max_groups:
            return
        records = []
        for output in group.finals:
            info = dict(output.extra_fields.get("reward_extra_info") or {})
            if output.reward_score is not None:
                info["score"] = float(output.reward_score)
            info["fork"] = output.extra_fields.get(FORK_KEY) is not None
            records.append(info)
        self._viz_drawn = {step: self._viz_drawn.get(step, 0) + 1}
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, _draw_group, self.viz["dir"], step, prompt, records, originals
            )
        except Exception:  # drawing must never cost a training step
            logger.exception("medvr: drawing step %s overlays failed", step)

    async def _tag_rows(self, group: _PromptGroup, partition_id: str, fatal: str | None = None) -> None:
        tags = [{TAG_KEY: dict(tag)} for tag in group.row_tags]
        if fatal:  # the rows reach the replay buffer after veRL cleared the group's own tag
            for tag in tags:
                tag[FATAL_TAG] = fatal
        if group.stats:
            tags[0][TAG_KEY]["group"] = {name: list(values) for name, values in group.stats.items()}
        await tq.async_kv_batch_put(keys=group.row_keys, partition_id=partition_id, tags=tags)


def _draw_group(out_dir: str, step: int, prompt: dict, records: list[dict], originals=None) -> None:
    from medvr_verl.viz import write_step_overlays

    if originals is None:
        originals = OriginalImages(list(prompt.get("raw_prompt") or []))
    images = [originals.get(i) for i in range(len(originals))]
    write_step_overlays(out_dir, step, [images], [records], 1)


def _row_tag(output: AgentLoopOutput) -> dict[str, float]:
    info = output.extra_fields.get("reward_extra_info") or {}
    tag = {}
    for name in ROW_STATS:
        value = info.get(name)
        if isinstance(value, bool | int | float | np.number) and math.isfinite(float(value)):
            tag[name] = float(value)
    tag["fork"] = float(output.extra_fields.get(FORK_KEY) is not None)
    tag["budget_overflow"] = float(bool(output.extra_fields.get(BUDGET_OVERFLOW_KEY)))
    return tag


def evr_seed(config) -> int:
    """``rollout.custom.evr.seed``, or veRL's ``actor_rollout_ref.rollout.seed`` when it is null."""
    seed = EVRSettings.from_config(config).seed
    if seed is None:
        seed = config.actor_rollout_ref.rollout.get("seed", 0)
    return int(seed or 0)


def evr_prompt_key(prompt: dict) -> str:
    """A prompt's identity across steps and runs (:func:`medvr_verl.entropy.prompt_key`; not the uid,
    which veRL draws anew every step)."""
    return prompt_key(prompt.get("index"), prompt.get("raw_prompt"))


def _plain_int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


async def _settle(tasks: list[asyncio.Task]) -> list[BaseException]:
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


class MedVRAgentLoopManagerTQ(AgentLoopManagerTQ):
    """veRL's V1 ``AgentLoopManagerTQ`` with :class:`MedVRAgentLoopWorkerTQ` workers.

    Refuses, before the first step, settings that cannot work on V1
    (:func:`medvr_verl.config_check.check_settings`: EVR under an async trainer mode, ``tool_reward:
    consensus`` without streaming reward workers). The recipes' Hydra callback runs the same check in
    the driver before anything starts.
    """

    worker_cls = MedVRAgentLoopWorkerTQ

    def __init__(self, config, *args, reward_loop_worker_handles=None, **kwargs):
        check_settings(config, reward_workers=reward_loop_worker_handles is not None)
        super().__init__(config, *args, reward_loop_worker_handles=reward_loop_worker_handles, **kwargs)
        self.agent_loop_workers_class = ray.remote(self.worker_cls)
