"""medvr_vllm on a GPU: the server's per-token entropy against a full-vocabulary computation.

Starts a standalone ``medvr_vllm`` replica (veRL's ``LLMServerManager``) on the tiny random-weight
Qwen2.5-VL, generates through veRL's client, then scores the same tokens with the Hugging Face model
with the tokens veRL's vLLM server blocks masked out as well (the out-of-vocabulary tail and the
image/video placeholders) and checks:

* the sampled tokens' logprobs match (vLLM in bf16, the reference in float32);
* the server's entropies equal the top-k estimate of the reference distribution, never above its
  exact entropy and below it by at most :func:`medvr_verl.entropy.topk_entropy_error_bound`.

Sampling at temperature 1, top_p 1, top_k -1, so veRL's ``processed_logprobs`` are the model's own
distribution. The config, the Ray CPU budget and the reference are checked on CPU by
``test_vllm_reference_on_cpu.py``. Skips without a GPU or vLLM.
"""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

import verl  # noqa: E402,F401  (loads the plugin)
from vllm_reference import (  # noqa: E402
    TOP_K,
    gpu_entropy_config,
    load_model_config,
    prompt_ids,
    ray_cpus,
    reference_scores,
)

from medvr_verl.entropy import TOKEN_ENTROPY_KEY  # noqa: E402

TOLERANCE = 5e-2  # bf16 engine vs float32 reference


@pytest.fixture(scope="module")
def gpu_ray():
    """A Ray session with the CPUs a standalone replica needs (a smaller running one is replaced)."""
    import ray

    from medvr_verl.testing.harness import ensure_ray, shutdown_ray

    if ray.is_initialized() and ray.cluster_resources().get("CPU", 0) < ray_cpus():
        shutdown_ray()
    started = not ray.is_initialized()
    ensure_ray(num_cpus=ray_cpus())
    yield
    if started:
        shutdown_ray()


def test_medvr_vllm_entropy_matches_full_vocabulary(tiny_model_path, gpu_ray):
    from verl.workers.rollout.llm_server import LLMServerManager

    config = gpu_entropy_config(tiny_model_path, top_k=TOP_K)
    # @auto_await: called outside an event loop, create() runs the coroutine itself
    manager = LLMServerManager.create(config=config, worker_group=None, rollout_resource_pool=None)
    client = manager.get_client()
    model_config = load_model_config(config)
    prompt = prompt_ids(model_config.tokenizer)
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": 24}
    output = asyncio.run(client.generate("gpu-entropy", prompt_ids=prompt, sampling_params=params))

    tokens = list(output.token_ids)
    entropies = output.extra_fields[TOKEN_ENTROPY_KEY]
    assert len(entropies) == len(tokens) > 0
    ref = reference_scores(model_config, prompt, tokens, top_k=TOP_K)
    assert not set(tokens) & set(ref["blocked"]), "vLLM sampled a token veRL blocks"
    assert output.log_probs == pytest.approx(ref["logprobs"], abs=TOLERANCE)
    assert entropies == pytest.approx(ref["estimate"], abs=TOLERANCE)
    for est, full, bound in zip(entropies, ref["exact"], ref["bound"]):
        assert est <= full + TOLERANCE  # a lower bound of the exact entropy ...
        assert full - est <= bound + TOLERANCE  # ... within the estimator's stated error
    print(
        f"medvr_vllm entropy: {len(tokens)} tokens; max |vLLM - reference|: entropy "
        f"{max(abs(a - b) for a, b in zip(entropies, ref['estimate'])):.4f} nats, logprob "
        f"{max(abs(a - b) for a, b in zip(output.log_probs, ref['logprobs'])):.4f}"
    )
