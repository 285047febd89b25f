"""``python -m medvr_verl``: is medvr-verl registered with the veRL of this environment?

Prints one line per piece and exits 1 when one is missing (e.g. ``VERL_USE_EXTERNAL_PLUGINS`` turned
plugins off, or the plugin is installed in another environment than veRL).
"""

from __future__ import annotations

import sys


def main() -> int:
    import verl  # loads the plugin through the verl.plugins entry point
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.experimental.reward_loop.reward_manager.registry import get_reward_manager_cls
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    import medvr_verl

    checks = {
        "agent loop medvr_agent": "medvr_agent" in _agent_loop_registry,
        "rollout server medvr_vllm": "medvr_vllm" in RolloutReplicaRegistry._registry,
    }
    try:
        checks["reward manager medvr_cca"] = get_reward_manager_cls("medvr_cca").__module__.startswith("medvr_verl")
    except Exception:
        checks["reward manager medvr_cca"] = False
    print(f"medvr-verl {medvr_verl.__version__} with veRL {verl.__version__}")
    for name, ok in checks.items():
        print(f"  {name}: {'registered' if ok else 'MISSING'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
