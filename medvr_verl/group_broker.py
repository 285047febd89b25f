"""Rendezvous of a prompt's trajectories across Ray processes, for group-level rewards.

veRL's stock ``AgentLoopWorker`` scores each trajectory on its own, the moment it finishes, on a
randomly chosen ``RewardLoopWorker`` actor. Consensus Credit Assignment needs the whole group (same
``uid``). :class:`GroupBroker` is one named, async Ray actor per Ray namespace where the members of
a group meet: each member ``join``s with its payload and waits until ``expected`` members are there,
then all get the same member list and compute the same consensus.

Failure behaviour (documented in README):
- a member that never arrives: the group is sealed after ``timeout_s`` with the members present;
  each of them gets ``partial=True`` and CCA runs over that subset;
- a member arriving after its group was sealed (late, or a padding duplicate in validation) is
  scored against the sealed members plus itself, with ``partial=True``;
- sealed groups are forgotten ``retain_s`` seconds after sealing.

Waiting members cost nothing but an open call: the ``RewardLoopWorker`` actors are async, so a
waiting ``run_single`` does not block the others (Ray allows 1000 concurrent calls per async actor
by default, which bounds the number of trajectories one reward worker can hold waiting).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import ray

BROKER_NAME = "medvr_cca_group_broker"


@dataclass
class _Group:
    expected: int
    members: list[tuple[str, Any]] = field(default_factory=list)
    sealed_at: float | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def seal(self) -> None:
        if self.sealed_at is None:
            self.sealed_at = time.monotonic()
        self.complete.set()


class GroupBroker:
    """Collects the members of each group key until ``expected`` have joined or time runs out."""

    def __init__(self, retain_s: float = 3600.0):
        self._groups: dict[str, _Group] = {}
        self._retain_s = retain_s

    async def join(self, key: str, member_id: str, payload: Any, expected: int, timeout_s: float) -> dict:
        """Add a member and wait for its group.

        Returns ``{"members": [(member_id, payload), ...], "partial": bool, "late": bool}``; the
        member list is in arrival order and identical for every member of a complete group.
        """
        self._forget_old()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(expected=max(1, int(expected)))
        if group.sealed_at is not None:
            return {"members": [*group.members, (member_id, payload)], "partial": True, "late": True}

        group.members.append((member_id, payload))
        if len(group.members) >= group.expected:
            group.seal()
        else:
            try:
                await asyncio.wait_for(group.complete.wait(), timeout=timeout_s)
            except asyncio.TimeoutError:
                group.seal()
        return {"members": list(group.members), "partial": len(group.members) < group.expected, "late": False}

    def num_groups(self) -> int:
        """Groups currently held (open or recently sealed); for tests and debugging."""
        return len(self._groups)

    def _forget_old(self) -> None:
        now = time.monotonic()
        stale = [k for k, g in self._groups.items() if g.sealed_at is not None and now - g.sealed_at > self._retain_s]
        for key in stale:
            del self._groups[key]


def get_group_broker() -> ray.actor.ActorHandle:
    """The broker of the current Ray namespace, created by whichever process asks first."""
    return (
        ray.remote(GroupBroker)
        .options(name=BROKER_NAME, get_if_exists=True, num_cpus=0, max_concurrency=100_000)
        .remote()
    )
