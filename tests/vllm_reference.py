"""What the GPU entropy test needs, shared with its CPU checks (``test_vllm_reference_on_cpu.py``).

* :func:`gpu_entropy_config`: the trainer config of a standalone ``medvr_vllm`` replica on one GPU
  (veRL's ``LLMServerManager`` asserts ``rollout.nnodes > 0`` in standalone mode and sizes replicas
  from ``rollout.n_gpus_per_node * rollout.nnodes``).
* :data:`RAY_CPUS_FOR_ONE_REPLICA` / :func:`ray_cpus`: a standalone replica's placement group takes
  ``max_colocate_count = 2`` CPUs per GPU bundle (``RolloutReplica.init_standalone``), and the server
  actor and the load balancer each need a CPU to be scheduled outside it.
* :func:`reference_scores`: the Hugging Face model's distribution with the tokens veRL's vLLM server
  blocks (``vLLMHttpServer.run_server`` -> ``monkey_patch_compute_logits``: every id at or above
  ``len(tokenizer)`` and ``get_vision_placeholder_token_ids(processor)``) set to -inf, as vLLM sees
  it: the sampled tokens' logprobs, the top-k estimate and the exact entropy per position.
"""

from __future__ import annotations

import os
from typing import Any

TOP_K = 20
RAY_CPUS_FOR_ONE_REPLICA = 2 + 1 + 1
"""Placement-group bundle (2 CPUs) + server actor + load balancer, one GPU replica."""


def ray_cpus() -> int:
    """CPUs to give the GPU test's Ray session: at least :data:`RAY_CPUS_FOR_ONE_REPLICA` + the driver's."""
    return max(RAY_CPUS_FOR_ONE_REPLICA + 2, min(os.cpu_count() or 1, 16))


def gpu_entropy_config(model_path, top_k: int = TOP_K, extra: tuple[str, ...] = ()):
    """veRL's trainer config for one standalone ``medvr_vllm`` replica on one GPU."""
    from medvr_verl.testing.harness import make_trainer_config

    rollout = "actor_rollout_ref.rollout"
    return make_trainer_config(
        model_path,
        [
            "trainer.n_gpus_per_node=1",
            "trainer.nnodes=1",
            f"{rollout}.nnodes=1",
            f"{rollout}.n_gpus_per_node=1",
            f"{rollout}.tensor_model_parallel_size=1",
            f"{rollout}.load_format=auto",
            f"{rollout}.gpu_memory_utilization=0.3",
            f"{rollout}.enforce_eager=true",
            f"+{rollout}.custom={{evr: {{top_k: {top_k}}}}}",
            *extra,
        ],
        rollout_name="medvr_vllm",
    )


def prompt_ids(tokenizer, text: str = "Describe the lesion.") -> list[int]:
    """A chat prompt's token ids (rendered, then encoded: plain ints whatever transformers returns)."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer.encode(rendered, add_special_tokens=False))


def blocked_token_ids(model_config, logits_width: int) -> list[int]:
    """The ids veRL's vLLM server masks: the tail from ``len(tokenizer)`` and the vision placeholders."""
    from verl.workers.rollout.utils import get_vision_placeholder_token_ids

    tail = list(range(len(model_config.tokenizer), logits_width))
    return sorted(set(tail) | set(get_vision_placeholder_token_ids(model_config.processor)))


def load_model_config(config):
    """veRL's ``HFModelConfig`` of ``actor_rollout_ref.model`` (what the server builds its ban list from)."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig

    return omega_conf_to_dataclass(config.actor_rollout_ref.model, dataclass_type=HFModelConfig)


def reference_scores(
    model_config, prompt: list[int], tokens: list[int], top_k: int = TOP_K, block: bool = True
) -> dict[str, Any]:
    """Per generated token: ``logprobs`` of the sampled tokens, ``estimate`` (top-k), ``exact`` entropy
    and the estimator's error ``bound`` (over the tokens that are not blocked).

    The model runs in float32 on CPU; ``block=False`` gives the unmasked distribution (for showing the
    difference the ban makes).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from medvr_verl.entropy import topk_entropy, topk_entropy_error_bound

    model = AutoModelForImageTextToText.from_pretrained(model_config.local_path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    blocked = blocked_token_ids(model_config, logits.shape[-1]) if block else []
    if blocked:
        logits[:, blocked] = float("-inf")
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()
    top = logp.topk(min(top_k, logp.shape[-1]), dim=-1).values.tolist()
    probs = logp.exp()
    exact = (-(probs * torch.where(probs > 0, logp, torch.zeros_like(logp))).sum(-1)).tolist()
    return {
        "logprobs": chosen,
        "estimate": [topk_entropy(row, top_k) for row in top],
        "exact": exact,
        "bound": [topk_entropy_error_bound(row, int(logits.shape[-1]) - len(blocked), top_k) for row in top],
        "blocked": blocked,
        "vocab": int(logits.shape[-1]),
    }
