"""Rollout server ``medvr_vllm``: veRL's vLLM server that also returns per-token entropy.

Select with ``actor_rollout_ref.rollout.name=medvr_vllm`` (needs the ``[vllm]`` extra and a GPU).

veRL's vLLM server asks the engine for the sampled token's logprob only (``logprobs=0``). EVR needs
each generated token's entropy. This server asks for the top ``k`` logprobs of every position in the
same request (``actor_rollout_ref.rollout.custom.evr.top_k``, default 20): no extra generation pass,
the engine already holds the full distribution when it samples. It estimates the entropy per token
with :func:`medvr_verl.entropy.topk_entropy` and returns it as ``TokenOutput.extra_fields
["token_entropy"]``, which ``medvr_agent`` records. Everything else is veRL's vLLM server.

Caveat: parts of veRL 0.9.1 switch on ``rollout.name == "vllm"`` (request priority, the
``delta_sharded`` checkpoint backend, PD disaggregation); under ``medvr_vllm`` they take their
non-vLLM path. The engine-side adapter is veRL's vLLM ``ServerAdapter``.

vLLM is imported only when veRL builds a ``medvr_vllm`` replica, so this module imports cleanly
where vLLM is absent.
"""

from __future__ import annotations

from medvr_verl.entropy import TOKEN_ENTROPY_KEY as ENTROPY_KEY
from medvr_verl.entropy import topk_entropy

ROLLOUT_NAME = "medvr_vllm"
DEFAULT_TOP_K = 20


def configured_top_k(rollout_config) -> int:
    """``rollout.custom.evr.top_k`` of a RolloutConfig or DictConfig, else the default."""
    custom = getattr(rollout_config, "custom", None) or {}
    evr = custom.get("evr", None) or {}
    return int(evr.get("top_k", DEFAULT_TOP_K))


def position_entropies(position_logprobs) -> list[float]:
    """Per-token entropy from vLLM's ``CompletionOutput.logprobs`` (one ``{token: Logprob}`` per token)."""
    return [topk_entropy([lp.logprob for lp in position.values()]) for position in position_logprobs or []]


class _TopKEngine:
    """Wraps vLLM's engine client: every request asks for top-k logprobs; entropies are kept by id."""

    def __init__(self, engine, top_k: int):
        self._engine = engine
        self._top_k = top_k
        self.entropies: dict[str, list[float]] = {}

    def generate(self, *args, sampling_params, request_id, **kwargs):
        sampling_params.logprobs = max(self._top_k, sampling_params.logprobs or 0)
        return self._collect(
            self._engine.generate(*args, sampling_params=sampling_params, request_id=request_id, **kwargs), request_id
        )

    async def _collect(self, stream, request_id):
        final = None
        async for output in stream:
            final = output
            yield output
        if final is not None and final.outputs:
            self.entropies[request_id] = position_entropies(final.outputs[0].logprobs)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def load_replica_class():
    """Loader for ``RolloutReplicaRegistry``: builds the vLLM subclasses on first use."""
    import ray
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

    class MedVRvLLMHttpServer(vLLMHttpServer):
        async def generate(self, prompt_ids, sampling_params, request_id, **kwargs):
            if not isinstance(self.engine, _TopKEngine):
                self.engine = _TopKEngine(self.engine, configured_top_k(self.config))
            wants_logprobs = bool(sampling_params.get("logprobs", False))
            output = await super().generate(prompt_ids, dict(sampling_params), request_id, **kwargs)
            entropy = self.engine.entropies.pop(request_id, None)
            extra = {**output.extra_fields, ENTROPY_KEY: entropy}
            return output.model_copy(
                update={"extra_fields": extra, "log_probs": output.log_probs if wants_logprobs else None}
            )

    class MedVRvLLMReplica(vLLMReplica):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.server_class = ray.remote(MedVRvLLMHttpServer)

    return MedVRvLLMReplica


def register_rollout() -> None:
    """Make ``rollout.name=medvr_vllm`` known to veRL's replica and engine-adapter registries."""
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, load_replica_class)
    base._ROLLOUT_REGISTRY.setdefault((ROLLOUT_NAME, "async"), base._ROLLOUT_REGISTRY[("vllm", "async")])


register_rollout()
