"""medvr_vllm's template decoding, the pure part (:mod:`medvr_verl.vllm_template`): options, the turn's
token sequences with the tiny model's tokenizer, the trie the logits processor follows, and the
entropies and forced flags taken from vLLM's logprobs. The engine side runs on real vLLM in
``tests/test_vllm_engine_on_vllm_cpu.py``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from medvr_verl.cpu.constrained import ZOOM_PREFIX, ConstrainedOptions
from medvr_verl.vllm_template import (
    SequenceTrie,
    TemplateOptions,
    restricted_entropy,
    template_scores,
    turn_sequences,
)

USER = "<|im_start|>user\nWhich modality?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def _sequences(tokenizer, context, size=(448, 448), **options):
    return turn_sequences(
        context,
        size,
        ConstrainedOptions(**options),
        lambda text: tokenizer.encode(text, add_special_tokens=False),
        tokenizer.eos_token_id,
    )


def test_options_are_off_by_default_and_checked():
    assert TemplateOptions.from_rollout_config({}).enable is False
    on = TemplateOptions.from_rollout_config({"custom": {"vllm": {"constrained": {"enable": True, "grid": 3}}}})
    assert on.enable and on.constrained.grid == 3
    with pytest.raises(ValueError, match="unknown options"):
        TemplateOptions.from_rollout_config({"custom": {"vllm": {"constrained": {"entropy": "model"}}}})
    with pytest.raises(ValueError, match="must be a bool"):
        TemplateOptions.from_rollout_config({"custom": {"vllm": {"constrained": {"enable": "yes"}}}})


def test_zoom_turn_answer_turn_and_fork_sequences(tokenizer):
    zoom = _sequences(tokenizer, USER)
    texts = [tokenizer.decode(s) for s in zoom]
    assert len(zoom) == 4 and all(t.startswith(ZOOM_PREFIX) and t.endswith(tokenizer.eos_token) for t in texts)
    assert '"bbox_2d": [224, 224, 448, 448]}}' in texts[3]
    # an EVR fork cut right before the coordinates: the rest of the same sequences
    cut = len(tokenizer.encode(ZOOM_PREFIX, add_special_tokens=False))
    fork = _sequences(tokenizer, USER + tokenizer.decode(zoom[0][:cut]))
    assert fork == [s[cut:] for s in zoom]
    after_tool = USER + "x<|im_end|>\n<|im_start|>user\n<tool_response>crop</tool_response><|im_end|>\n"
    answers = _sequences(tokenizer, after_tool + "<|im_start|>assistant\n", answers=("A", "B", "C"))
    assert [tokenizer.decode(s).split("<answer>")[1][0] for s in answers] == ["A", "B", "C"]


def test_trie_entropies_and_forced_flags(tokenizer):
    sequences = _sequences(tokenizer, USER)
    trie = SequenceTrie(sequences)
    decisions = trie.decision_tokens()
    assert decisions and all(len(tokenizer.decode([t]).strip()) == 1 for t in decisions)  # digits
    tokens = sequences[2]
    assert trie.allowed(tokens[:0]) == [tokens[0]]
    assert trie.allowed(tokens + [5]) == [tokenizer.eos_token_id]  # off the template: end it
    # vLLM's FlatLogprobs: per position the sampled token first, then the requested decision tokens
    rows = [{t: -0.7 if t % 2 else -1.5 for t in decisions} for _ in tokens]
    flat = SimpleNamespace(start_indices=[], end_indices=[], token_ids=[], logprobs=[])
    for token, row in zip(tokens, rows):
        flat.start_indices.append(len(flat.token_ids))
        for t, value in [(token, row.get(token, -0.1)), *row.items()]:
            flat.token_ids.append(t)
            flat.logprobs.append(value)
        flat.end_indices.append(len(flat.token_ids))
    entropies, forced = template_scores(trie, tokens, flat)
    assert len(entropies) == len(forced) == len(tokens)
    for i, flag in enumerate(forced):
        allowed = trie.allowed(tokens[:i])
        assert flag == (len(allowed) == 1)
        expected = 0.0 if flag else restricted_entropy([rows[i][t] for t in allowed])
        assert entropies[i] == pytest.approx(expected)
    assert sum(1 for f in forced if not f) == 2 and all(e > 0 for e, f in zip(entropies, forced) if not f)
    assert restricted_entropy([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(2))
    assert restricted_entropy([-1.0, -math.inf]) == 0.0
