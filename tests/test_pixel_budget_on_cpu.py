"""Issue 13 item 9: one pixel budget for data, processor and tool that fits the token budgets, and
no silent drops (medvr_verl.data.dataset.MedVRDataset counts and logs what the length filter drops).

Runs veRL's own RLHFDataset length filter (create_rl_dataset with the recipe's data config) and the
tiny Qwen2.5-VL processor under the recipe's data.mm_processor_kwargs.
"""

from __future__ import annotations

import logging

import numpy as np
import verl  # noqa: F401  (loads the plugin: ${medvr.*} resolvers)
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from medvr_verl.data import ImageRef, Record, write_records
from medvr_verl.data.dataset import MedVRDataset

BIG = (2400, 1800)  # 4.3 MP: ~5,500 visual tokens under Qwen2.5-VL's default budget, 1,280 under the recipe's


def _recipe(tiny_model_path, *overrides):
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="medvr_verl.recipes.medvr", version_base=None):
        config = compose(
            config_name="medvr",
            overrides=[
                "data.train_files=/unused.parquet",
                "data.val_files=/unused.parquet",
                f"actor_rollout_ref.model.path={tiny_model_path}",
                # in-process: datasets forks a pool even for one worker, which can hang beside threads
                "data.filter_overlong_prompts_workers=null",
                *overrides,
            ],
        )
    OmegaConf.resolve(config)
    return config


def _image(size, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _parquet(tmp_path, image_sets):
    records = [
        Record(
            dataset="budget",
            split="train",
            source_id=str(i),
            question="Is there an abnormality?",
            answer="yes",
            question_type="closed",
            images=[ImageRef(name=f"{i}_{k}.png", pil=_image(size, k)) for k, size in enumerate(sizes)],
        )
        for i, sizes in enumerate(image_sets)
    ]
    path = tmp_path / "budget.parquet"
    write_records(records, path, progress=False)
    return str(path)


def _dataset(config, path):
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass

    model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    return create_rl_dataset(path, config.data, model.tokenizer, model.processor, is_train=True)


def test_recipe_pixel_budget_is_one_pair_that_the_tool_follows(tiny_model_path):
    from verl.tools.tool_registry import initialize_tools_from_config

    config = _recipe(tiny_model_path)
    kwargs = config.data.mm_processor_kwargs
    budget = (int(kwargs.min_pixels), int(kwargs.max_pixels))
    assert budget == (3136, 28 * 28 * 1280)
    (tool,) = initialize_tools_from_config(config.actor_rollout_ref.rollout.multi_turn.tool_config_path)

    class Loop:  # what veRL's ToolAgentLoop hands the tool: AgentData.mm_processor_kwargs
        mm_processor_kwargs = OmegaConf.to_container(kwargs)

    assert tool.pixel_budget(Loop()) == budget
    assert config.data.custom_cls.name == "MedVRDataset"


def test_token_budgets_fit_the_pixel_budget(tiny_model_path):
    """Worst case: every assistant turn but the last zooms into a region at least max_pixels large.
    The crops' visual tokens still leave room for text; one largest prompt image fits the prompt."""
    config = _recipe(tiny_model_path)
    max_pixels = int(config.data.mm_processor_kwargs.max_pixels)
    tokens_per_image = max_pixels // (28 * 28)
    turns = int(config.actor_rollout_ref.rollout.multi_turn.max_assistant_turns)
    tool_turn_overhead = 64  # <|im_start|>user / <tool_response> / vision markers / the tool's text
    crops = (turns - 1) * (tokens_per_image + tool_turn_overhead)
    assert config.data.max_response_length - crops >= 2048, (crops, config.data.max_response_length)
    assert config.data.max_prompt_length - tokens_per_image >= 1536  # system prompt, tool block, question


def test_large_images_are_kept_under_the_recipe_budget(tiny_model_path, tmp_path, caplog):
    config = _recipe(tiny_model_path)
    path = _parquet(tmp_path, [[BIG], [(64, 64)], [(300, 200)]])
    with caplog.at_level(logging.INFO, logger="medvr_verl.data.dataset"):
        dataset = _dataset(config, path)
    assert isinstance(dataset, MedVRDataset)
    assert len(dataset) == 3 and dataset.filtered_out == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "dropped" in r.getMessage()]


def test_dropped_prompts_are_counted_and_logged(tiny_model_path, tmp_path, caplog):
    # Qwen2.5-VL's own default budget (12,845,056 pixels) against a 4,096-token prompt: the large
    # image no longer fits, and a question with four large images does not fit the recipe's budget.
    config = _recipe(tiny_model_path, "data.mm_processor_kwargs.max_pixels=12845056")
    path = _parquet(tmp_path, [[BIG], [(64, 64)], [(300, 200)] * 2])
    with caplog.at_level(logging.INFO, logger="medvr_verl.data.dataset"):
        dataset = _dataset(config, path)
    assert len(dataset) == 2 and dataset.filtered_out == 1
    assert dataset.filtered_out_examples == [("budget", 0)]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "1 of 3 prompts" in message and "max_prompt_length=4096" in message and "12845056" in message

    config = _recipe(tiny_model_path)
    path = _parquet(tmp_path, [[BIG] * 4, [BIG]])
    dataset = _dataset(config, path)
    assert len(dataset) == 1 and dataset.filtered_out == 1 and dataset.filtered_out_examples == [("budget", 0)]


def test_filter_off_counts_nothing(tiny_model_path, tmp_path):
    config = _recipe(tiny_model_path, "data.filter_overlong_prompts=false")
    dataset = _dataset(config, _parquet(tmp_path, [[(64, 64)]]))
    assert len(dataset) == 1 and dataset.filtered_out == 0
