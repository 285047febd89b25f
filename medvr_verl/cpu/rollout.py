"""Rollout ``medvr_cpu``: veRL's replica/adapter pair for the CPU rollout server.

veRL 0.9.1 splits a rollout backend in two, and this module supplies both halves:

* a :class:`~verl.workers.rollout.replica.RolloutReplica` (public ``RolloutReplicaRegistry``):
  :class:`CPURolloutReplica` starts one :class:`~medvr_verl.cpu.server.CPURolloutServer` Ray actor per
  replica, on the node of the replica's training worker, and hands its handle to veRL's load
  balancer; veRL's ``LLMServerClient`` then calls ``server.generate`` as it calls vLLM's.
* a :class:`~verl.workers.rollout.base.BaseRollout` in the training worker (veRL's rollout
  registry, ``(name, "async")``): :class:`CPUServerAdapter` is what veRL's weight sync calls.
  ``CheckpointEngineManager.update_weights`` (backend ``naive``) -> ``ActorRolloutRefWorker
  .update_weights`` -> ``adapter.update_weights(actor_engine.get_per_tensor_param())``: the
  adapter materialises the full tensors on CPU and sends them to its server in one Ray call (on a
  GPU, vLLM's adapter uses CUDA IPC instead). The trainer does this before the first rollout and
  after every policy update.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "medvr_cpu"


def server_actor_name(replica_rank: int) -> str:
    """The Ray name of a replica's server actor (per Ray job namespace)."""
    return f"medvr_cpu_server_{replica_rank}"


class CPURolloutReplica(RolloutReplica):
    """One CPU rollout server per replica (``tensor_model_parallel_size`` must be 1)."""

    async def launch_servers(self):
        from medvr_verl.cpu.server import CPURolloutServer

        if self.world_size != 1:
            raise ValueError(
                f"medvr_cpu serves one process per replica; set rollout tensor/data/pipeline parallel sizes "
                f"to 1 (world size {self.world_size})"
            )
        options: dict[str, Any] = {"name": server_actor_name(self.replica_rank), "num_cpus": 0}
        options["max_concurrency"] = self.max_concurrency
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = ray.remote(CPURolloutServer).options(**options).remote(
            config=self.config, model_config=self.model_config, replica_rank=self.replica_rank
        )
        await server.weight_state.remote()  # wait until the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}-{self.replica_rank}"

    def rollout_worker_use_gpu(self) -> bool:
        return False


class CPUServerAdapter(BaseRollout):
    """The training worker's end of veRL's weight sync for ``medvr_cpu`` (see the module docstring)."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self._has_server = rank % rollout_world_size == 0
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        """Send the actor's full weights (``(name, tensor)`` pairs) to this replica's server."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"medvr_cpu receives full named tensors, not {wire_format!r}")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("medvr_cpu: LoRA adapters are not supported; set model.lora.merge=true")
        # every rank walks the generator: FSDP gathers each full tensor collectively
        named = [(name, tensor.detach().to("cpu").clone()) for name, tensor in weights]
        if not self._has_server:
            return None
        return await self._server_handle().update_weights.remote(named, global_steps=kwargs.get("global_steps"))

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None


def _load_replica_class():
    return CPURolloutReplica


def register_rollout() -> None:
    """Make ``actor_rollout_ref.rollout.name=medvr_cpu`` known to veRL's two rollout registries."""
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica_class)
    base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.CPUServerAdapter"
