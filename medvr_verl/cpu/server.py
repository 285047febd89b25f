"""The CPU rollout server: a Hugging Face model in a Ray actor, answering veRL's LLM-client calls.

One :class:`CPURolloutServer` actor per replica (see :mod:`medvr_verl.cpu.rollout`). It answers
``generate(prompt_ids, sampling_params, request_id, image_data=...)`` exactly where veRL's
``LLMServerClient`` calls ``vLLMHttpServer.generate`` and returns the same ``TokenOutput``: the
response token ids (the stop token kept, as vLLM does), the sampled tokens' log-probs when
``sampling_params["logprobs"]`` asks for them, ``stop_reason="completed"`` and ``extra_fields`` with
``global_steps`` plus per-token entropy under :data:`medvr_verl.entropy.TOKEN_ENTROPY_KEY` (the top-k
estimate ``medvr_vllm`` returns, ``rollout.custom.evr.top_k``) and the exact full-vocabulary entropy
under ``token_entropy_exact``.

The model is the actor's: the server loads the checkpoint once to get the architecture, then veRL's
weight sync (:class:`medvr_verl.cpu.rollout.CPUServerAdapter`) replaces every parameter before the
first rollout and after every training step. Each sync is logged with a fingerprint of the weights
(and appended to ``rollout.custom.cpu.weight_log`` when set) so a run shows that rollouts use the
updated policy.

Policies (``rollout.custom.cpu.policy``):

* ``sampled``: the model writes the text: ancestral sampling honouring ``temperature``, ``top_p``
  and ``top_k`` (greedy when ``temperature`` is 0 or ``do_sample`` is false), stopping at the eos
  ids or the token budget vLLM would allow; vision placeholder tokens are never sampled.
* ``scripted``: a stand-in for random-weight demos. A script (``rollout.custom.cpu.script``, default
  :class:`medvr_verl.cpu.script.ZoomThenAnswer`) writes the text through
  :class:`medvr_verl.cpu.scripted_client.ScriptedLLMClient`'s rules (token budget, eos); the
  log-probs and entropies are still a real forward pass of the synced weights over prompt, images
  and those tokens. Every output carries ``extra_fields["medvr_cpu_policy"] = "scripted"`` and the
  server logs ``[medvr_cpu SCRIPTED]`` for every sync.
* ``constrained``: the model makes the decisions, a template writes the rest
  (:mod:`medvr_verl.cpu.constrained`): which grid cell of the image to zoom into and which answer
  to give are sampled token by token from the model's own distribution restricted to the
  candidates' tokens (``temperature`` honoured, greedy at 0); the fixed text is forced. A
  random-weight model trained from scratch can learn these decisions in minutes on a CPU
  (``medvr_verl.cpu.learning``). Log-probs are the model's full-vocabulary ones, as veRL's actor
  computes them; the exact full-vocabulary entropy goes under ``token_entropy_exact``. What goes to
  EVR under :data:`~medvr_verl.entropy.TOKEN_ENTROPY_KEY` is ``constrained.entropy``: ``policy``
  (default) the entropy of the distribution the token was actually drawn from (0 at a forced token,
  the restricted distribution's entropy at a decision), or ``model`` the full-vocabulary top-k
  estimate as the other policies report it (on a random model it is nearly flat, so EVR's dH
  carries no signal). Template tokens are returned flagged
  (:data:`~medvr_verl.trajectory.FORCED_TOKENS_KEY`) and ``medvr_agent`` gives them ``response_mask``
  0: under the constrained policy their probability is 1, so their policy gradient is 0, and only the
  decisions are trained (``constrained.train_forced: true`` trains the template too, under the
  model's full-vocabulary log-probs: on a random model those gradients swamp the decisions').
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from typing import Any

import torch

from medvr_verl.cpu.constrained import Choice, ConstrainedOptions, TokenTrie, plan_turn
from medvr_verl.cpu.script import IMAGE_SIZES  # the scripts' view of a request's image sizes
from medvr_verl.entropy import TOKEN_ENTROPY_KEY, topk_entropy
from medvr_verl.trajectory import FORCED_TOKENS_KEY

logger = logging.getLogger(__name__)

POLICIES = ("sampled", "scripted", "constrained")
DEFAULT_SCRIPT = "medvr_verl.cpu.script.ZoomThenAnswer"
POLICY_FIELD = "medvr_cpu_policy"
VISION_PLACEHOLDERS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")



def cpu_options(rollout_config) -> dict[str, Any]:
    """``rollout.custom.cpu`` of a RolloutConfig (``policy``, ``script``, ``weight_log``, ``seed``)."""
    custom = getattr(rollout_config, "custom", None) or {}
    options = dict(custom.get("cpu", None) or {})
    options.setdefault("policy", "sampled")
    options.setdefault("script", DEFAULT_SCRIPT)
    options.setdefault("weight_log", None)
    options.setdefault("seed", 0)
    options["constrained"] = ConstrainedOptions.from_dict(options.get("constrained", None))
    if options["policy"] not in POLICIES:
        raise ValueError(f"rollout.custom.cpu.policy must be one of {POLICIES}, got {options['policy']!r}")
    return options


def ray_actor_name() -> str:
    """This process's Ray actor name (``medvr_cpu_server_<replica>``), or ``?`` outside an actor."""
    try:
        import ray

        return ray.get_runtime_context().get_actor_name() or "?"
    except Exception:  # not in a Ray actor (unit tests build the server in-process)
        return "?"


def weights_fingerprint(named_tensors) -> str:
    """A short hash of all parameters (names and float32 values), order-independent of dict order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class CPURolloutServer:
    """Ray actor (async): the rollout engine on CPU. See the module docstring."""

    def __init__(self, config, model_config, replica_rank: int = 0):
        from verl.utils.config import omega_conf_to_dataclass

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config)
        self.replica_rank = replica_rank
        self.options = cpu_options(self.config)
        self.policy = self.options["policy"]
        self.global_steps: int | None = None
        self.weight_version = 0
        self.fingerprint: str | None = None
        self._lock = threading.Lock()
        self._model = None
        self._processor = None
        self._scripted = None
        self._generator = torch.Generator().manual_seed(int(self.options["seed"]) + replica_rank)
        self._announced_version: int | None = None  # the weights the last "generating" line named
        self._load()

    # -- model -----------------------------------------------------------------------------------
    def _load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = self.model_config.local_path
        self._processor = AutoProcessor.from_pretrained(path, trust_remote_code=self.model_config.trust_remote_code)
        self._model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=self.model_config.trust_remote_code
        ).eval()
        # Sampling follows the request alone, as veRL's vLLM server does (veRL always sends temperature,
        # top_p, top_k): HF's generate() would fill unset or default-valued fields from the checkpoint's
        # generation_config.json (Qwen2.5-VL ships top_k=1, top_p=0.001 there), so keep only its stop ids.
        from transformers import GenerationConfig

        shipped = self._model.generation_config
        eos = shipped.eos_token_id
        self._shipped_eos = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        self._model.generation_config = GenerationConfig(
            pad_token_id=shipped.pad_token_id, bos_token_id=shipped.bos_token_id
        )
        self.fingerprint = weights_fingerprint(self._model.state_dict().items())
        self._log(f"loaded {path} (policy {self.policy}), weights {self.fingerprint}")

    def _log(self, message: str) -> None:
        label = "[medvr_cpu SCRIPTED]" if self.policy == "scripted" else f"[medvr_cpu {self.policy}]"
        print(f"{label} replica {self.replica_rank}: {message}", flush=True)

    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]], global_steps: int | None = None):
        """Load the actor's weights (veRL's weight sync, through :class:`CPUServerAdapter`)."""
        return await asyncio.to_thread(self._update_weights, named_tensors, global_steps)

    def _update_weights(self, named_tensors, global_steps):
        with self._lock:
            state = self._model.state_dict()
            unknown = [name for name, _ in named_tensors if name not in state]
            if unknown:
                raise KeyError(f"medvr_cpu: the actor sent weights the rollout model does not have: {unknown[:5]}")
            missing = sorted(set(state) - {name for name, _ in named_tensors})
            max_delta = 0.0
            with torch.no_grad():
                for name, tensor in named_tensors:
                    new = tensor.to(state[name].dtype)
                    if new.numel():
                        max_delta = max(max_delta, float((new - state[name]).abs().max()))
                    state[name].copy_(new)
            previous, self.fingerprint = self.fingerprint, weights_fingerprint(self._model.state_dict().items())
            self.weight_version += 1
            self.global_steps = global_steps
            record = {
                "replica": self.replica_rank,
                "version": self.weight_version,
                "global_steps": global_steps,
                "fingerprint": self.fingerprint,
                "previous": previous,
                "changed": previous != self.fingerprint,
                "max_abs_delta": max_delta,
                "num_tensors": len(named_tensors),
                "not_sent": missing,
                "policy": self.policy,
                "time": time.time(),
            }
        self._log(
            f"weights v{self.weight_version} from the actor (global_steps={global_steps}): {self.fingerprint}, "
            f"changed={record['changed']}, max |delta|={max_delta:.3g}, {len(named_tensors)} tensors"
        )
        if self.options["weight_log"]:
            os.makedirs(os.path.dirname(os.path.abspath(self.options["weight_log"])), exist_ok=True)
            with open(self.options["weight_log"], "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def weight_state(self) -> dict[str, Any]:
        return {"version": self.weight_version, "fingerprint": self.fingerprint, "global_steps": self.global_steps}

    # -- generation ----------------------------------------------------------------------------
    def _vision_inputs(self, image_data, mm_processor_kwargs: dict | None = None) -> dict[str, torch.Tensor]:
        """The images as the agent loop's processor saw them: the same ``mm_processor_kwargs`` (pixel
        budget), so the server has as many image tokens as the prompt holds."""
        if not image_data:
            return {}
        vision = self._processor.image_processor(
            images=list(image_data), return_tensors="pt", **dict(mm_processor_kwargs or {})
        )
        return {"pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}

    def _image_sizes(self, vision: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
        if "image_grid_thw" not in vision:
            return []
        patch = int(getattr(self._processor.image_processor, "patch_size", 14))
        return [(int(w) * patch, int(h) * patch) for _, h, w in vision["image_grid_thw"].tolist()]

    def _vision_token_ids(self) -> list[int]:
        """Vision placeholder tokens, never sampled: they are not text, a trained model gives them no
        mass, and veRL's position ids (Qwen2.5-VL ``get_rope_index``) fail on a response holding them
        -- which a random-weight model would otherwise produce."""
        tokenizer = self._processor.tokenizer
        ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDERS]
        return [int(i) for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id]

    def _eos_ids(self) -> list[int]:
        """Stop ids vLLM uses by default: the tokenizer's eos plus generation_config.json's."""
        ids = []
        tok_eos = self._processor.tokenizer.eos_token_id
        for value in ([tok_eos] if tok_eos is not None else []) + self._shipped_eos:
            if int(value) not in ids:
                ids.append(int(value))
        return ids

    def _token_budget(self, prompt_len: int, sampling_params: dict[str, Any]) -> int:
        """``vLLMHttpServer.generate``'s max_tokens rule."""
        max_possible = int(self.config.max_model_len or (self.config.prompt_length + self.config.response_length))
        max_possible -= prompt_len
        if max_possible < 1:
            raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate")
        if sampling_params.get("max_tokens") is not None:
            max_tokens = int(sampling_params["max_tokens"])
        elif sampling_params.get("max_new_tokens") is not None:
            max_tokens = int(sampling_params["max_new_tokens"])
        else:
            rl, pl = int(self.config.response_length), int(self.config.prompt_length)
            max_tokens = min(rl, pl + rl - prompt_len)
        return max(1, min(max_tokens, max_possible))

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ):
        """veRL's server call (same signature as ``vLLMHttpServer.generate``) -> ``TokenOutput``."""
        from verl.utils import normalize_token_ids
        from verl.workers.rollout.replica import TokenOutput

        if video_data:
            raise NotImplementedError("medvr_cpu: video inputs are not supported")
        prompt_ids = list(normalize_token_ids(prompt_ids))
        params = dict(sampling_params)
        if self._announced_version != self.weight_version:  # one line per rollout phase, not per request
            self._announced_version = self.weight_version
            self._log(
                f"generating with weights v{self.weight_version} (global_steps={self.global_steps}), "
                f"actor {ray_actor_name()} pid {os.getpid()}"
            )
        vision = await asyncio.to_thread(self._vision_inputs, image_data, kwargs.get("mm_processor_kwargs"))
        if self.policy == "scripted":
            token_ids = await self._scripted_tokens(request_id, prompt_ids, params, image_data, vision)
            logprobs, entropy, exact = await asyncio.to_thread(self._score, prompt_ids, token_ids, vision, params)
        elif self.policy == "constrained":
            token_ids, logprobs, entropy, exact, forced = await asyncio.to_thread(
                self._constrained, prompt_ids, params, vision
            )
        else:
            # the sampling passes' own logits, as vLLM reports them (no second pass: a random model
            # may sample vision placeholder tokens, which a fresh multimodal forward would reject)
            token_ids, logits = await asyncio.to_thread(self._sample, prompt_ids, params, vision)
            logprobs, entropy, exact = self._scores(logits, token_ids, params)
        extra = {
            "global_steps": self.global_steps,
            "num_cached_tokens": 0,
            TOKEN_ENTROPY_KEY: entropy,
            "token_entropy_exact": exact,
            POLICY_FIELD: self.policy,
            "medvr_cpu_weights": self.fingerprint,
        }
        if self.policy == "constrained" and not self.options["constrained"].train_forced:
            extra[FORCED_TOKENS_KEY] = forced
        return TokenOutput(
            token_ids=token_ids,
            log_probs=logprobs if params.get("logprobs") else None,
            stop_reason="completed",
            num_preempted=0,
            extra_fields=extra,
        )

    def _sample(self, prompt_ids: list[int], params: dict[str, Any], vision) -> tuple[list[int], torch.Tensor]:
        """Ancestral sampling with a KV cache (HF ``generate``): temperature, top-p, top-k, stop ids.

        Returns the token ids and the raw logits of each step (before temperature and filtering)."""
        from transformers import GenerationConfig

        max_tokens = self._token_budget(len(prompt_ids), params)
        temperature = float(params.get("temperature", 1.0))
        greedy = temperature <= 0 or params.get("do_sample", True) is False
        top_k = int(params.get("top_k", -1) or -1)
        stop = self._eos_ids() + [int(t) for t in (params.get("stop_token_ids") or [])]
        generation = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_p=None if greedy else float(params.get("top_p", 1.0)),
            top_k=None if greedy else max(top_k, 0),  # vLLM's -1 (off) is HF's 0
            eos_token_id=None if params.get("ignore_eos") else stop,
            pad_token_id=self._processor.tokenizer.pad_token_id,
            repetition_penalty=float(params.get("repetition_penalty", 1.0) or 1.0),
            suppress_tokens=self._vision_token_ids() or None,
        )
        inputs = {
            "input_ids": torch.tensor([prompt_ids]),
            "attention_mask": torch.ones(1, len(prompt_ids), dtype=torch.long),
        }
        with self._lock, torch.no_grad():
            # HF sampling draws from torch's global generator: seed it from the server's own stream
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self._generator)))
            out = self._model.generate(
                **inputs, **vision, generation_config=generation, output_logits=True, return_dict_in_generate=True
            )
        token_ids = [int(t) for t in out.sequences[0, len(prompt_ids) :].tolist()]
        logits = torch.stack([step[0] for step in out.logits])[: len(token_ids)]
        return token_ids, logits

    async def _scripted_tokens(self, request_id, prompt_ids, params, image_data, vision) -> list[int]:
        if self._scripted is None:
            from medvr_verl.cpu.script import build_scripted_client

            self._scripted = build_scripted_client(self.config, self.model_config, self.options["script"])
        token = IMAGE_SIZES.set(self._image_sizes(vision))
        try:
            output = await self._scripted.generate(
                request_id, prompt_ids=prompt_ids, sampling_params=params, image_data=image_data
            )
        finally:
            IMAGE_SIZES.reset(token)
        return list(output.token_ids)

    def _constrained(self, prompt_ids: list[int], params: dict[str, Any], vision):
        """One templated turn whose decisions the model samples (module docstring, ``constrained``).

        Returns token ids, their full-vocabulary log-probs, the EVR entropies, the exact entropies and
        the forced flags (1: a template token, 0: a token the model chose among several)."""
        options: ConstrainedOptions = self.options["constrained"]
        tokenizer = self._processor.tokenizer
        sizes = self._image_sizes(vision)
        context = tokenizer.decode(prompt_ids, skip_special_tokens=False)
        segments = plan_turn(context, sizes[0] if sizes else None, options)
        temperature = float(params.get("temperature", 1.0))
        greedy = temperature <= 0 or params.get("do_sample", True) is False

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        ids: list[int] = []
        drawn_entropy: dict[int, float] = {}  # position -> entropy of the restricted distribution
        for segment in segments:
            if not isinstance(segment, Choice):
                ids += encode(segment)
                continue
            trie, chosen = TokenTrie(segment.candidates, encode), []
            while allowed := trie.allowed(chosen):
                if len(allowed) > 1:
                    with self._lock, torch.no_grad():
                        inputs = {"input_ids": torch.tensor([prompt_ids + ids + chosen]), **vision}
                        logits = self._model(**inputs).logits[0, -1, allowed].float()
                    # greedy: the entropy at temperature 1, as the log-probs are (see _scores)
                    logp = torch.log_softmax(logits / (1.0 if greedy else temperature), dim=-1)
                    drawn_entropy[len(ids) + len(chosen)] = float(-(logp.exp() * logp).sum())
                    if greedy:
                        pick = int(logp.argmax())
                    else:
                        pick = int(torch.multinomial(logp.exp(), 1, generator=self._generator))
                    chosen.append(allowed[pick])
                else:
                    chosen.append(allowed[0])
            ids += chosen
        ids = ids + self._eos_ids()[:1]
        ids = ids[: self._token_budget(len(prompt_ids), params)]
        forced = [0 if i in drawn_entropy else 1 for i in range(len(ids))]
        logprobs, topk, exact = self._score(prompt_ids, ids, vision, params)
        if options.entropy == "policy":
            entropy = [drawn_entropy.get(i, 0.0) for i in range(len(ids))]
        else:
            entropy = topk
        return ids, logprobs, entropy, exact, forced

    def _score(self, prompt_ids, token_ids, vision, params) -> tuple[list[float], list[float], list[float]]:
        """Per response token: log-prob (at the request's temperature, as veRL's actor computes it), the
        top-k entropy estimate and the exact entropy, from one forward pass of the synced weights."""
        if not token_ids:
            return [], [], []
        inputs = {"input_ids": torch.tensor([prompt_ids + token_ids]), **vision}
        with self._lock, torch.no_grad():
            logits = self._model(**inputs).logits[0, len(prompt_ids) - 1 : -1]
        return self._scores(logits, token_ids, params)

    def _scores(self, logits: torch.Tensor, token_ids: list[int], params) -> tuple[list, list, list]:
        """Log-prob of each token under ``softmax(logits / temperature)``, top-k and exact entropy."""
        if not token_ids:
            return [], [], []
        temperature = float(params.get("temperature", 1.0) or 1.0)
        top_k = int(((self.config.custom or {}).get("evr", None) or {}).get("top_k", 20))
        logp = torch.log_softmax(logits.float() / max(temperature, 1e-6), dim=-1)
        chosen = logp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0].tolist()
        top = logp.topk(min(top_k, logp.shape[-1]), dim=-1).values.tolist()
        exact = (-(logp.exp() * logp).sum(-1)).tolist()
        return chosen, [topk_entropy(row) for row in top], exact

    # -- the control calls veRL's replica and checkpoint manager make -----------------------------
    async def wake_up(self, tags: list[str] | None = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def abort_all_requests(self, reject_request: bool = False, **kwargs):
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None
