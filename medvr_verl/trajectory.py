"""What one ``medvr_agent`` trajectory carries besides its tokens: one typed record, process-local.

``medvr_agent`` fills a :class:`TrajectoryRecord` as it runs (per assistant turn: where it starts and
its per-token entropy; per zoom call: the coordinate tokens and the state needed to fork there) and
keeps it in the trajectory's ``extra_fields`` under :data:`RECORD_KEY`. The EVR worker reads it to
plan forks, and the fork restores its state from the base's record. None of it is training data: the
V1 worker (:mod:`medvr_verl.agent_loop_tq`) takes it out before a row is written to TransferQueue and
leaves only :meth:`TrajectoryRecord.summary` (a few integers: was this a fork, from which call, how
many prefix tokens it shares).

The zoom tool's own records (``medvr_zoom_calls``: boxes in original-image pixels, the reward's input)
stay in ``extra_fields`` as the tool writes them; see :mod:`medvr_verl.tools.zoom`.

Units: token offsets count response tokens from the start of the response (``start``,
``coord_start``, ``coord_end``) or prompt + response tokens (``fork_prefix_len``); entropies are nats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RECORD_KEY = "medvr_trajectory"
"""``extra_fields`` key of a trajectory's :class:`TrajectoryRecord` (never written to TransferQueue)."""

FORK_KEY = "medvr_fork"
"""``extra_fields`` key of :meth:`TrajectoryRecord.summary`: ``None`` for a base, a small dict for a fork."""
FORCED_TOKENS_KEY = "medvr_forced_tokens"
"""``TokenOutput.extra_fields`` of a server turn: one 0/1 per returned token, 1 where the policy had
no choice (a constrained policy's template token: probability 1, so no policy gradient);
``medvr_agent`` gives those tokens ``response_mask`` 0 (``medvr_verl.cpu.constrained``)."""


@dataclass
class Turn:
    """One assistant turn: ``length`` generated tokens from response offset ``start``."""

    start: int
    length: int
    entropy: list[float] | None
    """Per-token entropy (nats), ``length`` values, when the server returns it; else ``None``."""


@dataclass
class ForkPoint:
    """A zoom call of a turn, and the trajectory state just before its coordinate tokens."""

    turn: int
    """Index into :attr:`TrajectoryRecord.turns`."""
    turn_start: int
    coord_start: int
    """First coordinate token, response offset."""
    coord_end: int
    """One past the last coordinate token, response offset."""
    fork_prefix_len: int
    """Prompt + response tokens before ``coord_start``: what a fork shares with its base."""
    num_images: int
    num_messages: int
    assistant_turns: int
    user_turns: int
    num_tool_rewards: int
    num_turn_scores: int
    num_zoom_records: int


@dataclass(frozen=True)
class ForkOrigin:
    """Where a fork left its base: zoom call ``call`` (index into the base's fork points)."""

    call: int
    turn: int
    prefix_tokens: int


@dataclass
class TrajectoryRecord:
    """Everything ``medvr_agent`` records about one trajectory beyond veRL's ``AgentData``."""

    turns: list[Turn] = field(default_factory=list)
    fork_points: list[ForkPoint] = field(default_factory=list)
    fork: ForkOrigin | None = None
    """Set when this trajectory is an EVR fork."""

    def coordinate_entropy(self, point: ForkPoint) -> list[float] | None:
        """Per-token entropy of ``point``'s coordinate tokens (``None`` without entropies)."""
        entropy = self.turns[point.turn].entropy
        if entropy is None:
            return None
        return entropy[point.coord_start - point.turn_start : point.coord_end - point.turn_start]

    def first_turn_entropy(self) -> list[float] | None:
        return self.turns[0].entropy if self.turns else None

    def cut_at(self, point_index: int) -> TrajectoryRecord:
        """The record of a fork that leaves this trajectory at fork point ``point_index``."""
        point = self.fork_points[point_index]
        return TrajectoryRecord(
            turns=list(self.turns[: point.turn]),
            fork_points=[p for p in self.fork_points if p.turn < point.turn],
            fork=ForkOrigin(call=point_index, turn=point.turn, prefix_tokens=point.fork_prefix_len),
        )

    def summary(self) -> dict | None:
        """What a training row keeps: ``None`` for a base, else ``{"call", "turn", "prefix_tokens"}``."""
        if self.fork is None:
            return None
        return {"call": self.fork.call, "turn": self.fork.turn, "prefix_tokens": self.fork.prefix_tokens}


def record_of(extra_fields: dict) -> TrajectoryRecord:
    """The trajectory's record in ``extra_fields``, created on first use."""
    record = extra_fields.get(RECORD_KEY)
    if record is None:
        record = extra_fields[RECORD_KEY] = TrajectoryRecord()
    return record
