"""The plugin registers with veRL on `import verl`: in a fresh process, in Ray workers, idempotently."""

import os
import subprocess
import sys

import pytest

CHECK = """
import verl
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.workers.rollout.replica import RolloutReplicaRegistry
from omegaconf import OmegaConf
print("medvr_cca" in REWARD_MANAGER, "medvr_agent" in _agent_loop_registry,
      "medvr_vllm" in RolloutReplicaRegistry._registry, OmegaConf.has_resolver("medvr.pkg_file"))
"""


def _run(env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_import_verl_registers_everything():
    assert _run() == ["True"] * 4


def test_veRL_plugin_policy_is_respected():
    assert _run({"VERL_USE_EXTERNAL_PLUGINS": "none"}) == ["False"] * 4
    assert _run({"VERL_USE_EXTERNAL_PLUGINS": "medvr"}) == ["True"] * 4


def test_register_is_idempotent():
    import medvr_verl

    medvr_verl.register()
    medvr_verl.register()
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    assert get_reward_manager_cls("medvr_cca").__name__ == "MedVRCCARewardManager"


def test_ray_workers_register_on_import_verl(ray_session):
    import ray

    @ray.remote
    def registered():
        import verl  # noqa: F401
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
        from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

        return "medvr_cca" in REWARD_MANAGER and "medvr_agent" in _agent_loop_registry

    assert ray.get(registered.remote())


@pytest.mark.parametrize(
    "module",
    [
        "medvr_verl.boxes",
        "medvr_verl.consensus",
        "medvr_verl.entropy",
        "medvr_verl.scoring",
        "medvr_verl.composite",
        "medvr_verl.tool_calls",
    ],
)
def test_pure_modules_import_neither_veRL_nor_torch(module):
    code = f"import sys, {module}; print('verl' in sys.modules or 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_registration_check_command():
    """``python -m medvr_verl`` (the README's registration check) reports every piece registered."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "medvr_verl"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("registered") == 3 and "MISSING" not in result.stdout
    env_off = subprocess.run(
        [sys.executable, "-m", "medvr_verl"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"},
    )
    assert env_off.returncode == 1 and "MISSING" in env_off.stdout
