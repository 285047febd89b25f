"""medvr_agent through veRL's real AgentLoopWorker (the recipe's V1 manager: test_agent_loop_tq_on_cpu.py).

A tiny random-weight Qwen2.5-VL supplies the real tokenizer, processor and mrope positions; a
scripted client behind veRL's LLMServerClient interface plays the vLLM server.
"""

from __future__ import annotations

import pytest
import verl  # noqa: F401  (loads the plugin)
from cca_script import BOTTOM_RIGHT, MC, TOP_LEFT, cca_config, chest_image
from cca_script import zoom_call as zoom

from medvr_verl.testing.harness import make_agent_batch, make_sample, run_agent_loop_worker
from medvr_verl.testing.scripted_server import ScriptedLLMClient

pytestmark = pytest.mark.vl_stack
ANSWER = "<think>now I see it</think><answer>A</answer>"


def _turn_of_length(tokenizer, target_tokens, suffix):
    """A thought followed by ``suffix`` (a zoom call), about ``target_tokens`` tokens in all."""
    words = []
    while len(tokenizer.encode("<think>" + " ".join(words) + "</think>" + suffix)) < target_tokens:
        words.append("lesion")
    return "<think>" + " ".join(words) + "</think>" + suffix


@pytest.fixture(scope="module")
def medvr_run(ray_session, tiny_model_path, tokenizer):
    """One batch of six scripted trajectories through the stock AgentLoopWorker with medvr_agent."""
    config = cca_config(tiny_model_path, n=1, max_parallel_calls=1)
    turns = {
        "zoom": [f"<think>zoom</think>{zoom(TOP_LEFT)}", ANSWER],
        "malformed": ["<think>x</think><tool_call>{not json</tool_call>", ANSWER],
        "unknown": ['<tool_call>{"name": "ruler", "arguments": {"a": 1}}</tool_call>', ANSWER],
        "badargs": [zoom([1, 2, 3]), ANSWER],
        "many": [f"<think>two</think>{zoom(TOP_LEFT)}{zoom(BOTTOM_RIGHT)}", ANSWER],
        # fits the 256-token response, but its tool response (crop tokens included) would not
        "budget": [_turn_of_length(tokenizer, 230, zoom(TOP_LEFT)), ANSWER],
    }
    samples = [make_sample(f"[script:{k}] Which lung?", images=[chest_image()], extra_info=MC) for k in turns]
    batch = make_agent_batch(samples, n=1, agent_name="medvr_agent")
    output = run_agent_loop_worker(config, batch, ScriptedLLMClient(config, turns=turns, on_exhausted="eos"))
    rows = {k: i for i, k in enumerate(turns)}
    return config, output, rows


def _column(output, key, row):
    return output.non_tensor_batch[key][row]


def _record(output, row):
    return output.non_tensor_batch["medvr_trajectory"][row]


def test_batch_layout_matches_veRL(medvr_run, tokenizer):
    config, output, _ = medvr_run
    bs = len(output)
    p, r = config.actor_rollout_ref.rollout.prompt_length, config.actor_rollout_ref.rollout.response_length
    assert output.batch["prompts"].shape == (bs, p) and output.batch["responses"].shape == (bs, r)
    assert output.batch["position_ids"].shape == (bs, 4, p + r)  # text row + Qwen2.5-VL's 3 mrope rows
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for row in range(bs):
        mmi = output.non_tensor_batch["multi_modal_inputs"][row]
        grid = mmi["image_grid_thw"]
        # every image in the context has its grid row, and all its tokens are in the sequence
        assert int((output.batch["input_ids"][row] == image_pad).sum()) == int(grid.prod(-1).sum() // 4)


def test_zoom_is_recorded_with_fork_state(medvr_run, tokenizer):
    _, output, rows = medvr_run
    row = rows["zoom"]
    (record,) = _column(output, "medvr_zoom_calls", row)
    assert record["valid"] and record["image_index"] == 0
    assert record["bbox_original"] == pytest.approx([0.0, 0.0, 200 * 98 / 196, 120 * 56 / 112])
    assert len(output.non_tensor_batch["multi_modal_inputs"][row]["image_grid_thw"]) == 2  # prompt + crop

    (call,) = _record(output, row).fork_points
    responses = output.batch["responses"][row]
    coords = tokenizer.decode(responses[call.coord_start : call.coord_end])
    assert coords.strip().startswith("[") and coords.strip().endswith("]") and "98" in coords
    # the fork prefix is the whole context up to the coordinates
    prompt_len = int(output.batch["attention_mask"][row, : output.batch["prompts"].shape[1]].sum())
    full = output.batch["input_ids"][row, output.batch["prompts"].shape[1] - prompt_len :]
    prefix = tokenizer.decode(full[: call.fork_prefix_len])
    # (the token holding "[" may carry the space before it: the fork resamples from that token on)
    assert prefix.rstrip().endswith('"bbox_2d":') and prefix.count("<|vision_start|>") == call.num_images == 1

    mask = output.batch["response_mask"][row]
    assert mask[call.coord_start : call.coord_end].all()  # generated tokens
    tool_tokens = tokenizer.decode(responses[mask == 0][: int((mask == 0).sum())])
    assert "<tool_response>" in tool_tokens  # the tool's tokens are masked out
    turns = _record(output, row).turns
    assert turns[0].start == 0 and len(turns) == 2


@pytest.mark.parametrize("key, valid", [("badargs", [False]), ("unknown", []), ("malformed", [])])
def test_bad_calls_never_break_the_trajectory(medvr_run, tokenizer, key, valid):
    _, output, rows = medvr_run
    row = rows[key]
    records = _column(output, "medvr_zoom_calls", row) or []
    assert [r["valid"] for r in records] == valid
    text = tokenizer.decode(output.batch["responses"][row], skip_special_tokens=True)
    if key == "badargs":
        assert "Error" in text and "4 numbers" in text and "<answer>A</answer>" in text
    if key == "unknown":
        assert "Unknown function 'ruler'" in text and "<answer>A</answer>" in text
    if key == "malformed":  # no parsable call: the turn is the final answer attempt
        assert "<answer>" not in text and len(_record(output, row).turns) == 1


def test_only_max_parallel_calls_run(medvr_run):
    _, output, rows = medvr_run
    row = rows["many"]
    assert len(_column(output, "medvr_zoom_calls", row)) == 1
    assert len(_record(output, row).fork_points) == 1


def test_budget_ends_before_an_image_that_would_not_fit(medvr_run, tokenizer):
    config, output, rows = medvr_run
    row = rows["budget"]
    r = config.actor_rollout_ref.rollout.response_length
    length = int(output.batch["attention_mask"][row, -r:].sum())
    assert length <= r
    # the zoom ran, but its crop would have overflowed the response: it never entered the context
    assert len(_column(output, "medvr_zoom_calls", row)) == 1
    assert len(output.non_tensor_batch["multi_modal_inputs"][row]["image_grid_thw"]) == 1
    assert "<tool_response>" not in tokenizer.decode(output.batch["responses"][row])
    # counted, never silent; the other trajectories carry no flag
    assert _column(output, "medvr_budget_overflow", row) == 1
    assert all(_column(output, "medvr_budget_overflow", r) in (None, 0) for k, r in rows.items() if k != "budget")
