"""The scripted server of the tests: :mod:`medvr_verl.cpu.scripted_client` plus a call recorder -- TEST FIXTURE.

:class:`~medvr_verl.cpu.scripted_client.ScriptedLLMClient` (veRL's ``LLMServerClient`` answering from
a script) lives in the CPU backend, whose ``scripted`` rollout policy runs it; it is re-exported here
for the tests and benchmarks. Test-only: :class:`CallRecorder`, a Ray actor that collects the call
records of client copies living in Ray workers (:func:`create_call_recorder`, :func:`get_call_records`).
"""

from __future__ import annotations

from typing import Any

from medvr_verl.cpu.scripted_client import (
    DEFAULT_MARKER_PATTERN,
    ScriptContext,
    ScriptedLLMClient,
    ScriptedTurn,
    ScriptEntry,
    ScriptExhaustedError,
)

__all__ = [
    "DEFAULT_MARKER_PATTERN",
    "CallRecorder",
    "ScriptContext",
    "ScriptEntry",
    "ScriptExhaustedError",
    "ScriptedLLMClient",
    "ScriptedTurn",
    "create_call_recorder",
    "get_call_records",
]


class CallRecorder:
    """Collects call records from :class:`ScriptedLLMClient` copies living in Ray actors.

    Create it with :func:`create_call_recorder` (a Ray actor) and pass the handle as
    ``ScriptedLLMClient(..., recorder=handle)``.
    """

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] = []

    def record(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def records(self, clear: bool = False) -> list[dict[str, Any]]:
        out = list(self._records)
        if clear:
            self._records.clear()
        return out

    def clear(self) -> None:
        self._records.clear()


def create_call_recorder(name: str | None = None):
    """Start a :class:`CallRecorder` Ray actor (``num_cpus=0``) and return its handle."""
    import ray

    options: dict[str, Any] = {"num_cpus": 0}
    if name is not None:
        options.update(name=name, get_if_exists=True)
    return ray.remote(CallRecorder).options(**options).remote()


def get_call_records(recorder, clear: bool = False) -> list[dict[str, Any]]:
    """Return the records collected by a recorder actor (in call order)."""
    import ray

    return ray.get(recorder.records.remote(clear))
