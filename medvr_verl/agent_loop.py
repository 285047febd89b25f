"""veRL agent loop ``medvr_agent``: the stock multi-turn tool loop plus what MedVR needs.

Select per sample with the parquet column ``agent_name=medvr_agent`` or for all samples with
``actor_rollout_ref.rollout.agent.default_agent_loop=medvr_agent``.

Everything veRL's :class:`~verl.experimental.agent_loop.tool_agent_loop.ToolAgentLoop` does stays as
it is (hermes tool parsing, image tool responses appended to the context, ``multi_turn`` turn and
call limits, the ``response_length`` budget: a tool response that would overflow it ends the
trajectory before its image tokens enter the context). On top, each trajectory's ``extra_fields``
(``tool_extra_fields`` downstream) carry:

``medvr_zoom_calls``
    one record per zoom call, written by :class:`medvr_verl.tools.ZoomInTool`: the box in the
    model's and in original-image pixels, the image it refers to, validity and error text. veRL
    downsizes prompt images to the processor's pixel budget before the model sees them; this loop
    hands the tool the images as the dataset stores them (``agent_data.medvr_originals``), so crops
    come from native resolution and boxes are kept in original-image pixels.
``medvr_trajectory``
    a :class:`medvr_verl.trajectory.TrajectoryRecord`: per assistant turn its response offset,
    length and per-token entropy (when the server returns it; see :mod:`medvr_verl.entropy`), and
    per executed zoom call a :class:`~medvr_verl.trajectory.ForkPoint` (its coordinate tokens and the
    state needed to fork there). A fork rebuilds its context from the finished trajectory's tokens,
    so no token is stored twice. Process-local: the V1 worker takes it out before writing a row.
``medvr_fork``
    ``None`` for a base trajectory, ``{"call", "turn", "prefix_tokens"}`` for an EVR fork.

Forks (EVR, :mod:`medvr_verl.agent_loop_tq`): a sample run with
``medvr_publish_key`` leaves its final state in :data:`TRAJECTORY_STORE` for the worker; one run with
``medvr_fork_hook`` reports each zoom call as soon as it is generated (streaming EVR). A sample run
with ``medvr_fork={"state": ForkState}`` (streaming: cut from the live base) or ``{"source": key,
"call": i}`` (two-phase: cut from the finished base) starts from the base cut at zoom call ``i``
(``"mask_prefix": True`` puts ``response_mask`` 0 on the response prefix it shares with its base):
the same messages, images, tokens,
response mask and rollout logprobs up to the call's coordinates, the same ``request_id`` (veRL's
sticky session sends it to the same server, whose prefix cache then holds the shared prefix), and
continues by sampling the coordinates anew.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from verl.experimental.agent_loop.agent_loop import _agent_loop_registry, register
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState, ToolAgentLoop

from medvr_verl.entropy import TOKEN_ENTROPY_KEY as ENTROPY_KEY
from medvr_verl.tool_calls import DEFAULT_TOOL_NAME, coordinate_char_spans
from medvr_verl.tools.image_io import OriginalImages
from medvr_verl.tools.zoom import ORIGINALS_ATTR, ZoomInTool
from medvr_verl.trajectory import FORCED_TOKENS_KEY, FORK_KEY, RECORD_KEY, ForkPoint, Turn, record_of

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))


BUDGET_OVERFLOW_KEY = "medvr_budget_overflow"
"""``extra_fields`` flag: the trajectory ended because a tool response would overflow ``response_length``."""

RUNTIME_KWARGS = ("medvr_publish_key", "medvr_fork", "medvr_fork_hook", "medvr_originals")
"""Per-sample kwargs the EVR worker passes to this loop; process-local, never sent to reward workers.

``medvr_fork_hook``: ``f(agent_data, call_index)`` called (synchronously, on the event loop) right
after a turn with zoom call ``call_index`` was generated, before the tool runs: streaming EVR decides
there and may start a fork from :func:`cut_fork_state`. ``medvr_originals``: the prompt's
:class:`~medvr_verl.tools.image_io.OriginalImages`, shared by all samples and forks of the prompt
(decoded once); without it each trajectory reads its own.
"""


@dataclass
class ForkState:
    """A trajectory cut right before the coordinates of its zoom call ``call``: what a fork starts from.

    Every list is a copy of a prefix, so the base may go on (streaming EVR) without changing it.
    """

    call: int
    messages: list
    image_data: list | None
    prompt_ids: list[int]
    """Prompt + response tokens up to the start of the forked turn."""
    turn_tokens: list[int]
    """The forked turn's tokens before the coordinates (sent as a pending prefix of the next request)."""
    turn_logprobs: list[float] | None
    turn_entropy: list[float] | None
    response_mask: list[int]
    response_logprobs: list[float]
    assistant_turns: int
    user_turns: int
    request_id: str
    mm_processor_kwargs: Any
    tool_rewards: list
    turn_scores: list
    extra_fields: dict
    point: ForkPoint


def cut_fork_state(base: AgentData, call_index: int) -> ForkState:
    """``base`` (live or finished ``AgentData`` of a ``medvr_agent`` trajectory) cut at zoom call ``call_index``."""
    record = record_of(base.extra_fields)
    point = record.fork_points[call_index]
    turn_abs_start = point.fork_prefix_len - (point.coord_start - point.turn_start)
    prefix_len = point.coord_start - point.turn_start
    extra = {k: v for k, v in base.extra_fields.items() if k != RECORD_KEY}
    for key, count in (("medvr_zoom_calls", point.num_zoom_records), ("medvr_image_provenance", point.num_images)):
        if key in extra:
            extra[key] = list(extra[key][:count])
    extra[RECORD_KEY] = record.cut_at(call_index)
    entropy = record.turns[point.turn].entropy
    return ForkState(
        call=call_index,
        messages=list(base.messages[: point.num_messages]),
        image_data=list(base.image_data[: point.num_images]) if base.image_data is not None else None,
        prompt_ids=list(base.prompt_ids[:turn_abs_start]),
        turn_tokens=list(base.prompt_ids[turn_abs_start : point.fork_prefix_len]),
        turn_logprobs=list(base.response_logprobs[point.turn_start : point.coord_start])
        if base.response_logprobs
        else None,
        turn_entropy=list(entropy[:prefix_len]) if entropy is not None else None,
        response_mask=list(base.response_mask[: point.turn_start]),
        response_logprobs=list(base.response_logprobs[: point.turn_start]),
        assistant_turns=point.assistant_turns,
        user_turns=point.user_turns,
        request_id=base.request_id,
        mm_processor_kwargs=base.mm_processor_kwargs,
        tool_rewards=list(base.tool_rewards[: point.num_tool_rewards]),
        turn_scores=list(base.turn_scores[: point.num_turn_scores]),
        extra_fields=extra,
        point=point,
    )


class TrajectoryStore:
    """Process-local hand-off of finished trajectories' state from agent loops to the EVR worker.

    The worker ``expect``s a key before it starts a base sample, the loop ``publish``es its final
    ``AgentData`` under that key when it finishes, and forks ``get`` it. Keys are dropped with
    ``discard`` when the worker's batch is done.
    """

    def __init__(self):
        self._futures: dict[str, asyncio.Future] = {}

    def expect(self, key: str) -> asyncio.Future:
        return self._futures.setdefault(key, asyncio.get_running_loop().create_future())

    def publish(self, key: str, state: AgentData) -> None:
        future = self.expect(key)
        if not future.done():
            future.set_result(state)

    def fail(self, key: str, error: BaseException) -> None:
        future = self.expect(key)
        if not future.done():
            future.set_exception(error)

    def get(self, key: str) -> AgentData:
        future = self._futures.get(key)
        if future is None or not future.done():
            raise KeyError(f"no finished trajectory {key!r} to fork from")
        return future.result()

    def discard(self, key: str) -> None:
        self._futures.pop(key, None)


TRAJECTORY_STORE = TrajectoryStore()


class _LastOutputClient:
    """Forwards to veRL's LLM client and keeps the last ``TokenOutput`` (one loop = one trajectory).

    For a fork, ``pending_prefix`` holds the forked turn's tokens up to the coordinates: the next
    request continues after them, and the returned turn is prefix + new tokens, so veRL's loop merges
    and parses the whole turn as if it had been generated in one go.
    """

    def __init__(self, client):
        self._client = client
        self.last_output = None
        self.pending_prefix: tuple[list[int], list[float] | None, list[float] | None] | None = None

    async def generate(self, *, prompt_ids: list[int], **kwargs):
        prefix, self.pending_prefix = self.pending_prefix, None
        if prefix is None:
            self.last_output = await self._client.generate(prompt_ids=prompt_ids, **kwargs)
            return self.last_output
        tokens, logprobs, entropy = prefix
        output = await self._client.generate(prompt_ids=list(prompt_ids) + tokens, **kwargs)
        extra = dict(output.extra_fields)
        new_entropy = extra.get(ENTROPY_KEY)
        extra[ENTROPY_KEY] = entropy + list(new_entropy) if entropy is not None and new_entropy is not None else None
        self.last_output = output.model_copy(
            update={
                "token_ids": tokens + list(output.token_ids),
                "log_probs": logprobs + list(output.log_probs) if logprobs is not None and output.log_probs else None,
                "extra_fields": extra,
            }
        )
        return self.last_output

    def __getattr__(self, name):
        return getattr(self._client, name)


@register("medvr_agent")
class MedVRAgentLoop(ToolAgentLoop):
    """ToolAgentLoop that records zoom boxes, per-token entropy and fork points of each trajectory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_manager = _LastOutputClient(self.server_manager)
        zoom_tools = [name for name, tool in self.tools.items() if name == DEFAULT_TOOL_NAME or _is_zoom_tool(tool)]
        self.zoom_tool_name = zoom_tools[0] if zoom_tools else DEFAULT_TOOL_NAME
        self._fork: dict | None = None
        self._fork_hook = None
        self._originals: OriginalImages | None = None
        self._masked_prefix: int | None = None  # a fork's prefix tokens to mask in its first turn
        self._agent_data: AgentData | None = None

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        publish_key = kwargs.pop("medvr_publish_key", None)
        self._fork = kwargs.pop("medvr_fork", None)
        self._fork_hook = kwargs.pop("medvr_fork_hook", None)
        self._originals = kwargs.pop("medvr_originals", None)
        try:
            output = await super().run(sampling_params, **kwargs)
        except BaseException as e:
            if publish_key is not None:
                TRAJECTORY_STORE.fail(publish_key, e)
            raise
        output.extra_fields[FORK_KEY] = record_of(output.extra_fields).summary()
        if publish_key is not None:
            TRAJECTORY_STORE.publish(publish_key, self._agent_data)
        return output

    async def _handle_pending_state(self, agent_data: AgentData, sampling_params: dict[str, Any]) -> AgentState:
        self._agent_data = agent_data
        # the zoom tool crops prompt images from these (decoded on first zoom, off the event loop),
        # not veRL's resized copies; shared by the prompt's samples and forks when the worker gives them
        originals = self._originals if self._originals is not None else OriginalImages(agent_data.messages)
        setattr(agent_data, ORIGINALS_ATTR, originals)
        if self._fork is None:
            return await super()._handle_pending_state(agent_data, sampling_params)
        state = self._fork.get("state")
        if state is None:  # two-phase: cut the finished base now
            state = cut_fork_state(TRAJECTORY_STORE.get(self._fork["source"]), int(self._fork["call"]))
        self._restore_fork(agent_data, state, mask_prefix=bool(self._fork.get("mask_prefix", False)))
        return AgentState.GENERATING

    def _restore_fork(self, agent_data: AgentData, state: ForkState, *, mask_prefix: bool = False) -> None:
        """Start ``agent_data`` from ``state`` (a base cut at a zoom call's coordinates).

        ``mask_prefix``: the response tokens shared with the base get ``response_mask`` 0 (the forked
        turn's part before the coordinates is masked once that turn is generated).
        """
        agent_data.messages = list(state.messages)
        agent_data.image_data = list(state.image_data) if state.image_data is not None else None
        agent_data.prompt_ids = list(state.prompt_ids)
        agent_data.response_mask = [0] * len(state.response_mask) if mask_prefix else list(state.response_mask)
        agent_data.response_logprobs = list(state.response_logprobs)
        agent_data.assistant_turns = state.assistant_turns
        agent_data.user_turns = state.user_turns
        agent_data.request_id = state.request_id
        agent_data.mm_processor_kwargs = state.mm_processor_kwargs
        agent_data.tool_rewards = list(state.tool_rewards)
        agent_data.turn_scores = list(state.turn_scores)
        extra = {k: list(v) if isinstance(v, list) else v for k, v in state.extra_fields.items()}
        extra[RECORD_KEY] = _copy_record(state.extra_fields[RECORD_KEY])
        agent_data.extra_fields = extra
        self._masked_prefix = len(state.turn_tokens) if mask_prefix else None
        self.server_manager.pending_prefix = (list(state.turn_tokens), state.turn_logprobs, state.turn_entropy)

    async def _handle_generating_state(
        self, agent_data: AgentData, sampling_params: dict[str, Any], ignore_termination: bool = False
    ) -> AgentState:
        turn_start = len(agent_data.response_mask)
        abs_start = len(agent_data.prompt_ids)
        before = {
            "num_images": len(agent_data.image_data or []),
            "num_messages": len(agent_data.messages),
            "assistant_turns": agent_data.assistant_turns,
            "user_turns": agent_data.user_turns,
            "num_tool_rewards": len(agent_data.tool_rewards),
            "num_turn_scores": len(agent_data.turn_scores),
            "num_zoom_records": len(agent_data.extra_fields.get("medvr_zoom_calls", [])),
        }
        state = await super()._handle_generating_state(agent_data, sampling_params, ignore_termination)
        if self._masked_prefix is not None:  # a fork's first turn: its shared part leaves the loss
            end = min(turn_start + self._masked_prefix, len(agent_data.response_mask))
            agent_data.response_mask[turn_start:end] = [0] * (end - turn_start)
            self._masked_prefix = None

        token_ids = list(agent_data.response_ids)
        entropy = agent_data.extra_fields.pop(ENTROPY_KEY, None)  # copied there from the first turn
        last = self.server_manager.last_output
        forced = last.extra_fields.get(FORCED_TOKENS_KEY) if last is not None else None
        if forced:  # tokens the server's policy did not choose leave the loss (the turn's last ones)
            first = turn_start + len(token_ids) - len(forced)
            for i, flag in enumerate(forced):
                if flag and turn_start <= first + i < len(agent_data.response_mask):
                    agent_data.response_mask[first + i] = 0
        if last is not None and last.extra_fields.get(ENTROPY_KEY) is not None:
            entropy = list(last.extra_fields[ENTROPY_KEY])
        if entropy is not None and len(entropy) != len(token_ids):
            logger.warning("server returned %d entropies for %d tokens; dropped", len(entropy), len(token_ids))
            entropy = None
        record = record_of(agent_data.extra_fields)
        record.turns.append(Turn(start=turn_start, length=len(token_ids), entropy=entropy))
        if state == AgentState.PROCESSING_TOOLS:
            calls = await self.loop.run_in_executor(None, self._coordinate_token_spans, token_ids)
            for coord_start, coord_end in calls[: self.max_parallel_calls]:
                record.fork_points.append(
                    ForkPoint(
                        turn=len(record.turns) - 1,
                        turn_start=turn_start,
                        coord_start=turn_start + coord_start,
                        coord_end=turn_start + coord_end,
                        fork_prefix_len=abs_start + coord_start,
                        **before,
                    )
                )
                if self._fork_hook is not None:  # streaming EVR: decide this call now, while the base goes on
                    try:
                        self._fork_hook(agent_data, len(record.fork_points) - 1)
                    except Exception:  # a failed fork decision must not end the base trajectory
                        logger.exception("medvr: EVR fork hook failed")
        return state

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        state = await super()._handle_processing_tools_state(agent_data)
        if state == AgentState.TERMINATED:
            # veRL's one early stop here: the tool response would overflow response_length, so the
            # trajectory ends before its answer (R_acc = 0). Counted, never silent.
            agent_data.extra_fields[BUDGET_OVERFLOW_KEY] = 1
            logger.warning(
                "medvr_agent: a tool response would overflow response_length=%d; the trajectory ends "
                "before its answer (raise data.max_response_length or lower the pixel budget)",
                self.response_length,
            )
        return state

    def _coordinate_token_spans(self, token_ids: list[int]) -> list[tuple[int, int]]:
        """Token spans ``[start, end)`` (turn offsets) of the zoom calls' coordinate arrays."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        return [
            (
                _char_to_token(self.tokenizer, token_ids, s, round_up=False),
                _char_to_token(self.tokenizer, token_ids, e, round_up=True),
            )
            for s, e in coordinate_char_spans(text, self.zoom_tool_name)
        ]


def _copy_record(record):
    """A fork's own record (its turns and points grow; the state may seed several forks)."""
    from medvr_verl.trajectory import TrajectoryRecord

    return TrajectoryRecord(turns=list(record.turns), fork_points=list(record.fork_points), fork=record.fork)


def _char_to_token(tokenizer, token_ids: list[int], char_pos: int, *, round_up: bool) -> int:
    """Index of the token holding character ``char_pos`` of ``decode(token_ids)`` (binary search).

    ``round_up=False``: the token that contains the character (start of a span); ``round_up=True``:
    the number of tokens needed to cover ``[0, char_pos)`` (end of a span).
    """
    lo, hi = 0, len(token_ids)
    # smallest i with len(decode(token_ids[:i])) > char_pos (start) or >= char_pos (end)
    while lo < hi:
        mid = (lo + hi) // 2
        length = len(tokenizer.decode(token_ids[:mid], skip_special_tokens=False))
        if length > char_pos or (round_up and length >= char_pos):
            hi = mid
        else:
            lo = mid + 1
    return lo if round_up else max(lo - 1, 0)


def _is_zoom_tool(tool) -> bool:
    return isinstance(tool, ZoomInTool)


def is_medvr_agent(agent_name) -> bool:
    """Whether the agent loop registered as ``agent_name`` is :class:`MedVRAgentLoop` or a subclass
    (EVR forks, and the data check's image requirement, apply to those only)."""
    entry = _agent_loop_registry.get(str(agent_name))
    if entry is None:
        return False
    target = entry.get("_target_", "")
    try:
        from verl.utils.import_utils import load_class_from_fqn

        return issubclass(load_class_from_fqn(target, "agent loop"), MedVRAgentLoop)
    except Exception:
        return False
