"""MedVLM-R1's data as published (issue 19 item 2): its training subset (HuatuoGPT-Vision's evaluation
bundle -> MRI -> the first N -> ``datasets``' shuffle with seed 42), its question template, and the
``huatuo_eval`` reader, on a synthetic bundle in the release's layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvr_verl.data import ImageRef, Record, convert, read_huatuo_eval, write_records
from medvr_verl.data.cli import main
from medvr_verl.data.prompts import MEDVLM_R1_QUESTION_TEMPLATE, build_messages, medvlm_r1_problem
from medvr_verl.data.records import (
    SKIP_ANSWER_NOT_IN_OPTIONS,
    SKIP_NOT_MULTIPLE_CHOICE,
    SKIP_TOO_MANY_OPTIONS,
    ConversionReport,
    malformed,
)
from medvr_verl.data.subset import MEDVLM_R1_SUBSET, modality_matches, select_records
from medvr_verl.scoring import compute_score

MR = "MR (Mag-netic Resonance Imaging)"
CT = "CT(Computed Tomography)"


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _bundle(root: Path, n_mr: int = 8) -> list[dict]:
    """HuatuoGPT-Vision's bundle layout: the json at the root, image paths relative to it. MRI and CT
    questions interleaved (as in the bundle), plus a PMC-VQA one and three unusable records."""
    entries = []
    for i in range(n_mr):
        _png(root / "images" / f"knee{i:03d}.png", i)
        _png(root / "images" / f"ct{i:03d}.png", 100 + i)
        entries.append(
            {
                "question": f"What can be observed in MRI {i}?",
                "options": ["Meniscal tear", "ACL pathology", "Bone fracture", "Soft tissue edema"],
                "answer": ["Meniscal tear", "ACL pathology", "Bone fracture", "Soft tissue edema"][i % 4],
                "image": [f"images/knee{i:03d}.png"],
                "dataset": "OmniMedVQA",
                "subset": MR,
            }
        )
        entries.append(
            {
                "question": f"Which organ is shown in CT {i}?",
                "options": ["Lung", "Liver"],
                "answer": "Liver",
                "image": [f"images/ct{i:03d}.png"],
                "dataset": "OmniMedVQA",
                "subset": CT,
            }
        )
    _png(root / "images" / "pmc.png", 999)
    entries += [
        {
            "question": "Q?",
            "options": ["a", "b"],
            "answer": "b",
            "image": ["images/pmc.png"],
            "dataset": "PMC-VQA",
            "subset": "PMC-VQA",
        },
        {
            "question": "Q?",
            "options": ["a", "b"],
            "answer": "c",
            "image": ["images/pmc.png"],
            "dataset": "X",
            "subset": MR,
        },
        {
            "question": "Q?",
            "options": list("abcdef"),
            "answer": "a",
            "image": ["images/pmc.png"],
            "dataset": "X",
            "subset": MR,
        },
        {"question": "Q?", "options": "a, b", "answer": "a", "image": ["images/pmc.png"], "dataset": "X", "subset": MR},
    ]
    (root / "medical_multimodel_evaluation_data.json").write_text(json.dumps(entries), encoding="utf-8")
    return entries


def test_template_is_medvlm_r1s_text():
    # MedVLM-R1's QUESTION_TEMPLATE for the HuatuoGPT-Vision data (src/open-r1-multimodal/src/open_r1/grpo.py)
    assert MEDVLM_R1_QUESTION_TEMPLATE == (
        "\n        {Question} \n        Your task: \n"
        "        1. Think through the question step by step, "
        "enclose your reasoning process in <think>...</think> tags. \n"
        "        2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.\n"
        "        3. No extra information or text outside of these tags.\n        "
    )
    record = Record(
        dataset="huatuo_eval",
        split="train",
        source_id="#0",
        question="What is apparent in this image?",
        answer="B",
        question_type="multiple_choice",
        images=[ImageRef(name="a.png")],
        options={"A": "Hemorrhage", "B": "Chronic infarct"},
    )
    assert medvlm_r1_problem(record) == "What is apparent in this image?\nA) Hemorrhage\nB) Chronic infarct"
    (turn,) = build_messages(record, None, "medvlm_r1")  # no system turn: MedVLM-R1's trainer sends none
    assert turn["role"] == "user"
    assert turn["content"] == "<image>" + MEDVLM_R1_QUESTION_TEMPLATE.format(Question=medvlm_r1_problem(record))
    assert turn["content"].startswith(
        "<image>\n        What is apparent in this image?\nA) Hemorrhage\nB) Chronic infarct \n"
    )
    closed = Record(
        dataset="x", split="t", source_id="1", question="Q?", answer="yes", question_type="closed", images=[]
    )
    with pytest.raises(ValueError, match="multiple-choice"):
        build_messages(closed, None, "medvlm_r1")


def test_huatuo_eval_reader(tmp_path):
    _bundle(tmp_path, n_mr=2)
    report = ConversionReport()
    records = list(read_huatuo_eval(tmp_path, "test", report=report))
    assert [r.source_id for r in records] == ["#0", "#1", "#2", "#3", "#4"]
    assert [r.answer for r in records] == ["A", "B", "B", "B", "B"]
    assert [r.modality for r in records] == [MR, CT, MR, CT, "PMC-VQA"]
    assert records[0].meta == {"dataset": "OmniMedVQA", "subset": MR, "position": 0}
    assert records[0].images[0].path == str(tmp_path / "images" / "knee000.png")
    assert report.skip_reasons == {SKIP_ANSWER_NOT_IN_OPTIONS: 1, SKIP_TOO_MANY_OPTIONS: 1, malformed("options"): 1}
    # MedVLM-R1's released test sets: a json of the same records beside the bundle, read as a file
    (tmp_path / "MRI_CT_XRAY_300each_dataset.json").write_text(
        json.dumps([{**e, "problem": "...", "solution": "A"} for e in _bundle(tmp_path, n_mr=2)[:2]]), encoding="utf-8"
    )
    records = list(read_huatuo_eval(tmp_path / "MRI_CT_XRAY_300each_dataset.json", "test"))
    assert [(r.modality, r.answer) for r in records] == [(MR, "A"), (CT, "B")]
    assert records[1].images[0].path == str(tmp_path / "images" / "ct000.png")


def test_modality_aliases():
    for label in (MR, "MRI", "mri ", "MR"):
        assert modality_matches(label, "MRI") and modality_matches(label, MR)
    assert modality_matches(CT, "CT") and modality_matches("X-Ray", "xray")
    assert not modality_matches(CT, "MRI") and not modality_matches(None, "MRI")
    assert modality_matches("Fundus Photography", "fundus photography")


def test_subset_is_first_n_mri_in_datasets_shuffle_order(tmp_path):
    """The first N MRI questions in file order, in the order ``datasets.Dataset.shuffle(seed=42)``
    gives them (what MedVLM-R1's script ran), checked against ``datasets`` itself."""
    import datasets

    _bundle(tmp_path, n_mr=8)
    report = ConversionReport()
    chosen = list(
        select_records(
            read_huatuo_eval(tmp_path, report=report), modality="MRI", first=5, shuffle_seed=42, report=report
        )
    )
    first_five = [f"#{2 * i}" for i in range(5)]  # the MRI records sit at even positions
    expected = datasets.Dataset.from_dict({"id": first_five}).shuffle(seed=42)["id"]
    assert [r.source_id for r in chosen] == expected
    assert sorted(r.source_id for r in chosen) == sorted(first_five)
    assert all(r.modality == MR for r in chosen)
    assert report.warnings[f"left out by the modality filter (not {'MRI'!r})"] == 4  # CT ones before the 5th MRI
    assert not [w for w in report.warnings if w.startswith("subset smaller")]
    small = ConversionReport()
    assert len(list(select_records(read_huatuo_eval(tmp_path), modality="MRI", first=600, report=small))) == 8
    assert small.warnings["subset smaller than asked: 8 of the first 600 matching records exist"] == 1
    # no shuffle: source order; no first: all eight MRI questions (the broken ones are skipped by the reader)
    assert [r.source_id for r in select_records(read_huatuo_eval(tmp_path), modality=MR)] == [
        f"#{2 * i}" for i in range(8)
    ]
    with pytest.raises(ValueError, match="first"):
        select_records([], first=-1)


def test_convert_medvlm_r1_subset_writes_its_prompt_and_scores(tmp_path):
    _bundle(tmp_path / "bundle", n_mr=8)
    out = tmp_path / "train.parquet"
    report = convert(
        "huatuo_eval",
        tmp_path / "bundle",
        out,
        split="train",
        tool_prompt=False,
        prompt_style="medvlm_r1",
        progress=False,
        verbose=False,
        **{**MEDVLM_R1_SUBSET, "first": 6},
    )
    assert MEDVLM_R1_SUBSET == {"modality": MR, "first": 600, "shuffle_seed": 42}
    assert report.written == 6
    df = pd.read_parquet(out)
    assert "agent_name" not in df.columns and set(df["data_source"]) == {"huatuo_eval"}
    assert [len(p) for p in df["prompt"]] == [1] * 6  # user turn only
    prompt = df["prompt"][0][0]["content"]
    assert (
        prompt.startswith("<image>\n        What can be observed in MRI ")
        and "\nA) Meniscal tear\nB) ACL pathology" in prompt
    )
    assert prompt.endswith("3. No extra information or text outside of these tags.\n        ")
    extra = df["extra_info"][0]
    assert extra["modality"] == MR and extra["question_type"] == "multiple_choice"
    truth = df["reward_model"][0]["ground_truth"]
    scored = compute_score("huatuo_eval", f"<think>looks like it</think><answer>{truth}</answer>", truth, dict(extra))
    assert scored["acc"] == 1.0


def test_medvlm_r1_style_keeps_multiple_choice_only(tmp_path):
    records = [
        Record(
            dataset="d",
            split="train",
            source_id=str(i),
            question="Q?",
            answer=a,
            question_type=t,
            images=[ImageRef(name=f"{i}.png", pil=Image.new("RGB", (8, 8)))],
            options=o,
        )
        for i, (a, t, o) in enumerate([("yes", "closed", None), ("A", "multiple_choice", {"A": "x", "B": "y"})])
    ]
    report = write_records(records, tmp_path / "o.parquet", tool_prompt=False, prompt_style="medvlm_r1", progress=False)
    assert report.written == 1 and report.skip_reasons == {SKIP_NOT_MULTIPLE_CHOICE: 1}
    with pytest.raises(ValueError, match="tool_prompt=False"):
        write_records(records, tmp_path / "p.parquet", prompt_style="medvlm_r1", progress=False)


def test_cli_medvlm_r1_subset(tmp_path, capsys):
    _bundle(tmp_path / "bundle", n_mr=8)
    out = tmp_path / "cli.parquet"
    base = ["huatuo_eval", str(tmp_path / "bundle"), str(out), "--split", "train", "--no-progress"]
    assert main([*base, "--medvlm-r1-subset", "--limit", "3"]) == 0
    df = pd.read_parquet(out)
    expected = [f"#{2 * i}" for i in np.random.default_rng(42).permutation(3)]
    assert [e["source_id"] for e in df["extra_info"]] == expected
    assert "Your task:" in df["prompt"][0][0]["content"] and len(df["prompt"][0]) == 1
    # CT test set in the same template
    assert main([*base, "--modality", "CT", "--prompt-style", "medvlm_r1", "--data-source", "medvlm_r1_ct"]) == 0
    df = pd.read_parquet(out)
    assert {e["modality"] for e in df["extra_info"]} == {CT} and set(df["data_source"]) == {"medvlm_r1_ct"}
    assert {e["dataset"] for e in df["extra_info"]} == {"huatuo_eval"}
    capsys.readouterr()
    for extra, message in (
        (["--medvlm-r1-subset", "--modality", "CT"], "sets --modality"),
        (["--medvlm-r1-subset", "--prompt-style", "medvr"], "drop --prompt-style"),
    ):
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
