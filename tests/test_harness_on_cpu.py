"""The CPU test harness drives veRL's STOCK agent loops end to end.

* the tiny RANDOM-weight Qwen2.5-VL directory loads through transformers and veRL's HFModelConfig;
* stock ``single_turn_agent`` and ``tool_agent`` run inside veRL's ``AgentLoopWorker`` as a Ray actor,
  with :class:`ScriptedLLMClient` standing in for the vLLM server, one image per prompt,
  2 prompts x n=2.
"""

from __future__ import annotations

import json
import stat
import time
from typing import Any

import pytest
import torch
from PIL import Image
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from medvr_verl.testing.harness import (
    make_agent_batch,
    make_sample,
    make_trainer_config,
    run_agent_loop_worker,
    write_tool_config,
)
from medvr_verl.testing.scripted_server import (
    ScriptedLLMClient,
    ScriptedTurn,
    create_call_recorder,
    get_call_records,
)
from medvr_verl.testing.tiny_qwen25vl import ADDED_TOKENS, build_tiny_qwen25vl, load_chat_template

PROMPT_LENGTH = 512
RESPONSE_LENGTH = 256
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"


def _image(color: tuple[int, int, int], size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size), color)
    for x in range(0, size, 8):  # a little structure so the pixels are not constant
        img.putpixel((x, x), (255, 255, 255))
    return img


class PatchImageTool(BaseTool):
    """Trivial multimodal tool: returns a small PIL image of the requested box size."""

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return OpenAIFunctionToolSchema.model_validate(
            {
                "type": "function",
                "function": {
                    "name": "zoom_in",
                    "description": "Zoom in on a region of the image.",
                    "parameters": {
                        "type": "object",
                        "properties": {"bbox_2d": {"type": "array", "items": {"type": "number"}}},
                        "required": ["bbox_2d"],
                    },
                },
            }
        )

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[ToolResponse, float, dict]:
        x0, y0, x1, y1 = (int(v) for v in parameters["bbox_2d"])
        crop = Image.new("RGB", (max(8, x1 - x0), max(8, y1 - y0)), (0, 128, 255))
        return ToolResponse(image=[crop], text="Zoomed in."), 0.0, {}


def _call(bbox: list[int]) -> str:
    return (
        "<think>look closer</think>\n<tool_call>\n"
        + json.dumps({"name": "zoom_in", "arguments": {"bbox_2d": bbox}})
        + "\n</tool_call>"
    )


# ----------------------------------------------------------------------------------------------
# (a) the tiny model
# ----------------------------------------------------------------------------------------------


def test_build_is_cached_and_deterministic(tiny_model_path, tmp_path):
    start = time.perf_counter()
    assert build_tiny_qwen25vl(tiny_model_path) == tiny_model_path
    assert time.perf_counter() - start < 2.0, "a complete build must be returned from the cache"

    other = build_tiny_qwen25vl(tmp_path / "again")
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "preprocessor_config.json"):
        assert (other / name).read_bytes() == (tiny_model_path / name).read_bytes(), name
    assert stat.S_IMODE(other.stat().st_mode) == 0o755  # a shared cache (mkdtemp makes 0700)
    # a non-empty foreign directory is never overwritten
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_tiny_qwen25vl(foreign)


def test_tokenizer_layout_and_roundtrip(tiny_model_path):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    cfg = AutoConfig.from_pretrained(tiny_model_path)
    base = tok.convert_tokens_to_ids("<|endoftext|>")
    for offset, (content, special) in enumerate(ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(content) == base + offset, content
        assert (content in tok.all_special_tokens) == special, content
    assert len(tok) == base + len(ADDED_TOKENS)
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>" and tok.bos_token is None
    assert cfg.model_type == "qwen2_5_vl"
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.text_config.vocab_size % 64 == 0 and cfg.text_config.vocab_size >= len(tok)
    assert tok.chat_template == load_chat_template()
    # veRL's Qwen Continuous Token builder requires "\n" to be exactly one token
    assert len(tok.encode("\n", add_special_tokens=False)) == 1
    for text in (
        'plain ascii, with punctuation: {"a": [1, 2]}',
        "ünïcødé — Ελληνικά, 中文, 日本語, العربية, emoji 🙂👩‍⚕️, \t tabs\n\nnewlines",
        '<tool_call>\n{"name": "zoom_in"}\n</tool_call><|im_end|>',
        "\x00\x01 control bytes \u200b zero-width",
    ):
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text


@pytest.mark.vl_stack
def test_hfmodelconfig_accepts_tiny_model(tiny_model_path):
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig

    config = make_trainer_config(tiny_model_path)
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    assert isinstance(model_config, HFModelConfig)
    assert model_config.hf_config.model_type == "qwen2_5_vl"
    assert model_config.tokenizer.eos_token == "<|im_end|>"
    processor = model_config.processor
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert processor.image_processor.size["longest_edge"] == 256 * 28 * 28
    assert hasattr(processor, "get_rope_index")  # bound by veRL's hf_processor

    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": _image((200, 0, 0))}, {"type": "text", "text": "What?"}],
        }
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{VISION_BLOCK}What?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.vl_stack
def test_model_forward_on_image(tiny_model_path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_path).eval()
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_image((10, 200, 10))], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]  # 64x64 -> 56x56 -> 4x4 patches -> 4 tokens
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 4
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------
# the scripted client on its own (no Ray, no vision stack)
# ----------------------------------------------------------------------------------------------


def test_scripted_client_budget_turns_and_stops(tiny_model_path):
    import asyncio
    import pickle

    from transformers import AutoTokenizer

    from medvr_verl.testing.scripted_server import ScriptExhaustedError

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = make_trainer_config(
        tiny_model_path, prompt_length=64, response_length=16, overrides=["actor_rollout_ref.rollout.max_model_len=120"]
    )
    long_text = "word " * 40
    client = ScriptedLLMClient(
        config,
        turns={
            "default": [long_text, ScriptedTurn("partial", finished=False, log_probs=-1.0), "stop<|im_end|>after"],
            "k": ["k-answer"],
        },
    )
    client = pickle.loads(pickle.dumps(client))  # what Ray does to it; the tokenizer reloads lazily

    def ids_for(messages):
        return tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)

    def gen(prompt_ids, **sampling):
        return asyncio.run(client.generate("req", prompt_ids=prompt_ids, sampling_params=sampling))

    user = {"role": "user", "content": "hi"}
    turn0 = ids_for([user])
    # default budget = min(response_length, prompt_length + response_length - len(prompt)) -> cut, no eos
    out = gen(turn0, logprobs=False)
    assert len(out.token_ids) == 16 and eos not in out.token_ids and out.log_probs is None
    assert out.stop_reason == "completed" and "global_steps" in out.extra_fields
    assert len(gen(turn0, max_tokens=5).token_ids) == 5
    # the vLLM server never exceeds max_model_len - len(prompt) ...
    assert len(gen(turn0 + [0] * (119 - len(turn0)), max_tokens=50).token_ids) == 1
    with pytest.raises(ValueError):  # ... and refuses a prompt that leaves no room
        gen(turn0 + [0] * (120 - len(turn0)))

    # turn index = assistant turns already in the context
    turn1 = ids_for([user, {"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"}])
    out = gen(turn1, logprobs=False)
    assert tok.decode(out.token_ids) == "partial" and out.log_probs == [-1.0] * len(out.token_ids)
    turn2 = ids_for(
        [
            user,
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ]
    )
    out = gen(turn2, logprobs=True)
    assert tok.decode(out.token_ids) == "stop<|im_end|>"  # generation stops at the eos, like vLLM
    assert out.log_probs == [-0.5] * len(out.token_ids)

    # the [script:KEY] marker picks the script; running past its end raises by default
    keyed = [{"role": "user", "content": "[script:k] hi"}]
    assert tok.decode(gen(ids_for(keyed)).token_ids) == "k-answer<|im_end|>"
    with pytest.raises(ScriptExhaustedError):
        gen(ids_for(keyed + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]))
    # stop_token_ids from the sampling params cut the turn (the stop token is kept)
    stop_id = tok.convert_tokens_to_ids("</tool_call>")
    client2 = ScriptedLLMClient(config, script=lambda ctx: "<tool_call>{}</tool_call> trailing")
    out = asyncio.run(client2.generate("r", prompt_ids=turn0, sampling_params={"stop_token_ids": [stop_id]}))
    assert out.token_ids[-1] == stop_id
    assert [c["turn"] for c in client.calls[:2]] == [0, 0] and client.calls[-1]["key"] == "k"


# ----------------------------------------------------------------------------------------------
# (b) stock agent loops through AgentLoopWorker in Ray
# ----------------------------------------------------------------------------------------------


def _check_common(out, tok, n_rows: int) -> None:
    batch = out.batch
    assert len(out) == n_rows
    assert batch["prompts"].shape == (n_rows, PROMPT_LENGTH)
    assert batch["responses"].shape == (n_rows, RESPONSE_LENGTH)
    assert batch["response_mask"].shape == (n_rows, RESPONSE_LENGTH)
    assert batch["input_ids"].shape == (n_rows, PROMPT_LENGTH + RESPONSE_LENGTH)
    assert batch["attention_mask"].shape == (n_rows, PROMPT_LENGTH + RESPONSE_LENGTH)
    # Qwen2.5-VL mrope: one text row + 3 (t, h, w) rows
    assert batch["position_ids"].shape == (n_rows, 4, PROMPT_LENGTH + RESPONSE_LENGTH)
    assert torch.equal(batch["input_ids"], torch.cat([batch["prompts"], batch["responses"]], dim=1))
    # response_mask is never set on padding
    resp_attn = batch["attention_mask"][:, PROMPT_LENGTH:]
    assert bool((batch["response_mask"] <= resp_attn).all())
    # interleaved repeat: rows (p0, p0, p1, p1)
    uid = out.non_tensor_batch["uid"]
    assert uid[0] == uid[1] and uid[2] == uid[3] and uid[0] != uid[2]
    # the prompt holds the real Qwen2.5-VL image placeholder block (expanded pads)
    prompt_text = tok.decode(batch["prompts"][0][batch["attention_mask"][0, :PROMPT_LENGTH].bool()])
    assert "<|vision_start|><|image_pad|>" in prompt_text and prompt_text.endswith("<|im_start|>assistant\n")


def _valid_response_ids(out, i: int) -> torch.Tensor:
    return out.batch["responses"][i][out.batch["attention_mask"][i, PROMPT_LENGTH:].bool()]


@pytest.mark.vl_stack
def test_stock_single_turn_agent(tiny_model_path, ray_session):
    from transformers import AutoTokenizer

    config = make_trainer_config(tiny_model_path, prompt_length=PROMPT_LENGTH, response_length=RESPONSE_LENGTH, n=2)
    answers = {"a": "<think>red square</think><answer>A</answer>", "b": "<think>grün 🙂</think><answer>B</answer>"}
    recorder = create_call_recorder()
    client = ScriptedLLMClient(config, turns={k: [v] for k, v in answers.items()}, recorder=recorder)
    samples = [
        make_sample("[script:a] What is in the image?", images=[_image((200, 0, 0))]),
        make_sample("[script:b] And in this one?", images=[_image((0, 0, 200), size=96)]),
    ]
    batch = make_agent_batch(samples, n=2, agent_name="single_turn_agent")

    out = run_agent_loop_worker(config, batch, client)

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    _check_common(out, tok, 4)
    for i, key in enumerate(["a", "a", "b", "b"]):
        response = tok.decode(_valid_response_ids(out, i))
        assert response == answers[key] + "<|im_end|>"
        # single turn: every real response token is model-generated
        assert torch.equal(out.batch["response_mask"][i], out.batch["attention_mask"][i, PROMPT_LENGTH:])
        grid = out.non_tensor_batch["multi_modal_inputs"][i]["image_grid_thw"]
        assert grid.shape == (1, 3)
    assert out.non_tensor_batch["multi_modal_inputs"][2]["image_grid_thw"].tolist() == [[1, 6, 6]]  # 96 px -> 84
    assert out.non_tensor_batch["__num_turns__"].tolist() == [2, 2, 2, 2]
    # calculate_log_probs=True in veRL's default config -> the client reports per-token log-probs
    logp = out.batch["rollout_log_probs"]
    assert torch.allclose(logp[out.batch["response_mask"].bool()], torch.tensor(-0.5))

    records = get_call_records(recorder)
    assert len(records) == 4
    assert sorted(r["key"] for r in records) == ["a", "a", "b", "b"]
    assert all(r["turn"] == 0 and r["num_images"] == 1 for r in records)
    assert all(r["max_tokens"] == RESPONSE_LENGTH for r in records)  # min(response_length, budget)
    assert all(r["sampling_params"]["logprobs"] for r in records)


@pytest.mark.vl_stack
def test_stock_tool_agent_with_image_tool(tiny_model_path, ray_session, tmp_path):
    from transformers import AutoTokenizer

    tool_yaml = write_tool_config(tmp_path / "tools.yaml", [PatchImageTool])
    config = make_trainer_config(
        tiny_model_path,
        prompt_length=PROMPT_LENGTH,
        response_length=RESPONSE_LENGTH,
        n=2,
        tool_config_path=tool_yaml,
        max_assistant_turns=4,
    )
    answer = "<think>now it is clear</think><answer>A</answer>"
    entropy = lambda token_ids, ctx: {"scripted_turn": ctx.turn, "token_entropy": [0.25] * len(token_ids)}  # noqa: E731
    recorder = create_call_recorder()
    client = ScriptedLLMClient(
        config,
        turns={
            "once": [ScriptedTurn(_call([0, 0, 32, 32]), extra_fields=entropy), answer],
            "twice": [_call([0, 0, 40, 40]), _call([8, 8, 40, 40]), answer],
        },
        recorder=recorder,
    )
    samples = [
        make_sample("[script:once] Is there a lesion?", images=[_image((120, 120, 120))]),
        make_sample("[script:twice] Where is the lesion?", images=[_image((60, 60, 60))]),
    ]
    batch = make_agent_batch(samples, n=2, agent_name="tool_agent")

    out = run_agent_loop_worker(config, batch, client)

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    _check_common(out, tok, 4)
    expected_calls = {0: 1, 1: 1, 2: 2, 3: 2}
    for i, n_calls in expected_calls.items():
        ids = _valid_response_ids(out, i)
        mask = out.batch["response_mask"][i][: len(ids)]
        generated = tok.decode(ids[mask.bool()])
        observed = tok.decode(ids[~mask.bool()])
        # the scripted turns are the model-generated part, in order
        assert generated.count("<tool_call>") == n_calls
        assert generated.endswith(answer + "<|im_end|>")
        # tool responses (official template: role "tool" with the image block) have response_mask 0
        assert observed.count("<|im_start|>tool") == n_calls
        assert observed.count("<|vision_start|>") == n_calls and "Zoomed in." in observed
        assert mask[0] == 1 and mask[-1] == 1
        # one image_grid_thw row per image: the prompt image + one per tool call
        grid = out.non_tensor_batch["multi_modal_inputs"][i]["image_grid_thw"]
        assert grid.shape == (1 + n_calls, 3)
        assert out.non_tensor_batch["__num_turns__"][i] == 2 + 2 * n_calls
    # the first turn's extra fields reach the output (ToolAgentLoop keeps the first turn's extra_fields)
    assert out.non_tensor_batch["scripted_turn"].tolist()[:2] == [0, 0]
    assert len(out.non_tensor_batch["token_entropy"][0]) > 0

    records = get_call_records(recorder)
    assert len(records) == 2 * 2 + 2 * 3
    by_turn = {}
    for r in records:
        by_turn.setdefault((r["key"], r["turn"]), []).append(r)
    assert sorted((k, t, len(v)) for (k, t), v in by_turn.items()) == [
        ("once", 0, 2),
        ("once", 1, 2),
        ("twice", 0, 2),
        ("twice", 1, 2),
        ("twice", 2, 2),
    ]
    # the images sent to the server grow with the tool responses; the prompt grows turn by turn
    for (_key, turn), rs in by_turn.items():
        assert all(r["num_images"] == 1 + turn for r in rs)
    assert all(r["max_tokens"] >= 1 for r in records)
    logp, mask = out.batch["rollout_log_probs"], out.batch["response_mask"].bool()
    assert torch.all(logp[~mask] == 0) and torch.allclose(logp[mask], torch.tensor(-0.5))


@pytest.mark.vl_stack
def test_in_process_worker_exposes_client_calls(tiny_model_path):
    """``use_ray=False`` runs the same stock worker in this process; ``client.calls`` is then local."""
    config = make_trainer_config(tiny_model_path, prompt_length=PROMPT_LENGTH, response_length=RESPONSE_LENGTH, n=1)
    client = ScriptedLLMClient(config, turns=["<answer>C</answer>"])
    batch = make_agent_batch([make_sample("What is it?", images=[_image((5, 5, 5))])], agent_name="single_turn_agent")
    out = run_agent_loop_worker(config, batch, client, use_ray=False)
    assert len(out) == 1 and out.batch["position_ids"].shape == (1, 4, PROMPT_LENGTH + RESPONSE_LENGTH)
    assert [(c["key"], c["turn"], c["num_images"]) for c in client.calls] == [("default", 0, 1)]
    assert client.calls[0]["response_text"] == "<answer>C</answer><|im_end|>"
