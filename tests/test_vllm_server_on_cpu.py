"""medvr_vllm without vLLM: registration with veRL's registries, and the top-k engine wrapper."""

import math
from types import SimpleNamespace

import pytest
import verl  # noqa: F401  (loads the plugin through the verl.plugins entry point)

from medvr_verl.entropy import topk_entropy
from medvr_verl.vllm_server import ROLLOUT_NAME, _TopKEngine, configured_top_k, position_entropies


def test_medvr_vllm_is_registered_with_veRL():
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    assert ROLLOUT_NAME in RolloutReplicaRegistry._registry
    assert base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] == base._ROLLOUT_REGISTRY[("vllm", "async")]


def _position(*logprobs):
    return {token: SimpleNamespace(logprob=lp) for token, lp in enumerate(logprobs)}


class _FakeEngine:
    """Stands in for vLLM's engine client: yields two partial outputs, the last with logprobs."""

    def __init__(self):
        self.seen_logprobs = None

    async def generate(self, prompt, sampling_params, request_id, **kwargs):
        self.seen_logprobs = sampling_params.logprobs
        positions = [_position(math.log(0.5), math.log(0.5)), _position(0.0)]
        yield SimpleNamespace(outputs=[SimpleNamespace(logprobs=positions[:1])])
        yield SimpleNamespace(outputs=[SimpleNamespace(logprobs=positions)])

    def other_method(self):
        return "forwarded"


@pytest.mark.asyncio
async def test_topk_engine_asks_for_k_logprobs_and_keeps_final_entropies():
    inner = _FakeEngine()
    engine = _TopKEngine(inner, top_k=20)
    params = SimpleNamespace(logprobs=0)
    outputs = [o async for o in engine.generate(prompt="p", sampling_params=params, request_id="r1")]
    assert len(outputs) == 2 and inner.seen_logprobs == 20
    assert engine.entropies["r1"] == pytest.approx([math.log(2), 0.0])
    assert engine.other_method() == "forwarded"


def test_position_entropies_and_top_k_config():
    assert position_entropies([_position(math.log(0.25))] * 2) == [topk_entropy([math.log(0.25)])] * 2
    assert position_entropies(None) == []
    assert configured_top_k(SimpleNamespace(custom={"evr": {"top_k": 5}})) == 5
    assert configured_top_k(SimpleNamespace(custom=None)) == 20
