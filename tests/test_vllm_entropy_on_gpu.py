"""medvr_vllm on a GPU: the server's per-token entropy against a full-vocabulary computation.

Starts a standalone ``medvr_vllm`` replica (veRL's LLMServerManager) on the tiny random-weight
Qwen2.5-VL, generates through veRL's client, then scores the same tokens with the Hugging Face model
and checks the top-k estimate against the exact entropy: never above it, and below it by at most the
bound of :func:`medvr_verl.entropy.topk_entropy_error_bound`. Skips without a GPU or vLLM.
"""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("vllm")

import verl  # noqa: E402,F401  (loads the plugin)

from medvr_verl.entropy import TOKEN_ENTROPY_KEY  # noqa: E402
from medvr_verl.testing.harness import make_trainer_config  # noqa: E402
from medvr_verl.testing.real_logprob_client import RealLogprobLLMClient  # noqa: E402


def test_medvr_vllm_entropy_matches_full_vocabulary(tiny_model_path, ray_session):
    from verl.workers.rollout.llm_server import LLMServerManager

    config = make_trainer_config(
        tiny_model_path,
        [
            "trainer.n_gpus_per_node=1",
            "trainer.nnodes=1",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "actor_rollout_ref.rollout.load_format=auto",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
            "actor_rollout_ref.rollout.enforce_eager=true",
            "+actor_rollout_ref.rollout.custom={evr: {top_k: 20}}",
        ],
        rollout_name="medvr_vllm",
    )
    manager = asyncio.run(LLMServerManager.create(config=config, worker_group=None, rollout_resource_pool=None))
    client = manager.get_client()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Describe the lesion."}], tokenize=True)
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": 24}
    output = asyncio.run(client.generate("gpu-entropy", prompt_ids=prompt, sampling_params=params))

    entropies = output.extra_fields[TOKEN_ENTROPY_KEY]
    assert len(entropies) == len(output.token_ids) > 0
    scorer = RealLogprobLLMClient(config, script=lambda ctx: "", top_k=20)
    logprobs, hf_estimate, exact = scorer.score(list(prompt), list(output.token_ids), None)
    # same estimator on the same distribution (vLLM in bf16, the reference in float32)
    assert entropies == pytest.approx(hf_estimate, abs=5e-2)
    for est, full in zip(entropies, exact):
        assert est <= full + 5e-2  # a lower bound of the exact entropy
    assert output.log_probs == pytest.approx(logprobs, abs=5e-2)
