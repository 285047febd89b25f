"""EVR's fork plan for one prompt: which zoom calls of the finished base trajectories the forks start from.

Used by the V1 worker (:mod:`medvr_verl.agent_loop_tq`): ``evr.mode: two_phase`` plans a group's
forks with :func:`plan_group_forks` once every base finished; the streaming mode decides each zoom
call as it is generated with :func:`call_delta_h` and counts its forks with :func:`record_fork_stats`.
The decisions themselves (``dH``, qualification, the fallback) are pure math in
:mod:`medvr_verl.entropy`; this module reads their inputs off trajectory records.
"""

from __future__ import annotations

import random

from medvr_verl.entropy import delta_h, plan_forks_counted, qualifies
from medvr_verl.settings import EVRSettings
from medvr_verl.trajectory import record_of


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
