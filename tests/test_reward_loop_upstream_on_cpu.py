"""veRL's own generic reward-loop tests, run against ``naive`` and ``medvr_cca`` alike (issue 21).

Source: volcengine/verl, ``tests/experimental/reward_loop/test_rate_limited_reward_manager_on_cpu.py``
(Apache-2.0, Copyright 2024 Bytedance Ltd. and/or its affiliates), last changed upstream in commit
f59c23a6d44c35bf2bf6a5461dd3846416740950 (2026-01-03); veRL 0.9.1's sdist ships no
``tests/experimental``, and that file's generic cases are unchanged since. Copied: the mock reward
functions, ``create_test_data_proto`` and the cases that test a reward manager's contract, not rate
limiting (``test_basic_reward_computation``, ``test_dict_result_format``, ``test_sync_reward_function``,
``test_correct_vs_incorrect_answers``, ``test_extra_info_handling``, and ``test_concurrency_limiting``
without its rate-limit assertion). Changed: the manager is parametrized (``naive``, ``medvr_cca``) and
built from veRL's stock ``ppo_trainer`` config through its registry; the tokenizer is the tiny
Qwen2.5-VL's (no model hub); non-tensor columns are numpy arrays (veRL 0.9.1's ``DataProto`` slicing
asserts it, so upstream's lists fail ``naive`` too).

Below them, this project's tests of the same contract: what ``naive`` hands a custom reward function
(``num_turns``, ``rollout_reward_scores``, tool extra fields, reward-model routing) reaches it under
``medvr_cca`` too, and which scorer each row gets.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin: medvr_cca registered)
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

MANAGERS = ("naive", "medvr_cca")


# ---- copied from upstream (mock reward functions and data) --------------------------------------
class MockAPICounter:
    """Shared counter to track API calls across tests."""

    def __init__(self):
        self.call_count = 0
        self.call_times = []
        self.lock = asyncio.Lock()

    async def record_call(self):
        async with self.lock:
            self.call_count += 1
            self.call_times.append(time.time())

    def reset(self):
        self.call_count = 0
        self.call_times.clear()


api_counter = MockAPICounter()


def mock_sync_reward_function(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict, **kwargs
) -> float:
    """Synchronous mock reward function that simulates API call."""
    time.sleep(0.01)
    score = 1.0 if solution_str.strip() == ground_truth.strip() else 0.0
    return score


async def mock_async_reward_function(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict, **kwargs
) -> float:
    """Asynchronous mock reward function that simulates API call."""
    await api_counter.record_call()
    await asyncio.sleep(0.01)
    score = 1.0 if solution_str.strip() == ground_truth.strip() else 0.0
    return score


async def mock_dict_result_function(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict, **kwargs
) -> dict:
    """Mock API function that returns dict result."""
    await api_counter.record_call()
    await asyncio.sleep(0.01)
    correct = solution_str.strip() == ground_truth.strip()
    return {"score": 1.0 if correct else 0.0, "correct": correct, "reasoning": "Mock reasoning"}


def create_test_data_proto(tokenizer, response_text: str, ground_truth: str, data_source: str = "test"):
    """Helper to create DataProto for testing."""
    response_ids = tokenizer.encode(response_text, add_special_tokens=False)
    response_tensor = torch.tensor([response_ids], dtype=torch.long)
    attention_mask = torch.ones_like(response_tensor)
    data = DataProto.from_dict({"responses": response_tensor, "attention_mask": attention_mask})
    # numpy object arrays where upstream has lists: veRL 0.9.1's managers slice the row (data[-1:]),
    # which checks that every non-tensor column is an ndarray
    data.non_tensor_batch = {
        "data_source": np.array([data_source], dtype=object),
        "reward_model": np.array([{"ground_truth": ground_truth}], dtype=object),
    }
    return data


# ---- this project: the manager under test, from veRL's stock config ------------------------------
@pytest.fixture(scope="module")
def stock_config(tiny_model_path):
    """veRL's stock ppo_trainer config (no reward_kwargs node), as a user's recipe has it."""
    from medvr_verl.testing.harness import make_trainer_config

    return make_trainer_config(tiny_model_path, ["actor_rollout_ref.rollout.n=4"])


def config_for(stock_config, name: str, **reward_kwargs):
    from omegaconf import OmegaConf, open_dict

    config = OmegaConf.create(OmegaConf.to_container(stock_config))
    with open_dict(config):
        config.reward.reward_manager.name = name
        if reward_kwargs:
            config.reward["reward_kwargs"] = reward_kwargs
    return config


@pytest.fixture(params=MANAGERS)
def make_manager(request, stock_config, tokenizer):
    api_counter.reset()

    def make(compute_score, **kwargs):
        config = config_for(stock_config, request.param)
        cls = get_reward_manager_cls(request.param)
        return cls(config=config, tokenizer=tokenizer, compute_score=compute_score, **kwargs)

    make.name = request.param
    return make


# ---- copied from upstream: the generic cases ------------------------------------------------------
async def test_basic_reward_computation(make_manager, tokenizer):
    """Test basic reward computation without rate limiting."""
    manager = make_manager(mock_async_reward_function)
    data = create_test_data_proto(tokenizer, "correct answer", "correct answer")
    result = await manager.run_single(data)
    assert "reward_score" in result
    assert result["reward_score"] == 1.0
    assert api_counter.call_count == 1


async def test_dict_result_format(make_manager, tokenizer):
    """Test handling of dict return format from reward function."""
    manager = make_manager(mock_dict_result_function)
    data = create_test_data_proto(tokenizer, "correct", "correct")
    result = await manager.run_single(data)
    assert result["reward_score"] == 1.0
    assert result["reward_extra_info"]["score"] == 1.0
    assert result["reward_extra_info"]["correct"] is True
    assert result["reward_extra_info"]["reasoning"] == "Mock reasoning"


async def test_sync_reward_function(make_manager, tokenizer):
    """Test that synchronous reward functions work correctly."""
    manager = make_manager(mock_sync_reward_function)
    data = create_test_data_proto(tokenizer, "answer", "answer")
    result = await manager.run_single(data)
    assert result["reward_score"] == 1.0
    assert manager.is_async_reward_score is False


async def test_concurrency_limiting(make_manager, tokenizer):
    """Test concurrent request limiting (upstream's config sets max_concurrent=2; neither manager
    limits here: the generic part is that concurrent calls all succeed)."""
    manager = make_manager(mock_async_reward_function)
    data = create_test_data_proto(tokenizer, "answer", "answer")
    start_time = time.time()
    results = await asyncio.gather(*[manager.run_single(data) for _ in range(5)])
    elapsed = time.time() - start_time
    assert len(results) == 5
    assert all(r["reward_score"] == 1.0 for r in results)
    assert elapsed >= 0.01
    assert api_counter.call_count == 5


async def test_correct_vs_incorrect_answers(make_manager, tokenizer):
    """Test scoring of correct vs incorrect answers."""
    manager = make_manager(mock_async_reward_function)
    result_correct = await manager.run_single(create_test_data_proto(tokenizer, "right answer", "right answer"))
    result_incorrect = await manager.run_single(create_test_data_proto(tokenizer, "wrong answer", "right answer"))
    assert result_correct["reward_score"] == 1.0
    assert result_incorrect["reward_score"] == 0.0


async def test_extra_info_handling(make_manager, tokenizer):
    """Test that extra_info is properly passed to reward function."""
    received_extra_info = {}

    async def mock_reward_with_extra_info(
        data_source: str, solution_str: str, ground_truth: str, extra_info: dict, **kwargs
    ):
        received_extra_info.update(extra_info)
        return 1.0

    manager = make_manager(mock_reward_with_extra_info)
    data = create_test_data_proto(tokenizer, "answer", "answer")
    data.non_tensor_batch["extra_info"] = np.array([{"custom_field": "test_value"}], dtype=object)
    await manager.run_single(data)
    assert "custom_field" in received_extra_info
    assert received_extra_info["custom_field"] == "test_value"


# ---- this project: naive's full contract, compared call by call -----------------------------------
def agent_loop_row(tokenizer, response: str, ground_truth: str, data_source: str, extra_info: dict) -> DataProto:
    """One row as veRL's AgentLoopWorker._compute_score hands it to a reward worker."""
    data = create_test_data_proto(tokenizer, response, ground_truth, data_source)
    data.non_tensor_batch = {
        "data_source": np.array([data_source], dtype=object),
        "reward_model": np.array([{"ground_truth": ground_truth}], dtype=object),
        "extra_info": np.array([dict(extra_info)], dtype=object),
        "__num_turns__": np.array([3]),
        "reward_scores": np.array([{"rollout_judge": 0.25}], dtype=object),
        "tool_extra_fields": np.array([{"tool_calls_made": 1, "turn_scores": [0.5]}], dtype=object),
    }
    return data


async def test_custom_function_gets_what_naive_gives_it(stock_config, tokenizer):
    """Same keyword arguments, same extra_info (num_turns, rollout_reward_scores, tool fields) and
    reward-model routing (a GenRM-style function takes reward_router_address / reward_model_tokenizer)."""
    calls = {}

    def genrm_style(data_source, solution_str, ground_truth, extra_info, reward_router_address, reward_model_tokenizer):
        calls[current] = dict(
            data_source=data_source,
            solution_str=solution_str,
            ground_truth=ground_truth,
            extra_info=dict(extra_info),
            reward_router_address=reward_router_address,
            reward_model_tokenizer=reward_model_tokenizer,
        )
        return {"score": 0.75, "judge": "ok"}

    results = {}
    for current in MANAGERS:
        manager = get_reward_manager_cls(current)(
            config=config_for(stock_config, current),
            tokenizer=tokenizer,
            compute_score=genrm_style,
            reward_router_address="127.0.0.1:9",
            reward_model_tokenizer=tokenizer,
        )
        row = agent_loop_row(tokenizer, "The answer is 4", "4", "my_source", {"index": 7, "split": "train"})
        results[current] = await manager.run_single(row)
    assert calls["naive"] == calls["medvr_cca"]
    assert calls["naive"]["extra_info"]["num_turns"] == 3
    assert calls["naive"]["extra_info"]["rollout_reward_scores"] == {"rollout_judge": 0.25}
    assert calls["naive"]["extra_info"]["tool_calls_made"] == 1
    assert calls["naive"]["reward_router_address"] == "127.0.0.1:9"
    # medvr_cca: the same reward (no zoom, no tool reward), naive's extras plus CCA's
    assert results["medvr_cca"]["reward_score"] == results["naive"]["reward_score"] == 0.75
    naive_info, cca_info = results["naive"]["reward_extra_info"], results["medvr_cca"]["reward_extra_info"]
    assert {k: cca_info[k] for k in naive_info} == naive_info
    assert cca_info["tool_reward"] == 0.0 and cca_info["num_zoom"] == 0


GSM8K_RIGHT = "Natalia sold 48 clips in April and half as many in May: 48 + 24 = 72.\n#### 72"
GSM8K_WRONG = "She sold 48 + 48 = 96.\n#### 96"


@pytest.mark.parametrize("response, expected", [(GSM8K_RIGHT, 1.0), (GSM8K_WRONG, 0.0)])
async def test_host_default_scorer_through_verls_loader(stock_config, tokenizer, response, expected):
    """veRL's load_reward_manager (as its RewardLoopWorker builds it): a GSM8K row gets veRL's
    default_compute_score under both managers (medvr_cca used to give a correct answer -0.1)."""
    from verl.trainer.ppo.reward import load_reward_manager

    for name in MANAGERS:
        manager = load_reward_manager(config_for(stock_config, name), tokenizer)
        row = agent_loop_row(tokenizer, response, "72", "openai/gsm8k", {"index": 0, "split": "train"})
        result = await manager.run_single(row)
        assert result["reward_score"] == expected, name


MEDVR_ROW = ("<think>the left lung</think><answer>A</answer>", "A", "vqa_rad")
MEDVR_EXTRA = {"index": 0, "split": "train", "question_type": "multiple_choice", "options": {"A": "yes", "B": "no"}}


@pytest.mark.parametrize(
    "reward_kwargs, data_source, expected",
    [
        ({}, "vqa_rad", "medvr"),  # auto: MedVR's converters' data source
        ({}, "openai/gsm8k", "host"),
        ({"scorer": "medvr"}, "my_medical_set", "medvr"),  # the MedVR recipe's choice
        ({"scorer": "host"}, "vqa_rad", "host"),
    ],
)
def test_which_scorer_a_row_gets(stock_config, tokenizer, reward_kwargs, data_source, expected):
    from medvr_verl.reward_manager import MedVRCCARewardManager

    config = config_for(stock_config, "medvr_cca", **reward_kwargs)
    manager = MedVRCCARewardManager(config, tokenizer, None)
    assert manager.uses_medvr_scorer(data_source) == (expected == "medvr")
    # a custom function (or a caller's compute_score) scores every row, MedVR's rows included
    assert not MedVRCCARewardManager(config, tokenizer, mock_sync_reward_function).uses_medvr_scorer(data_source)


async def test_medvr_rows_keep_medvr_scoring_and_unknown_sources_say_what_to_set(stock_config, tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(config_for(stock_config, "medvr_cca"), tokenizer)
    response, truth, source = MEDVR_ROW
    result = await manager.run_single(agent_loop_row(tokenizer, response, truth, source, MEDVR_EXTRA))
    info = result["reward_extra_info"]
    assert result["reward_score"] == 1.0 and info["acc"] == 1.0 and info["format"] == 1.0 and info["pred"] == "A"
    assert info["score"] == 1.0
    with pytest.raises(NotImplementedError, match="scorer=medvr"):
        await manager.run_single(agent_loop_row(tokenizer, response, truth, "my_medical_set", MEDVR_EXTRA))


def test_medvr_data_sources_are_the_converters():
    from medvr_verl.data.readers import READERS
    from medvr_verl.reward_manager import MEDVR_DATA_SOURCES

    assert set(READERS) == MEDVR_DATA_SOURCES
