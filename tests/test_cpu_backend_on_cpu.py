"""The CPU backend loads only when asked for (VERL_PLATFORM=cpu), and then fills veRL's CPU gaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json, sys
import verl
from verl.plugin.platform import PlatformRegistry, get_platform
out = {"loaded": "medvr_verl.cpu.platform" in sys.modules, "registered": "cpu" in PlatformRegistry.registered_names()}
if out["loaded"]:
    import torch
    import verl.utils.distributed as distributed
    import verl.workers.engine_workers as engine_workers
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import RolloutReplicaRegistry
    from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_torch_device

    out["device"] = get_device_name()
    out["device_id"] = get_device_id()
    out["backend"] = get_nccl_backend()
    out["tensor_to_device"] = str(torch.zeros(1).to(get_device_id()).device)
    out["rng"] = bool(torch.equal(get_torch_device().get_rng_state(), torch.get_rng_state()))
    out["engine"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
    out["pin_memory"] = transformer_impl.CPUOffloadPolicy().pin_memory
    wrapped = engine_workers.initialize_global_process_group_ray
    out["pg_wrapped"] = wrapped is distributed.initialize_global_process_group_ray
    out["replica"] = RolloutReplicaRegistry.get("medvr_cpu").__name__
    out["adapter"] = get_rollout_class("medvr_cpu", "async").__name__
    import os
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29561")
    distributed.initialize_global_process_group_ray()
    out["pg_backend"] = str(torch.distributed.get_backend())
    torch.distributed.destroy_process_group()
print("PROBE" + json.dumps(out))
"""


def _probe(**env):
    run_env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    run_env.update(env)
    result = subprocess.run([sys.executable, "-c", PROBE], env=run_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE"))
    return json.loads(line[len("PROBE") :])


def test_not_loaded_unless_asked_for():
    assert _probe() == {"loaded": False, "registered": False}


def test_verl_platform_cpu_loads_the_backend():
    out = _probe(VERL_PLATFORM="cpu")
    assert out["loaded"] and out["registered"]
    assert out["device"] == "cpu" and out["device_id"] == "cpu" and out["backend"] == "gloo"
    assert out["tensor_to_device"] == "cpu" and out["rng"]
    assert out["engine"] == "FSDPEngineWithLMHead"
    assert out["pin_memory"] is False
    assert out["pg_wrapped"] and out["pg_backend"] == "gloo"  # veRL's own function, not "cpu:gloo,cpu:gloo"
    assert out["replica"] == "CPURolloutReplica" and out["adapter"] == "CPUServerAdapter"
