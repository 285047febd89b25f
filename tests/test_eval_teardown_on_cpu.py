"""evaluate()'s server teardown frees what a standalone replica reserved: actors and placement group."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.mark.usefixtures("ray_session")
def test_stop_servers_removes_the_replicas_placement_groups():
    import ray
    from ray.util.placement_group import placement_group, placement_group_table
    from verl.single_controller.ray.base import RayResourcePool

    from medvr_verl.eval.runner import _stop_servers

    name = "medvr_eval_teardown_pool:0"
    # veRL's standalone replica keeps its placement groups in replica.resource_pool.pgs
    pool = RayResourcePool(process_on_nodes=[1], use_gpu=False, max_colocate_count=1, name_prefix="medvr_eval")
    group = placement_group([{"CPU": 0.01}], name=name)
    ray.get(group.ready(), timeout=60)
    pool.pgs = [group]

    @ray.remote(num_cpus=0.01)
    class Worker:
        def ping(self):
            return "pong"

    strategy = ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(placement_group=group)
    worker = Worker.options(scheduling_strategy=strategy).remote()
    assert ray.get(worker.ping.remote(), timeout=60) == "pong"
    replica = SimpleNamespace(_server_handle=None, servers=[], workers=[worker], resource_pool=pool)
    hybrid = SimpleNamespace(_server_handle=None, servers=[], workers=[], resource_pool=None)
    manager = SimpleNamespace(global_load_balancer=None, get_replicas=lambda: [replica, hybrid])

    _stop_servers(manager)

    assert placement_group_table(group)["state"] == "REMOVED"
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(worker.ping.remote(), timeout=60)
    # the next evaluate() can reserve the same group again
    again = placement_group([{"CPU": 0.01}], name=name)
    ray.get(again.ready(), timeout=60)
    ray.util.remove_placement_group(again)


def test_eval_config_passes_veRLs_standalone_server_checks(tiny_model_path, monkeypatch):
    """build_eval_config's rollout section is what LLMServerManager.create needs for standalone vLLM."""
    from vllm_stub import stub_vllm

    from medvr_verl.eval import runner

    monkeypatch.setattr(runner, "_gpu_count", lambda: 2)
    config = runner.build_eval_config(tiny_model_path, [])
    with stub_vllm():
        from verl.workers.rollout.llm_server import LLMServerManager

        manager = LLMServerManager(config=config, worker_group=None, rollout_resource_pool=None)
        rollout = manager.rollout_config
        replica = manager.rollout_replica_class(
            replica_rank=0, config=rollout, model_config=None, gpus_per_node=rollout.n_gpus_per_node
        )
        # _initialize_llm_servers: one single-GPU replica per GPU
        assert rollout.n_gpus_per_node * rollout.nnodes // replica.world_size == 2
        assert replica.nnodes == 1
