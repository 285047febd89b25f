"""The CPU rollout server (medvr_verl.cpu.server) in-process: veRL's generate contract, both policies,
and weight updates, on the tiny random-weight Qwen2.5-VL with a real image."""

from __future__ import annotations

import asyncio

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from medvr_verl.cpu import tiny_run
from medvr_verl.entropy import TOKEN_ENTROPY_KEY

pytestmark = pytest.mark.vl_stack


def _server(tiny_model_path, tmp_path, policy):
    from medvr_verl.cpu.server import CPURolloutServer

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    overrides = tiny_run.command(tiny_model_path, tmp_path / "d.parquet", tmp_path, policy=policy)[5:]
    with initialize_config_module(config_module="medvr_verl.recipes.medvr", version_base=None):
        config = compose(config_name="medvr", overrides=[o for o in overrides if not o.startswith("hydra.")])
    return CPURolloutServer(config.actor_rollout_ref.rollout, config.actor_rollout_ref.model)


@pytest.fixture(scope="module")
def prompt(tiny_model_path):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    image = Image.new("RGB", (112, 84), (40, 90, 160))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this a CT? [script:A_B]"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    return ids, [image]


@pytest.fixture(scope="module")
def sampled(tiny_model_path, tmp_path_factory):
    return _server(tiny_model_path, tmp_path_factory.mktemp("s"), "sampled")


def _generate(server, prompt, **params):
    ids, images = prompt
    return asyncio.run(server.generate(prompt_ids=ids, sampling_params=params, request_id="r", image_data=images))


def test_greedy_is_the_models_argmax_and_scores_match(sampled, prompt):
    out = _generate(sampled, prompt, temperature=0, max_tokens=8, logprobs=True)
    assert 1 <= len(out.token_ids) <= 8
    assert out.stop_reason == "completed" and out.extra_fields["medvr_cpu_policy"] == "sampled"
    ids, images = prompt
    vision = sampled._vision_inputs(images)
    with torch.no_grad():
        logits = sampled._model(input_ids=torch.tensor([ids + out.token_ids]), **vision).logits[0, len(ids) - 1 : -1]
    assert out.token_ids == logits.argmax(-1).tolist()
    assert out.log_probs == pytest.approx(torch.log_softmax(logits, -1).max(-1).values.tolist(), abs=1e-4)
    assert len(out.extra_fields[TOKEN_ENTROPY_KEY]) == len(out.token_ids)
    exact = out.extra_fields["token_entropy_exact"]
    # the top-k estimate is a lower bound of the exact entropy
    assert all(0 <= est <= ex + 1e-5 for est, ex in zip(out.extra_fields[TOKEN_ENTROPY_KEY], exact))
    assert _generate(sampled, prompt, temperature=0, max_tokens=8).log_probs is None  # not asked for


def test_sampling_honours_top_k_and_temperature(sampled, prompt):
    greedy = _generate(sampled, prompt, temperature=0, max_tokens=6, ignore_eos=True).token_ids
    top1 = _generate(sampled, prompt, temperature=1.0, top_k=1, max_tokens=6, ignore_eos=True).token_ids
    assert top1 == greedy
    hot = {
        tuple(_generate(sampled, prompt, temperature=5.0, max_tokens=6, ignore_eos=True).token_ids) for _ in range(4)
    }
    assert len(hot) > 1  # a random-weight model at temperature 5 does not repeat itself
    assert all(len(t) == 6 for t in hot)  # ignore_eos: the full budget


def test_weight_update_changes_the_model(sampled, prompt):
    before = _generate(sampled, prompt, temperature=0, max_tokens=4, logprobs=True)
    named = [(k, v + 0.05 * torch.randn_like(v)) for k, v in sampled._model.state_dict().items()]
    record = asyncio.run(sampled.update_weights(named, global_steps=7))
    assert record["changed"] and record["not_sent"] == [] and record["max_abs_delta"] > 0
    after = _generate(sampled, prompt, temperature=0, max_tokens=4, logprobs=True)
    assert after.extra_fields["global_steps"] == 7
    assert after.extra_fields["medvr_cpu_weights"] == record["fingerprint"] != before.extra_fields["medvr_cpu_weights"]
    assert after.log_probs != before.log_probs
    with pytest.raises(KeyError):
        asyncio.run(sampled.update_weights([("no.such.weight", torch.zeros(1))]))


def test_scripted_policy_writes_a_zoom_call_scored_by_the_model(tiny_model_path, tmp_path, prompt):
    server = _server(tiny_model_path, tmp_path, "scripted")
    out = _generate(server, prompt, temperature=1.0, logprobs=True)
    assert out.extra_fields["medvr_cpu_policy"] == "scripted"
    text = server._processor.tokenizer.decode(out.token_ids)
    assert '"bbox_2d": [' in text and text.endswith("<|im_end|>")
    assert len(out.log_probs) == len(out.token_ids) == len(out.extra_fields[TOKEN_ENTROPY_KEY])
    assert all(lp < 0 for lp in out.log_probs)


def test_sampling_never_writes_vision_placeholders(sampled, prompt):
    banned = set(sampled._vision_token_ids())
    assert len(banned) >= 4
    # near-uniform sampling over the 448 ids: 512 draws would hit one of them with p > 0.99
    for _ in range(2):
        out = _generate(sampled, prompt, temperature=50.0, max_tokens=256, ignore_eos=True)
        assert len(out.token_ids) == 256 and not banned & set(out.token_ids)


@pytest.fixture(scope="module")
def constrained(tiny_model_path, tmp_path_factory):
    return _server(tiny_model_path, tmp_path_factory.mktemp("c"), "constrained")


def test_constrained_policy_samples_the_decisions_and_forces_the_template(constrained, prompt):
    """The zoom turn: a grid cell the model chose; log-probs are the model's own at every token;
    EVR's entropy is the drawn distribution's (0 at forced tokens); forced tokens are flagged."""
    from medvr_verl.cpu.constrained import ZOOM_PREFIX, ZOOM_SUFFIX, grid_boxes
    from medvr_verl.trajectory import FORCED_TOKENS_KEY

    tokenizer = constrained._processor.tokenizer
    ids, images = prompt
    texts = set()
    for temperature in (0, 1.0, 1.0, 1.0, 1.0, 1.0):
        out = _generate(constrained, prompt, temperature=temperature, logprobs=True)
        text = tokenizer.decode(out.token_ids, skip_special_tokens=True)
        assert text.startswith(ZOOM_PREFIX) and text.endswith(ZOOM_SUFFIX)
        texts.add(text)
        width, height = constrained._image_sizes(constrained._vision_inputs(images))[0]
        box = [int(v) for v in text[len(ZOOM_PREFIX) : -len(ZOOM_SUFFIX)].split(", ")]
        assert box in grid_boxes(width, height, 2)
        forced, entropy = out.extra_fields[FORCED_TOKENS_KEY], out.extra_fields[TOKEN_ENTROPY_KEY]
        assert len(forced) == len(entropy) == len(out.log_probs) == len(out.token_ids)
        assert sum(1 - f for f in forced) == 2  # x1 and y1 decide the cell; the rest follows
        assert all(e == 0.0 for e, f in zip(entropy, forced) if f)
        assert all(0.0 < e <= 0.6932 for e, f in zip(entropy, forced) if not f)  # two-way choices
        if temperature == 0:  # greedy: the model's preferred token at each decision
            vision = constrained._vision_inputs(images)
            with torch.no_grad():
                logits = constrained._model(input_ids=torch.tensor([ids + out.token_ids]), **vision).logits[0]
            logp = torch.log_softmax(logits[len(ids) - 1 : -1], -1)
            chosen = logp.gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
            assert out.log_probs == pytest.approx(chosen.tolist(), abs=1e-4)  # full-vocabulary log-probs
    assert len(texts) > 1  # sampled, not fixed
