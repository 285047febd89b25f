"""The GPU entropy test's pieces, checked on CPU against veRL's own code (``tests/vllm_reference.py``).

* its config composes, converts to veRL's ``RolloutConfig`` and passes ``LLMServerManager``'s
  standalone checks (``rollout.nnodes > 0``), one replica of the ``medvr_vllm`` class on one GPU;
* its Ray session has the CPUs veRL's standalone replica reserves (read from ``init_standalone``);
* its Hugging Face reference blocks exactly the tokens veRL's vLLM server blocks
  (``monkey_patch_compute_logits`` run on a stand-in model), and the tiny model's prompt fits.
"""

from __future__ import annotations

import asyncio
import math

import pytest
import verl  # noqa: F401  (loads the plugin)
from vllm_reference import (
    RAY_CPUS_FOR_ONE_REPLICA,
    TOP_K,
    blocked_token_ids,
    gpu_entropy_config,
    load_model_config,
    prompt_ids,
    ray_cpus,
    reference_scores,
)
from vllm_stub import stub_vllm

from medvr_verl.vllm_server import ROLLOUT_NAME, configured_top_k


@pytest.fixture(scope="module")
def config(tiny_model_path):
    return gpu_entropy_config(tiny_model_path)


@pytest.fixture(scope="module")
def model_config(config):
    return load_model_config(config)


def test_gpu_config_passes_veRLs_standalone_checks(config):
    from verl.utils.config import omega_conf_to_dataclass

    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    assert rollout.name == ROLLOUT_NAME and configured_top_k(rollout) == TOP_K
    assert rollout.logprobs_mode == "processed_logprobs"
    assert (rollout.temperature, rollout.top_p, rollout.top_k) == (1.0, 1.0, -1)
    with stub_vllm():
        from verl.workers.rollout.llm_server import LLMServerManager

        manager = LLMServerManager(config=config, worker_group=None, rollout_resource_pool=None)
        assert manager.rollout_replica_class.__name__ == "MedVRvLLMReplica"
        replica = manager.rollout_replica_class(
            replica_rank=0, config=manager.rollout_config, model_config=None, gpus_per_node=1
        )
        assert (replica.world_size, replica.nnodes, replica.gpus_per_replica_node) == (1, 1, 1)
        world = manager.rollout_config.n_gpus_per_node * manager.rollout_config.nnodes
        assert world // replica.world_size == 1  # _initialize_llm_servers: one replica


def test_gpu_ray_session_has_the_cpus_a_standalone_replica_takes(config, monkeypatch):
    """veRL's init_standalone reserves max_colocate_count CPUs per GPU bundle; actors need more."""
    from verl.workers.rollout import replica as replica_module

    seen = {}

    class Recorder:
        def __init__(self, resource_pool_spec, mapping, max_colocate_count):
            seen.update(spec=resource_pool_spec, colocate=max_colocate_count)
            raise RuntimeError("recorded")

    monkeypatch.setattr(replica_module, "ResourcePoolManager", Recorder)
    with stub_vllm():
        from verl.workers.rollout.replica import RolloutReplicaRegistry

        replica = RolloutReplicaRegistry.get(ROLLOUT_NAME)(
            replica_rank=0, config=config.actor_rollout_ref.rollout, model_config=None, gpus_per_node=1
        )
        with pytest.raises(RuntimeError, match="recorded"):
            asyncio.run(replica.init_standalone())
    bundles = [n for counts in seen["spec"].values() for n in counts]
    reserved = seen["colocate"] * sum(bundles)
    assert RAY_CPUS_FOR_ONE_REPLICA >= reserved + 2  # + the server actor and the load balancer
    assert ray_cpus() > RAY_CPUS_FOR_ONE_REPLICA  # + the driver


class _Model:
    def __init__(self, width):
        self.width = width

    def compute_logits(self, hidden):
        import torch

        return torch.zeros(hidden, self.width)


@pytest.mark.vl_stack
def test_reference_blocks_what_veRLs_vllm_server_blocks(model_config):
    import torch

    width = 448  # the tiny model's logits (vocab 448, tokenizer 430)
    with stub_vllm():
        from verl.workers.rollout.utils import get_vision_placeholder_token_ids
        from verl.workers.rollout.vllm_rollout.utils import monkey_patch_compute_logits

        model = _Model(width)
        # vLLMHttpServer.run_server's collective_rpc("monkey_patch_model", ...) arguments
        monkey_patch_compute_logits(
            model, len(model_config.tokenizer), get_vision_placeholder_token_ids(model_config.processor)
        )
        logits = model.compute_logits(1)[0]
    vllm_blocked = torch.nonzero(torch.isinf(logits)).flatten().tolist()
    assert vllm_blocked == blocked_token_ids(model_config, width)
    assert len(vllm_blocked) == (width - len(model_config.tokenizer)) + 2  # OOV tail + image/video pad


@pytest.mark.vl_stack
def test_reference_scores_on_the_tiny_model(model_config, config):
    import random

    prompt = prompt_ids(model_config.tokenizer)
    max_tokens = 24  # the GPU test's request
    assert len(prompt) + max_tokens <= config.actor_rollout_ref.rollout.prompt_length
    rng = random.Random(0)
    allowed = [t for t in range(len(model_config.tokenizer)) if t not in blocked_token_ids(model_config, 448)]
    tokens = [rng.choice(allowed) for _ in range(max_tokens)]
    ref = reference_scores(model_config, prompt, tokens)
    raw = reference_scores(model_config, prompt, tokens, block=False)
    assert len(ref["logprobs"]) == len(ref["estimate"]) == len(ref["exact"]) == max_tokens
    assert all(math.isfinite(x) for x in ref["logprobs"])
    for est, full, bound in zip(ref["estimate"], ref["exact"], ref["bound"]):
        assert est <= full + 1e-6 and full - est <= bound + 1e-6
    # without the ban the logprobs shift by a few hundredths: what made the old reference drift
    shift = max(abs(a - b) for a, b in zip(ref["logprobs"], raw["logprobs"]))
    assert 1e-3 < shift
