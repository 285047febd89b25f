"""Bad data is named before Ray starts, and counted by cause while training (issue 20 items 1-2).

Before: an integer ground truth (0/1 for options A/B) trained with every reward 0.0 and no word; an
empty parquet failed a minute in inside a Ray traceback; a text-only parquet loaded under the zoom
agent silently; a row with a corrupt image was reported as "longer than data.max_prompt_length".
Files are written by this project's converter (``medvr_verl.data.write_records``) and then damaged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from PIL import Image

from medvr_verl.data import ImageRef, Record, write_records
from medvr_verl.data_check import check_data
from medvr_verl.ground_truth import ground_truth_problem

OPTIONS = {"A": "CT", "B": "MRI"}


def _records(n=4):
    return [
        Record(
            dataset="vqa_rad",
            split="train",
            source_id=str(i),
            question="Which imaging modality produced this image?",
            answer="A" if i % 2 == 0 else "B",
            question_type="multiple_choice",
            options=OPTIONS,
            images=[ImageRef(name=f"{i}.png", pil=Image.new("RGB", (64, 48), (i * 40, 90, 160)))],
        )
        for i in range(n)
    ]


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.parquet"
    write_records(_records(), path, progress=False)
    return path


def _rewrite(src, dst, change):
    table = pq.read_table(src)
    rows = table.to_pylist()
    rows = change(rows)
    schema = pa.schema([f for f in table.schema if not rows or f.name in rows[0]])
    if rows and "reward_model" in rows[0]:
        # let the ground-truth type follow the data (an int column, as pandas writes one)
        fields = [f for f in schema if f.name != "reward_model"]
        schema = pa.schema(fields + [pa.field("reward_model", pa.infer_type([r["reward_model"] for r in rows]))])
        rows = [{f.name: r.get(f.name) for f in schema} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema) if rows else table.slice(0, 0), dst)
    return dst


def _config(train, val=None, agent="medvr_agent", **check):
    return OmegaConf.create(
        {
            "data": {
                "train_files": str(train),
                "val_files": str(val or train),
                "image_key": "images",
                "prompt_key": "prompt",
                **({"medvr_check": check} if check else {}),
            },
            "actor_rollout_ref": {"rollout": {"agent": {"default_agent_loop": agent}}},
        }
    )


# ---- the ground-truth rule (pure) -------------------------------------------------------------------
@pytest.mark.parametrize(
    "truth, extra, kind",
    [
        ("A", {"options": OPTIONS, "question_type": "multiple_choice"}, None),
        ("MRI", {"options": OPTIONS}, None),  # an option's text
        (np.array(["yes", "y"], dtype=object), {"question_type": "closed"}, None),
        ("72", None, None),  # GSM8K
        (0, {"options": OPTIONS, "question_type": "multiple_choice"}, "not_text"),
        (1.0, None, "not_text"),
        (None, None, "missing"),
        (float("nan"), None, "missing"),
        ("  ", None, "empty"),
        ("E", {"options": {**OPTIONS, "C": None}, "question_type": "multiple_choice"}, "no_option"),
    ],
)
def test_ground_truth_problem(truth, extra, kind):
    problem = ground_truth_problem(truth, extra)
    assert (problem.kind if problem else None) == kind


# ---- before Ray: check_data ---------------------------------------------------------------------------
def test_a_good_file_passes(good):
    assert check_data(_config(good), needs_images=True) == []


def test_integer_ground_truths_are_named_with_row_and_fix(good, tmp_path):
    def to_int(rows):
        for i, row in enumerate(rows):
            row["reward_model"] = {"style": "rule", "ground_truth": i % 2}
        return rows

    bad = _rewrite(good, tmp_path / "int_gt.parquet", to_int)
    (line,) = check_data(_config(bad, good), needs_images=True)
    assert str(bad) in line and "data.train_files" in line
    assert "row 0, 1, 2 (and 1 more), 4 of 4 checked" in line
    assert "is a int, not text" in line and "option letter" in line


def test_empty_missing_and_unreadable_files(good, tmp_path):
    empty = _rewrite(good, tmp_path / "empty.parquet", lambda rows: [])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not a parquet")
    lines = check_data(_config(empty, tmp_path / "nowhere.parquet"), needs_images=True)
    assert any("empty.parquet: the file has no rows" in line for line in lines)
    assert any("nowhere.parquet: no such file" in line and "data.val_files" in line for line in lines)
    (line,) = check_data(_config(junk, good), needs_images=True)
    assert "not a readable parquet" in line


def test_text_only_data_under_the_zoom_agent(good, tmp_path):
    def drop_images(rows):
        for row in rows:
            row.pop("images")
        return rows

    text = _rewrite(good, tmp_path / "text.parquet", drop_images)
    (line,) = check_data(_config(text, good), needs_images=True)
    assert "no 'images' column" in line and "default_agent_loop=single_turn_agent" in line
    assert check_data(_config(text, good, agent="single_turn_agent"), needs_images=False) == []


def test_undecodable_first_image_is_named(good, tmp_path):
    def corrupt(rows):
        rows[1]["images"] = [{"bytes": b"\x89PNG\r\n\x1a\n broken", "path": None}]
        return rows

    bad = _rewrite(good, tmp_path / "corrupt.parquet", corrupt)
    (line,) = check_data(_config(bad, good), needs_images=True)
    assert "row 1 (1 of the first 4): image 0 cannot be decoded" in line
    assert check_data(_config(bad, good, image_rows=1), needs_images=True) == []  # only row 0 decoded


def test_switch_off_and_sample_size(good, tmp_path):
    def late_int(rows):
        rows[3]["reward_model"] = {"style": "rule", "ground_truth": 1}
        for row in rows[:3]:
            row["reward_model"] = {"style": "rule", "ground_truth": 0}
        return rows

    bad = _rewrite(good, tmp_path / "int_gt.parquet", late_int)
    assert check_data(_config(bad, good, enable=False), needs_images=True) == []
    (line,) = check_data(_config(bad, good, max_rows=2), needs_images=True)
    assert "2 of 2 checked" in line
    with pytest.raises(ValueError, match="unknown data.medvr_check options"):
        check_data(_config(bad, good, max_row=2), needs_images=True)


def test_main_ppo_stops_before_ray_with_one_line_per_problem(good, tmp_path):
    """The MedVR recipe's Hydra callback runs the check: seconds, exit status 1, no Ray."""

    def to_int(rows):
        for i, row in enumerate(rows):
            row["reward_model"] = {"style": "rule", "ground_truth": i % 2}
        return rows

    bad = _rewrite(good, tmp_path / "int_gt.parquet", to_int)
    empty = _rewrite(good, tmp_path / "empty.parquet", lambda rows: [])
    command = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "--config-path=pkg://medvr_verl.recipes.medvr",
        "--config-name=medvr",
        "+backend=cpu",  # past the GPU check, which runs first (no GPU here)
        f"data.train_files={bad}",
        f"data.val_files={empty}",
    ]
    env = {**os.environ, "VERL_PLATFORM": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "the data cannot train as configured" in result.stderr
    assert "int_gt.parquet: row 0, 1, 2" in result.stderr and "empty.parquet: the file has no rows" in result.stderr
    assert "data.medvr_check.enable=false" in result.stderr
    assert "ray init kwargs" not in result.stdout


# ---- while loading: dropped rows by cause ---------------------------------------------------------------
@pytest.mark.vl_stack
def test_unreadable_images_are_not_reported_as_overlong(good, tmp_path, tiny_model_path, caplog):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass

    def corrupt(rows):
        rows[1]["images"] = [{"bytes": b"\x89PNG\r\n\x1a\n broken", "path": None}]
        return rows

    bad = _rewrite(good, tmp_path / "corrupt.parquet", corrupt)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="medvr_verl.recipes.medvr", version_base=None):
        config = compose(
            config_name="medvr",
            overrides=[
                f"data.train_files={bad}",
                f"data.val_files={bad}",
                f"actor_rollout_ref.model.path={tiny_model_path}",
                "data.filter_overlong_prompts_workers=null",
            ],
        )
    OmegaConf.resolve(config)
    model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    with caplog.at_level(logging.WARNING, logger="medvr_verl.data.dataset"):
        dataset = create_rl_dataset(str(bad), config.data, model.tokenizer, model.processor, is_train=True)
    assert len(dataset) == 3 and dataset.filtered_out == 1
    assert dataset.dropped_unreadable == 1 and dataset.dropped_overlong == 0
    assert dataset.unreadable_examples[0][:2] == ("vqa_rad", 1)
    # MedVRDataset's own warnings (the datasets library may warn once per process, e.g. on fingerprints)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("medvr")]
    assert len(messages) == 1
    assert "image cannot be read" in messages[0] and "longer than" not in messages[0]


# ---- while training: unusable ground truths counted -------------------------------------------------------
async def test_medvr_cca_counts_and_warns_once_per_cause(tokenizer, caplog):
    from verl import DataProto

    from medvr_verl.replay_buffer import rollout_metrics
    from medvr_verl.reward_manager import MedVRCCARewardManager

    config = OmegaConf.create({"reward": {"reward_kwargs": {"scorer": "medvr", "tool_reward": "none"}}})
    manager = MedVRCCARewardManager(config, tokenizer, None)

    def row(truth, index):
        ids = tokenizer.encode("<think>x</think><answer>A</answer>", add_special_tokens=False)
        data = DataProto.from_dict({"responses": torch_tensor([ids]), "attention_mask": torch_tensor([[1] * len(ids)])})
        data.non_tensor_batch = {
            "data_source": np.array(["vqa_rad"], dtype=object),
            "reward_model": np.array([{"ground_truth": truth}], dtype=object),
            "extra_info": np.array([{"index": index, "options": OPTIONS, "question_type": "multiple_choice"}]),
        }
        return data

    with caplog.at_level(logging.WARNING, logger="medvr_verl.reward_manager"):
        results = [await manager.run_single(row(truth, i)) for i, truth in enumerate([0, 1, "A"])]
    infos = [r["reward_extra_info"] for r in results]
    assert [i["gt_unusable"] for i in infos] == [1.0, 1.0, 0.0]
    assert [r["reward_score"] for r in results] == [0.0, 0.0, 1.0]
    warnings = [r.getMessage() for r in caplog.records if "can never score" in r.getMessage()]
    assert len(warnings) == 1 and "extra_info.index=0" in warnings[0] and "option letter" in warnings[0]
    tags = [{"medvr": {"gt_unusable": i["gt_unusable"], "acc": i["acc"]}} for i in infos]
    assert rollout_metrics(tags)["medvr/gt_unusable/count"] == 2.0


def torch_tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.long)
