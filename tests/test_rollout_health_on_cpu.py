"""``medvr_verl.rollout_health``: the one line a dead rollout server stops the run with (no Ray cluster).

The whole path (a ``medvr_cpu`` server killed during generation in a real ``main_ppo`` run) is
``tests/test_faults_main_ppo_on_cpu.py``.
"""

from __future__ import annotations

import pytest

ray_exceptions = pytest.importorskip("ray.exceptions")


def _died(name="medvr_cpu_server_0", pid=4242):
    from ray.core.generated.common_pb2 import ActorDiedErrorContext

    context = ActorDiedErrorContext(
        class_name="CPURolloutServer", actor_id=b"\x01" * 16, pid=pid, name=name,
        error_message="The actor is dead because its worker process has died.",
    )
    return ray_exceptions.ActorDiedError(context)


def test_names_the_dead_server_its_class_pid_and_step():
    from medvr_verl.rollout_health import server_death

    line = server_death([ValueError("unrelated"), _died()], step=3)
    assert line.startswith("medvr: rollout server medvr_cpu_server_0 (CPURolloutServer, pid 4242) died during")
    assert "generation of step 3" in line and "resume_mode=auto" in line and "\n" not in line


def test_finds_the_death_behind_a_wrapping_error():
    from medvr_verl.rollout_health import server_death

    try:
        try:
            raise _died()
        except Exception as e:
            raise RuntimeError("session failed") from e
    except RuntimeError as wrapped:
        assert "medvr_cpu_server_0" in server_death([wrapped])


def test_other_failures_are_not_a_dead_server():
    from medvr_verl.rollout_health import server_death

    unavailable = ray_exceptions.ActorUnavailableError("restarting", b"\x01" * 16)
    assert server_death([ValueError("bad row"), unavailable]) is None
    assert server_death([]) is None
