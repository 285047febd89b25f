"""medvr_verl.data: each public release's converter on a tiny fixture in the release's real layout,
read back with pandas and through veRL's real ``RLHFDataset`` (tiny Qwen2.5-VL processor), and
scored with :func:`medvr_verl.scoring.compute_score` on the ``extra_info`` RLHFDataset returns.

Fixtures are generated in ``tmp_path`` (json/csv/jsonl + a few tiny PNG/JPEG images); each holds
good records plus one with a missing image and one malformed record.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvr_verl.data import (
    SYSTEM_PROMPT,
    TEXT_SYSTEM_PROMPT,
    ConversionReport,
    ImageRef,
    LayoutError,
    Record,
    convert,
    read_medxpertqa_mm,
    read_omnimedvqa,
    read_pmc_vqa,
    read_slake,
    read_vqa_rad,
    row_schema,
    write_records,
)
from medvr_verl.data.records import (
    SKIP_ANSWER_NOT_IN_OPTIONS,
    SKIP_DUPLICATE,
    SKIP_IMAGE_TOO_LARGE,
    SKIP_MISSING_IMAGE,
    SKIP_NO_IMAGE,
    SKIP_NON_ENGLISH,
    SKIP_TRAIN_TEST_OVERLAP,
    SKIP_UNKNOWN_ANSWER_LABEL,
    SKIP_UNREADABLE_IMAGE,
    malformed,
    split_role,
)
from medvr_verl.scoring import compute_score

REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------
# Fixture helpers
# --------------------------------------------------------------------------------------------------


def _image(path: Path, size=(48, 40), mode="RGB", fmt=None, seed=0) -> bytes:
    """Write a small random image; returns the file's bytes."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif mode == "L":
        arr = rng.integers(0, 256, (h, w), dtype=np.uint8)
    elif mode == "I;16":
        arr = rng.integers(0, 4096, (h, w), dtype=np.uint16)
    else:  # pragma: no cover
        raise ValueError(mode)
    img = Image.fromarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path.read_bytes()


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _no_tmp_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def _read(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out)


# --------------------------------------------------------------------------------------------------
# veRL's RLHFDataset
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vl_processor(tiny_model_path):
    from transformers import AutoProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path), AutoProcessor.from_pretrained(tiny_model_path)


def _rlhf(out: Path, vl_processor, tmp_path: Path, monkeypatch, *, filter_overlong: bool = False):
    """veRL's RLHFDataset over ``out`` with a data config like veRL's ``data`` section."""
    import datasets
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    tokenizer, processor = vl_processor
    config = OmegaConf.create(
        {
            "cache_dir": str(tmp_path / "verl_cache"),
            "prompt_key": "prompt",
            "image_key": "images",
            "max_prompt_length": 4096,
            "return_raw_chat": True,
            "truncation": "error",
            "filter_overlong_prompts": filter_overlong,
            # None: filter in-process (datasets forks a pool even for 1 worker; forking next to Ray can hang)
            "filter_overlong_prompts_workers": None,
        }
    )
    return RLHFDataset(data_files=[str(out)], tokenizer=tokenizer, config=config, processor=processor)


def _check_rlhf_items(ds, df: pd.DataFrame, *, wrong: dict[int, str] | None = None) -> list[dict]:
    """Every item: raw_prompt with the images in place, reward/extra fields intact, and compute_score
    gives acc 1.0 for the ground truth (and for the option text of multiple-choice questions) on the
    extra_info exactly as RLHFDataset returns it."""
    assert len(ds) == len(df)
    items = []
    for i in range(len(ds)):
        item = ds[i]
        items.append(item)
        row = df.iloc[i]
        assert item["data_source"] == row["data_source"]
        messages = item["raw_prompt"]
        assert [m["role"] for m in messages] == ["system", "user"]
        content = messages[1]["content"]
        assert isinstance(content, list)
        image_parts = [part for part in content if part["type"] == "image"]
        sizes = item["extra_info"]["image_sizes"]
        assert len(image_parts) == len(sizes) == len(row["images"])
        for part, (w, h) in zip(image_parts, sizes):
            img = part["image"]
            if isinstance(img, str):  # embed_images=False: a path, read by qwen_vl_utils later
                img = Image.open(img)
            assert isinstance(img, Image.Image)
            assert img.size == (w, h)  # native resolution, no resizing
        text = "".join(part["text"] for part in content if part["type"] == "text")
        assert item["extra_info"]["question"].split()[0] in text
        gt = item["reward_model"]["ground_truth"]
        extra = item["extra_info"]
        assert item["index"] == extra["index"] == i
        result = compute_score(item["data_source"], f"<think>x</think><answer>{gt}</answer>", gt, extra)
        assert result["acc"] == 1.0 and result["format"] == 1.0, (gt, extra)
        if extra["question_type"] == "multiple_choice":
            assert gt in extra["options"] and extra["options"][gt] == extra["answer_text"]
            assert "Answer with the option's letter." in text
            by_text = compute_score(
                item["data_source"], f"<think>x</think><answer>{extra['answer_text']}</answer>", gt, extra
            )
            assert by_text["acc"] == 1.0, extra
            other = next(k for k, v in extra["options"].items() if v is not None and k != gt)
            assert compute_score(None, f"<think>x</think><answer>{other}</answer>", gt, extra)["acc"] == 0.0
        else:
            assert extra["options"] is None
        if wrong and i in wrong:
            assert compute_score(None, f"<think>x</think><answer>{wrong[i]}</answer>", gt, extra)["acc"] == 0.0
    return items


# --------------------------------------------------------------------------------------------------
# VQA-RAD (OSF json + image folder; Hugging Face copies)
# --------------------------------------------------------------------------------------------------


def _vqa_rad_osf(root: Path) -> dict[str, bytes]:
    images = root / "VQA_RAD Image Folder"
    files = {
        "synpic1.jpg": _image(images / "synpic1.jpg", (64, 48), "RGB", seed=1),
        "synpic2.jpg": _image(images / "synpic2.jpg", (40, 56), "L", seed=2),
    }
    base = {"image_organ": "CHEST", "question_type": "PRES", "image_case_url": "https://example/x"}
    entries = [
        {
            **base,
            "qid": 1,
            "image_name": "synpic1.jpg",
            "question": "Is there a mass?",
            "answer": "Yes",
            "answer_type": "CLOSED",
            "phrase_type": "test_freeform",
        },
        {
            **base,
            "qid": 2,
            "image_name": "synpic1.jpg",
            "question": "Is this a CT or an MRI?",
            "answer": "CT",
            "answer_type": "CLOSED",
            "phrase_type": "test_para",
        },
        {
            **base,
            "qid": 3,
            "image_name": "synpic2.jpg",
            "question": "Where is the lesion?",
            "answer": "left lung",
            "answer_type": "OPEN",
            "phrase_type": "test_freeform",
        },
        {
            **base,
            "qid": 4,
            "image_name": "synpic404.jpg",
            "question": "Is it normal?",
            "answer": "no",
            "answer_type": "CLOSED",
            "phrase_type": "test_freeform",
        },
        {
            **base,
            "qid": 5,
            "image_name": "synpic2.jpg",
            "answer": "no",
            "answer_type": "CLOSED",
            "phrase_type": "test_freeform",
        },  # no question: malformed
        {
            **base,
            "qid": 6,
            "image_name": "synpic1.jpg",
            "question": "Is there a mass?",
            "answer": "Yes",
            "answer_type": "CLOSED",
            "phrase_type": "test_para",
        },  # duplicate of qid 1
        {
            **base,
            "qid": 7,
            "image_name": "synpic2.jpg",
            "question": "Where is the lesion?",
            "answer": "left lung",
            "answer_type": "OPEN",
            "phrase_type": "freeform",
        },  # train copy of a test triplet
        {
            **base,
            "qid": 8,
            "image_name": "synpic2.jpg",
            "question": "How many ribs are fractured?",
            "answer": 2,
            "answer_type": "OPEN",
            "phrase_type": "para",
        },
    ]
    _write_json(root / "VQA_RAD Dataset Public.json", entries)
    return files


@pytest.mark.vl_stack
def test_vqa_rad_osf(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "VQA_RAD"
    files = _vqa_rad_osf(root)
    out = tmp_path / "out" / "vqa_rad_test.parquet"
    report = convert("VQA-RAD", root, out, split="test", progress=False, verbose=False)
    assert report.written == 3
    assert report.skip_reasons == {SKIP_MISSING_IMAGE: 1, malformed("question"): 1, SKIP_DUPLICATE: 1}
    assert report.examples[SKIP_MISSING_IMAGE] == ["4"]
    _no_tmp_leftovers(out.parent)

    df = _read(out)
    assert list(df["data_source"]) == ["vqa_rad"] * 3
    assert list(df["agent_name"]) == ["medvr_agent"] * 3
    types = [e["question_type"] for e in df["extra_info"]]
    # one rule for the OSF json and the Hugging Face copy: closed iff the answer is yes/no, so qid 2
    # ("Is this a CT or an MRI?" -> "CT", labelled CLOSED by the release) is open; the label is kept.
    assert types == ["closed", "open", "open"]
    assert [e["answer_type"] for e in df["extra_info"]] == ["CLOSED", "CLOSED", "OPEN"]
    assert {json.loads(e["meta"])["question_type_rule"] for e in df["extra_info"]} == {"answer_yes_no"}
    assert df["prompt"][0][0]["content"] == SYSTEM_PROMPT
    user = df["prompt"][0][1]["content"]
    assert user.startswith("<image>\nIs there a mass?\n") and user.count("<image>") == 1
    assert df["images"][0][0]["bytes"] == files["synpic1.jpg"]  # original file bytes, untouched
    assert df["images"][2][0]["bytes"] == files["synpic2.jpg"]
    assert [e["split"] for e in df["extra_info"]] == ["test"] * 3
    assert json.loads(df["extra_info"][0]["meta"])["image_organ"] == "CHEST"

    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch, filter_overlong=True)
    items = _check_rlhf_items(ds, df, wrong={0: "no", 1: "CT or MRI", 2: "right lung"})
    assert items[1]["extra_info"]["answer_text"] == "CT"

    train = convert("vqa_rad", root, tmp_path / "train.parquet", split="train", progress=False, verbose=False)
    assert train.written == 1 and train.skip_reasons == {SKIP_TRAIN_TEST_OVERLAP: 1}
    row = _read(tmp_path / "train.parquet").iloc[0]
    assert row["reward_model"]["ground_truth"] == "2" and row["extra_info"]["question_type"] == "open"


def test_vqa_rad_hf_dataset_objects(tmp_path):
    """An in-memory datasets.Dataset/DatasetDict with the hub columns (image, question, answer)."""
    import datasets

    def make(n, seed):
        imgs = [Image.fromarray(np.full((20 + i, 30, 3), 40 * i + seed, np.uint8)) for i in range(n)]
        return datasets.Dataset.from_dict(
            {
                "image": imgs,
                "question": [f"is there effusion {i}?" for i in range(n)],
                "answer": ["yes", "no", "left"][:n],
            },
            features=datasets.Features(
                {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
            ),
        )

    dd = datasets.DatasetDict({"train": make(3, 0), "test": make(2, 7)})
    report = convert("vqa_rad", dd, tmp_path / "a.parquet", split="test", progress=False, verbose=False)
    assert report.written == 2
    df = _read(tmp_path / "a.parquet")
    stored = dd["test"].cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert df["images"][0][0]["bytes"] == stored  # the bytes the dataset holds, not re-encoded
    assert [e["question_type"] for e in df["extra_info"]] == ["closed", "closed"]
    report = convert("vqa_rad", dd["train"], tmp_path / "b.parquet", split="train", progress=False, verbose=False)
    assert [e["question_type"] for e in _read(tmp_path / "b.parquet")["extra_info"]] == ["closed", "closed", "open"]
    with pytest.raises(ValueError, match="no split 'validation'"):
        convert("vqa_rad", dd, tmp_path / "c.parquet", split="validation", progress=False, verbose=False)
    assert not (tmp_path / "c.parquet").exists()
    # save_to_disk folder
    dd.save_to_disk(str(tmp_path / "saved"))
    report = convert("vqa_rad", tmp_path / "saved", tmp_path / "d.parquet", split="test", progress=False, verbose=False)
    assert report.written == 2
    with pytest.raises(ValueError, match="embed_images=False"):
        convert("vqa_rad", dd, tmp_path / "e.parquet", split="test", embed_images=False, progress=False, verbose=False)
    assert not (tmp_path / "e.parquet").exists()
    _no_tmp_leftovers(tmp_path)


# --------------------------------------------------------------------------------------------------
# SLAKE
# --------------------------------------------------------------------------------------------------


def _slake(root: Path) -> None:
    imgs = root / "imgs"
    _image(imgs / "xmlab0" / "source.jpg", (48, 40), "RGB", fmt="JPEG", seed=3)
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(imgs / "xmlab0" / "mask.png")
    (imgs / "xmlab0" / "mask.txt").write_text("1:Liver\n2:Spleen\n", encoding="utf-8")
    _write_json(imgs / "xmlab0" / "detection.json", [{"Liver": [10, 5, 20, 10]}, {"Spleen": [30, 20, 50, 50]}])
    _image(imgs / "xmlab1" / "source.jpg", (36, 36), "L", fmt="JPEG", seed=4)
    base = {
        "img_id": 0,
        "img_name": "xmlab0/source.jpg",
        "location": "Abdomen",
        "modality": "CT",
        "content_type": "Organ",
        "base_type": "vqa",
        "triple": ["vhead", "_", "_"],
    }
    test = [
        {
            **base,
            "qid": 100,
            "question": "Does the picture contain liver?",
            "answer": "Yes",
            "q_lang": "en",
            "answer_type": "CLOSED",
        },
        {
            **base,
            "qid": 101,
            "question": "Which organ is the largest?",
            "answer": "Liver",
            "q_lang": "en",
            "answer_type": "OPEN",
        },
        {**base, "qid": 102, "question": "图中包含肝脏吗?", "answer": "是", "q_lang": "zh", "answer_type": "CLOSED"},
        {
            **base,
            "qid": 103,
            "question": "Which is bigger, liver or spleen?",
            "answer": "Liver",
            "q_lang": "en",
            "answer_type": "CLOSED",
        },
        {
            **base,
            "qid": 104,
            "img_id": 9,
            "img_name": "xmlab9/source.jpg",
            "question": "Is this a CT?",
            "answer": "Yes",
            "q_lang": "en",
            "answer_type": "CLOSED",
        },
        {**base, "qid": 105, "question": "What modality is this?", "q_lang": "en", "answer_type": "OPEN"},
        {
            **base,
            "qid": 106,
            "img_id": 1,
            "img_name": "xmlab1/source.jpg",
            "modality": "MRI",
            "question": "Is the brain healthy?",
            "answer": "No",
            "q_lang": "en",
            "answer_type": "CLOSED",
        },
    ]
    _write_json(root / "test.json", test)
    _write_json(root / "train.json", test[:2])
    _write_json(root / "validate.json", test[5:])


@pytest.mark.vl_stack
def test_slake(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "Slake1.0"
    _slake(root)
    out = tmp_path / "slake.parquet"
    report = convert("slake", root, out, split="test", progress=False, verbose=False)
    assert report.written == 4
    assert report.skip_reasons == {SKIP_NON_ENGLISH: 1, SKIP_MISSING_IMAGE: 1, malformed("answer"): 1}
    assert report.warnings == {}
    df = _read(out)
    extra = list(df["extra_info"])
    assert [e["source_id"] for e in extra] == ["100", "101", "103", "106"]
    assert [e["question_type"] for e in extra] == ["closed", "open", "closed", "closed"]
    assert [e["modality"] for e in extra] == ["CT", "CT", "CT", "MRI"]
    # detection.json [x, y, w, h] -> [x1, y1, x2, y2], clipped to the 48x40 image
    assert [list(map(list, e["gt_boxes"])) for e in extra[:1]] == [[[10.0, 5.0, 30.0, 15.0], [30.0, 20.0, 48.0, 40.0]]]
    assert list(extra[0]["gt_box_labels"]) == ["Liver", "Spleen"]
    assert extra[0]["mask_path"] == str((root / "imgs" / "xmlab0" / "mask.png").resolve())
    meta0 = json.loads(extra[0]["meta"])
    assert meta0["mask_legend_file"] == str((root / "imgs" / "xmlab0" / "mask.txt").resolve())
    assert meta0["mask_legend"] == {"1": "Liver", "2": "Spleen"}
    assert meta0["question_type_rule"] == "release_label_or_yes_no"
    assert len(extra[3]["gt_boxes"]) == 0 and extra[3]["mask_path"] is None
    assert list(extra[0]["image_files"]) == ["imgs/xmlab0/source.jpg"]

    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch)
    items = _check_rlhf_items(ds, df, wrong={0: "no", 1: "spleen", 2: "spleen"})
    assert items[0]["extra_info"]["gt_boxes"][0] == [10.0, 5.0, 30.0, 15.0]

    val = convert("slake", root, tmp_path / "val.parquet", split="val", progress=False, verbose=False)
    assert val.written == 1 and val.skip_reasons == {malformed("answer"): 1}
    val_extra = _read(tmp_path / "val.parquet")["extra_info"][0]
    assert val_extra["split"] == "validation" and val_extra["source_split"] == "validate"
    every = list(read_slake(root, "test", english_only=False))
    assert any(r.question.startswith("图") for r in every)


# --------------------------------------------------------------------------------------------------
# PathVQA (Hugging Face hub snapshot: data/<split>-*.parquet)
# --------------------------------------------------------------------------------------------------


def _path_vqa_snapshot(root: Path, tmp_path: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = _image(tmp_path / "p1.jpg", (50, 30), "RGB", fmt="JPEG", seed=5)
    png = _image(tmp_path / "p2.png", (30, 50), "L", seed=6)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = {
        "image": [
            {"bytes": good, "path": "p1.jpg"},
            {"bytes": png, "path": "p2.png"},
            {"bytes": b"not an image at all", "path": "broken.jpg"},
            None,
            {"bytes": good, "path": "p1.jpg"},
        ],
        "question": ["is there necrosis?", "what does this show?", "is it benign?", "is it x?", None],
        "answer": ["no", "granuloma", "yes", "yes", "yes"],
    }
    table = pa.table(
        rows, schema=pa.schema([("image", image_type), ("question", pa.string()), ("answer", pa.string())])
    )
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 2), root / "data" / "validation-00000-of-00001.parquet")
    return good


@pytest.mark.vl_stack
def test_path_vqa_hub_snapshot(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "path-vqa"
    good = _path_vqa_snapshot(root, tmp_path)
    out = tmp_path / "pvqa.parquet"
    report = convert("PathVQA", root, out, split="test", progress=False, verbose=False)
    assert report.written == 2
    assert report.skip_reasons == {SKIP_UNREADABLE_IMAGE: 1, SKIP_NO_IMAGE: 1, malformed("question"): 1}
    df = _read(out)
    assert df["images"][0][0]["bytes"] == good
    assert [e["question_type"] for e in df["extra_info"]] == ["closed", "open"]
    assert [e["modality"] for e in df["extra_info"]] == ["pathology", "pathology"]
    assert [list(e["image_files"]) for e in df["extra_info"]] == [["p1.jpg"], ["p2.png"]]
    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch)
    _check_rlhf_items(ds, df, wrong={0: "yes", 1: "carcinoma"})
    val = convert("path_vqa", root, tmp_path / "v.parquet", split="val", progress=False, verbose=False)
    assert val.written == 2
    assert _read(tmp_path / "v.parquet")["extra_info"][0]["source_split"] == "validation"
    with pytest.raises(LayoutError, match=r"no parquet files for split 'train'"):
        convert("path_vqa", root, tmp_path / "t.parquet", split="train", progress=False, verbose=False)


def test_path_vqa_pickle_release_refused(tmp_path):
    (tmp_path / "pvqa" / "qas").mkdir(parents=True)
    with pytest.raises(LayoutError, match="pickle"):
        convert("path_vqa", tmp_path / "pvqa", tmp_path / "x.parquet", split="test", progress=False, verbose=False)


# --------------------------------------------------------------------------------------------------
# PMC-VQA
# --------------------------------------------------------------------------------------------------

_PMC_HEADER = [
    "index",
    "Figure_path",
    "Caption",
    "Question",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
    "Answer",
    "Answer_label",
]


def _pmc_vqa(root: Path) -> None:
    _image(root / "images" / "PMC1_fig1.jpg", (52, 44), "RGB", fmt="JPEG", seed=7)
    _image(root / "images" / "PMC2_fig3.png", (64, 64), "RGB", seed=8)
    _image(root / "images" / "PMC3_big.png", (120, 100), "L", seed=9)
    rows = [
        [
            0,
            "PMC1_fig1.jpg",
            "cap",
            "What imaging modality was used?",
            " A:CT scan ",
            " B:MRI",
            " C:PET",
            " D:Ultrasound ",
            "CT scan",
            "A",
        ],
        [
            1,
            "PMC2_fig3.png",
            "cap",
            "Which organ is enlarged?",
            "A:Liver",
            "B:Spleen",
            "C:Kidney",
            "D:Heart",
            "Spleen",
            "C",
        ],  # label disagrees with the text: the official label C is kept (a warning)
        [2, "PMC1_fig1.jpg", "cap", "What is shown?", "A:x", "B:y", "C:z", "D:w", "q", "F"],  # unknown label
        [3, "PMC9_missing.jpg", "cap", "What is seen?", "A:a1", "B:b1", "C:c1", "D:d1", "a1", "A"],
        [4, "PMC1_fig1.jpg", "cap", "", "A:a1", "B:b1", "C:c1", "D:d1", "a1", "A"],  # no question
        [5, "PMC3_big.png", "cap", "What stain is used?", "A:H&E", "B:PAS", "C:Gram", "D:Giemsa", "H&E", "A"],
        [
            6,
            "PMC2_fig3.png",
            "cap",
            "Where is the <image> lesion?",
            "A: left",
            "B: right",
            "C: both",
            "D: none",
            "right",
            " B ",
        ],
    ]
    for name in ("test.csv", "train.csv", "test_clean.csv"):
        with open(root / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(_PMC_HEADER)
            writer.writerows(rows)


@pytest.mark.vl_stack
def test_pmc_vqa(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "PMC-VQA"
    _pmc_vqa(root)
    out = tmp_path / "pmc.parquet"
    # 120x100 = 12000 pixels > 10000: the decompression-bomb guard skips that image
    report = convert("pmc_vqa", root, out, split="test_clean", max_image_pixels=10_000, progress=False, verbose=False)
    assert report.written == 3
    assert report.skip_reasons == {
        SKIP_UNKNOWN_ANSWER_LABEL: 1,
        SKIP_MISSING_IMAGE: 1,
        malformed("Question"): 1,
        SKIP_IMAGE_TOO_LARGE: 1,
    }
    assert report.warnings == {"answer text names another choice (official Answer_label kept)": 1}
    df = _read(out)
    extra = list(df["extra_info"])
    assert [r["ground_truth"] for r in df["reward_model"]] == ["A", "C", "B"]
    assert dict(extra[0]["options"]) == {"A": "CT scan", "B": "MRI", "C": "PET", "D": "Ultrasound", "E": None}
    assert [e["answer_text"] for e in extra] == ["CT scan", "Kidney", "right"]
    assert list(extra[0]["image_files"]) == ["images/PMC1_fig1.jpg"]
    assert json.loads(extra[0]["meta"]) == {"csv_version": "v1"}
    assert [e["split"] for e in extra] == ["test"] * 3 and extra[0]["source_split"] == "test_clean"
    user = df["prompt"][0][1]["content"]
    assert "Options:\nA. CT scan\nB. MRI\nC. PET\nD. Ultrasound\nAnswer with the option's letter." in user
    assert "<image>" not in df["prompt"][2][1]["content"][len("<image>") :]  # a literal tag is defused
    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch)
    _check_rlhf_items(ds, df)


# --------------------------------------------------------------------------------------------------
# OmniMedVQA
# --------------------------------------------------------------------------------------------------


def _omnimedvqa(root: Path) -> None:
    _image(root / "Images" / "ACRIMA" / "Im1.png", (40, 40), "RGB", seed=10)
    _image(root / "Images" / "Chest CT Scan" / "c1.png", (32, 48), "I;16", seed=11)  # 16-bit: converted
    qa = root / "QA_information" / "Open-access"
    _write_json(
        qa / "ACRIMA.json",
        [
            {
                "dataset": "ACRIMA",
                "question_id": "ACRIMA_0",
                "question_type": "Disease Diagnosis",
                "question": "What is the diagnosis?",
                "gt_answer": "Glaucoma",
                "image_path": "Images/ACRIMA/Im1.png",
                "option_A": "Normal",
                "option_B": "Glaucoma",
                "option_C": "Cataract",
                "option_D": "AMD",
                "modality_type": "Fundus Photography",
            },
            {
                "dataset": "ACRIMA",
                "question_id": "ACRIMA_1",
                "question_type": "Disease Diagnosis",
                "question": "Is this normal?",
                "gt_answer": "No, it is not",
                "image_path": "Images/ACRIMA/Im1.png",
                "option_A": "Yes",
                "option_B": "No",
                "modality_type": "Fundus Photography",
            },  # matches no option
            {
                "dataset": "ACRIMA",
                "question_id": "ACRIMA_2",
                "question_type": "Modality Recognition",
                "question": "What modality is this?",
                "gt_answer": "Fundus photography.",
                "image_path": "Images/ACRIMA/Im1.png",
                "option_A": "CT",
                "option_B": "fundus photography",
                "modality_type": "Fundus Photography",
            },  # matches B after normalization
        ],
    )
    _write_json(
        qa / "Chest CT Scan.json",
        [
            {
                "dataset": "Chest CT Scan",
                "question_id": "CT_0",
                "question_type": "Anatomy Identification",
                "question": "Which organ is shown?",
                "gt_answer": "Lung",
                "image_path": "Images/Chest CT Scan/c1.png",
                "option_A": "Lung",
                "option_B": "Heart",
                "option_C": "Liver",
                "modality": "CT",
            },
            {
                "dataset": "Chest CT Scan",
                "question_id": "CT_1",
                "question": "Which organ?",
                "gt_answer": "Lung",
                "image_path": "Images/Chest CT Scan/missing.png",
                "option_A": "Lung",
                "option_B": "Heart",
                "modality_type": "CT",
            },
            {
                "dataset": "Chest CT Scan",
                "question_id": "CT_2",
                "question": "Which organ?",
                "image_path": "Images/Chest CT Scan/c1.png",
                "option_A": "Lung",
                "option_B": "Heart",
            },  # no gt
        ],
    )


@pytest.mark.vl_stack
def test_omnimedvqa(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "OmniMedVQA"
    _omnimedvqa(root)
    out = tmp_path / "omni.parquet"
    report = convert("OmniMedVQA", root, out, split="test", progress=False, verbose=False)
    assert report.written == 3
    assert report.skip_reasons == {SKIP_ANSWER_NOT_IN_OPTIONS: 1, SKIP_MISSING_IMAGE: 1, malformed("gt_answer"): 1}
    df = _read(out)
    extra = list(df["extra_info"])
    assert [r["ground_truth"] for r in df["reward_model"]] == ["B", "B", "A"]
    assert [e["modality"] for e in extra] == ["Fundus Photography", "Fundus Photography", "CT"]
    assert dict(extra[1]["options"]) == {"A": "CT", "B": "fundus photography", "C": None, "D": None, "E": None}
    assert "C." not in df["prompt"][1][1]["content"]
    # the 16-bit PNG is windowed to 8 bits and stored as PNG at its native size
    img = Image.open(io.BytesIO(df["images"][2][0]["bytes"]))
    assert img.format == "PNG" and img.mode == "L" and img.size == (32, 48)
    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch)
    _check_rlhf_items(ds, df)


# --------------------------------------------------------------------------------------------------
# MedXpertQA-MM
# --------------------------------------------------------------------------------------------------


def _medxpertqa(root: Path) -> None:
    _image(root / "images" / "MM-0-a.jpeg", (60, 40), "RGB", fmt="JPEG", seed=12)
    _image(root / "images" / "MM-0-b.png", (40, 60), "RGB", seed=13)
    _image(root / "images" / "MM-1-a.jpeg", (44, 44), "L", fmt="JPEG", seed=14)
    opts = {
        "A": "Lateral collateral ligament repair",
        "B": "Capsular plication",
        "C": "Radial head replacement",
        "D": "Radial head ORIF",
        "E": "Medial collateral ligament reconstruction",
    }
    q = "A 26-year-old man falls. Which step matters most?\nAnswer Choices: " + " ".join(
        f"({k}) {v}" for k, v in opts.items()
    )
    meta = {"medical_task": "Treatment", "body_system": "Skeletal", "question_type": "Reasoning"}
    lines = [
        json.dumps(
            {
                "id": "MM-0",
                "question": q,
                "options": opts,
                "label": "A",
                "images": ["MM-0-a.jpeg", "MM-0-b.png"],
                **meta,
            }
        ),
        json.dumps({"id": "MM-1", "question": q, "options": opts, "label": "C", "images": ["MM-1-a.jpeg"], **meta}),
        "{not json",
        json.dumps({"id": "MM-2", "question": q, "options": opts, "label": "F", "images": ["MM-1-a.jpeg"], **meta}),
        json.dumps({"id": "MM-3", "question": q, "options": opts, "label": "B", "images": ["MM-3-a.jpeg"], **meta}),
    ]
    (root / "MM").mkdir(parents=True)
    (root / "MM" / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "MM" / "dev.jsonl").write_text(lines[1] + "\n", encoding="utf-8")


@pytest.mark.vl_stack
def test_medxpertqa_mm(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "MedXpertQA"
    _medxpertqa(root)
    out = tmp_path / "mxqa.parquet"
    report = convert("medxpertqa", root, out, split="test", progress=False, verbose=False)
    assert report.written == 2
    assert report.skip_reasons == {malformed("json line"): 1, SKIP_UNKNOWN_ANSWER_LABEL: 1, SKIP_MISSING_IMAGE: 1}
    df = _read(out)
    user = df["prompt"][0][1]["content"]
    assert user.startswith("<image>\n<image>\nA 26-year-old man")
    assert "Options:" not in user  # the question already lists them
    assert len(df["images"][0]) == 2
    extra = list(df["extra_info"])
    assert [list(s) for s in extra[0]["image_sizes"]] == [[60, 40], [40, 60]]
    assert json.loads(extra[0]["meta"]) == {
        "body_system": "Skeletal",
        "medical_task": "Treatment",
        "question_type": "Reasoning",
    }
    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch, filter_overlong=True)
    _check_rlhf_items(ds, df)
    dev = convert("medxpertqa_mm", root, tmp_path / "dev.parquet", split="dev", progress=False, verbose=False)
    assert dev.written == 1 and _read(tmp_path / "dev.parquet")["extra_info"][0]["split"] == "dev"


# --------------------------------------------------------------------------------------------------
# Variants: text baseline prompt, image paths, schema stability across datasets
# --------------------------------------------------------------------------------------------------


@pytest.mark.vl_stack
def test_text_baseline_and_paths(tmp_path, vl_processor, monkeypatch):
    root = tmp_path / "Slake1.0"
    _slake(root)
    out = tmp_path / "slake_text.parquet"
    report = convert(
        "slake", root, out, split="test", tool_prompt=False, embed_images=False, progress=False, verbose=False
    )
    assert report.written == 4
    df = _read(out)
    assert "agent_name" not in df.columns  # veRL's default_agent_loop for the baseline
    assert df["prompt"][0][0]["content"] == TEXT_SYSTEM_PROMPT and "zoom" not in TEXT_SYSTEM_PROMPT
    assert df["images"][0][0] == str((root / "imgs" / "xmlab0" / "source.jpg").resolve())
    ds = _rlhf(out, vl_processor, tmp_path, monkeypatch, filter_overlong=True)
    _check_rlhf_items(ds, df)

    custom = convert(
        "slake",
        root,
        tmp_path / "c.parquet",
        split="test",
        agent_name="my_loop",
        system_prompt="",
        limit=2,
        progress=False,
        verbose=False,
    )
    assert custom.written == 2
    cdf = _read(tmp_path / "c.parquet")
    assert list(cdf["agent_name"]) == ["my_loop", "my_loop"]
    assert [m["role"] for m in cdf["prompt"][0]] == ["user"]


def test_schema_is_the_same_for_every_dataset(tmp_path):
    """Files of different datasets concatenate (veRL reads several data files into one dataset)."""
    import datasets
    import pyarrow.parquet as pq

    _vqa_rad_osf(tmp_path / "rad")
    _medxpertqa(tmp_path / "mx")
    _slake(tmp_path / "slake")
    outs = [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"]
    convert("vqa_rad", tmp_path / "rad", outs[0], split="test", progress=False, verbose=False)
    convert("medxpertqa_mm", tmp_path / "mx", outs[1], split="test", progress=False, verbose=False)
    convert("slake", tmp_path / "slake", outs[2], split="test", progress=False, verbose=False)
    schemas = [pq.read_schema(o) for o in outs]
    assert all(s.equals(row_schema(), check_metadata=False) for s in schemas)
    parts = [datasets.Dataset.from_parquet(str(o), cache_dir=str(tmp_path / "cache")) for o in outs]
    merged = datasets.concatenate_datasets(parts)
    assert len(merged) == 3 + 2 + 4


# --------------------------------------------------------------------------------------------------
# Atomic writes, layout errors, readers on their own, CLI
# --------------------------------------------------------------------------------------------------


def test_failure_midway_leaves_no_output(tmp_path):
    root = tmp_path / "Slake1.0"
    _slake(root)
    out = tmp_path / "out" / "slake.parquet"

    def failing():
        for i, record in enumerate(read_slake(root, "test")):
            if i == 2:
                raise RuntimeError("disk on fire")
            yield record

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_records(failing(), out, progress=False, row_group_size=1)
    assert not out.exists()
    assert not out.parent.exists()  # the folder made for the output is removed again: nothing is left

    # an existing output stays as it was
    out.parent.mkdir()
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        write_records(failing(), out, progress=False, row_group_size=1)
    assert out.read_bytes() == b"previous"
    _no_tmp_leftovers(out.parent)

    # nothing usable: an error, not an empty file
    with pytest.raises(ValueError, match="no rows"):
        convert("slake", root, tmp_path / "empty.parquet", split="test", limit=0, progress=False, verbose=False)
    assert not (tmp_path / "empty.parquet").exists()
    report = convert(
        "slake",
        root,
        tmp_path / "empty.parquet",
        split="test",
        limit=0,
        allow_empty=True,
        progress=False,
        verbose=False,
    )
    assert report.written == 0 and len(_read(tmp_path / "empty.parquet")) == 0


@pytest.mark.parametrize(
    ("dataset", "files", "missing"),
    [
        ("vqa_rad", [], "VQA_RAD Dataset Public.json"),
        ("vqa_rad", ["VQA_RAD Dataset Public.json"], "VQA_RAD Image Folder"),
        ("slake", [], "test.json"),
        ("slake", ["test.json"], "imgs"),
        ("pmc_vqa", [], "test.csv"),
        ("pmc_vqa", ["test.csv"], "images/"),
        ("omnimedvqa", [], "QA_information/Open-access"),
        ("medxpertqa_mm", [], "MM/test.jsonl"),
        ("medxpertqa_mm", ["MM/test.jsonl"], "images/"),
        ("path_vqa", [], "no Hugging Face dataset found"),
    ],
)
def test_wrong_source_folder_names_the_missing_file(tmp_path, dataset, files, missing):
    for rel in files:
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[]" if rel.endswith(".json") else "Figure_path,Question,Choice A,Choice B\n")
    (tmp_path / "src").mkdir(exist_ok=True)
    with pytest.raises(LayoutError) as info:
        convert(dataset, tmp_path / "src", tmp_path / "o.parquet", split="test", progress=False, verbose=False)
    message = str(info.value)
    assert missing in message and "Expected layout" in message
    assert not (tmp_path / "o.parquet").exists()
    with pytest.raises(LayoutError, match="does not exist"):
        convert(dataset, tmp_path / "nowhere", tmp_path / "o.parquet", split="test", progress=False, verbose=False)


def test_readers_alone(tmp_path):
    """Readers yield Records without touching images; skips land in the report passed in."""
    _omnimedvqa(tmp_path / "omni")
    report = ConversionReport()
    records = list(read_omnimedvqa(tmp_path / "omni", "test", report=report))
    assert all(isinstance(r, Record) for r in records)
    assert [r.source_id for r in records] == ["ACRIMA_0", "ACRIMA_2", "CT_0", "CT_1"]  # CT_1: image checked later
    assert report.skip_reasons == {SKIP_ANSWER_NOT_IN_OPTIONS: 1, malformed("gt_answer"): 1}
    assert records[0].options == {"A": "Normal", "B": "Glaucoma", "C": "Cataract", "D": "AMD"}
    assert records[0].answer_text == "Glaucoma" and records[0].meta["qa_file"] == "ACRIMA.json"

    _pmc_vqa(tmp_path / "pmc")
    pmc = list(read_pmc_vqa(tmp_path / "pmc", "train"))
    assert pmc[0].options["A"] == "CT scan" and pmc[0].images[0].path.endswith("PMC1_fig1.jpg")
    _medxpertqa(tmp_path / "mx")
    mx = list(read_medxpertqa_mm(tmp_path / "mx", "test"))
    assert [len(r.images) for r in mx] == [2, 1, 1] and mx[0].options_in_question
    _vqa_rad_osf(tmp_path / "rad")
    rad = list(read_vqa_rad(tmp_path / "rad", "test", dedupe=False))
    assert len(rad) == 5  # the duplicate is kept without dedupe; the missing image is the writer's skip
    with pytest.raises(ValueError, match="split must be one of"):
        read_vqa_rad(tmp_path / "rad", "validation")
    assert split_role("test_clean") == "test" and split_role("validate") == "validation"
    with pytest.raises(ValueError, match="question_type"):
        Record("x", "test", "1", "q", "a", "yesno", [ImageRef(name="x")])


def test_unreadable_and_truncated_images_are_skipped(tmp_path):
    _medxpertqa(tmp_path / "mx")
    data = (tmp_path / "mx" / "images" / "MM-1-a.jpeg").read_bytes()
    (tmp_path / "mx" / "images" / "MM-1-a.jpeg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (tmp_path / "mx" / "images" / "MM-0-b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="no rows"):
        convert("medxpertqa_mm", tmp_path / "mx", tmp_path / "o.parquet", split="test", progress=False, verbose=False)
    report = convert(
        "medxpertqa_mm",
        tmp_path / "mx",
        tmp_path / "o.parquet",
        split="test",
        allow_empty=True,
        progress=False,
        verbose=False,
    )
    assert report.skip_reasons[SKIP_UNREADABLE_IMAGE] == 2
    assert "unreadable image: 2" in report.summary()


def test_cli(tmp_path):
    root = tmp_path / "MedXpertQA"
    _medxpertqa(root)
    out = tmp_path / "cli" / "mx.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        "-m",
        "medvr_verl.data",
        "medxpertqa_mm",
        str(root),
        str(out),
        "--split",
        "test",
        "--limit",
        "1",
        "--no-tool-prompt",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "1 rows written" in proc.stdout
    df = _read(out)
    assert len(df) == 1 and "agent_name" not in df.columns
    assert df["prompt"][0][0]["content"] == TEXT_SYSTEM_PROMPT

    bad = subprocess.run(
        [sys.executable, "-m", "medvr_verl.data", "slake", str(root), str(tmp_path / "x.parquet"), "--split", "test"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and "missing file 'test.json'" in bad.stderr and "Expected layout" in bad.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "medvr_verl.data", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert helped.returncode == 0 and "VQA_RAD Image Folder" in helped.stdout and "QA_information" in helped.stdout
