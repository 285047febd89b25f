"""A rollout server that dies stops the run at once, with one line naming it.

veRL 0.9.1's V1 trainer treats a prompt group whose sessions raised as an ordinary ``failure``.
Its sync ``ReplayBuffer`` samples such groups anyway: with rows written it returns them and the
trainer's next call to the server (``sleep_replicas``) stops the run with Ray's multi-line
``ActorDiedError`` (about 6 s after the death on the tiny CPU run); with no rows at all it stops with
"selected terminal groups with no materializable trajectories. Enable
trainer.v1.sampler.sync_refill_failed_groups ..." (wrong cause, wrong advice).

When a session failed because the rollout server's Ray actor died (``ray.exceptions.ActorDiedError``
raised by ``server.generate.remote``), :class:`medvr_verl.agent_loop_tq.MedVRAgentLoopWorkerTQ` tags
the group and its rows with :data:`FATAL_TAG` (one line from :func:`server_death`) and
:mod:`medvr_verl.replay_buffer` raises :class:`RolloutServerDiedError` with that line instead of
returning such a batch or veRL's misleading error. (Without rows from the dead
server in the sampled batch, the sync trainer's next call to the server, ``sleep_replicas``, stops
the run with Ray's ``ActorDiedError``, which names the actor too.)

Not covered: with ``trainer.v1.sampler.sync_refill_failed_groups`` or an async trainer mode veRL
evicts failed groups (their tags with them) and refills fresh prompts, which fail in turn; each
failed group logs the line below, but nothing here stops the run (read from veRL's source, untested).
"""

from __future__ import annotations

import re

FATAL_TAG = "medvr_fatal"
"""TransferQueue tag of a prompt group whose rollout server died: the line to stop the run with."""


class RolloutServerDiedError(RuntimeError):
    """A rollout server's Ray actor died during generation; the run cannot go on."""


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"^\s*{name}: (\S+)", text, re.M)
    return match.group(1) if match else None


def server_death(errors, step=None) -> str | None:
    """One line naming the dead rollout server if one of ``errors`` (or its cause) is a Ray actor's
    death (``ActorDiedError``; a merely unavailable, restarting actor is not), else ``None``."""
    from ray.exceptions import ActorDiedError

    for error in errors:
        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            if isinstance(error, ActorDiedError):
                text = str(error)
                name = _field(text, "name") or "(unnamed)"
                cls = _field(text, "class_name") or "actor"
                pid = _field(text, "pid")
                during = "generation" if step is None else f"generation of step {step}"
                return (
                    f"medvr: rollout server {name} ({cls}{f', pid {pid}' if pid else ''}) died during {during}; "
                    "the run stops. Its Ray worker log says why; rerun with trainer.resume_mode=auto to "
                    "continue from the last checkpoint."
                )
            error = error.__cause__ or error.__context__
    return None


def raise_if_fatal(tags) -> None:
    """Raise :class:`RolloutServerDiedError` with the first :data:`FATAL_TAG` among TransferQueue ``tags``."""
    for tag in tags:
        if isinstance(tag, dict) and tag.get(FATAL_TAG):
            raise RolloutServerDiedError(tag[FATAL_TAG])


def raise_if_server_died(partition_id: str | None = None) -> None:
    """Raise :class:`RolloutServerDiedError` if a prompt group or row in TransferQueue carries :data:`FATAL_TAG`."""
    import transfer_queue as tq

    data = tq.kv_list(partition_id) if partition_id is not None else tq.kv_list()
    for items in (data or {}).values():
        raise_if_fatal((items or {}).values())
