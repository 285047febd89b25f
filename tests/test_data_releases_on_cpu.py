"""medvr_verl.data read the real releases the way published evaluations read them (issue 13).

Small synthetic files with the real releases' column names, file names and value formats:

* PMC-VQA v2 (``train_2.csv``/``test_2.csv``: ``index, Figure_path, Caption, Question, Choice A..D,
  Answer, split``, ``Answer`` = the option letter, no ``Answer_label``; images in ``figures/`` or
  ``images_2/figures/``) next to v1 (``Answer_label``; images in ``images/``) with the same figure
  names holding different pictures: each csv version gets its own images.
* PMC-VQA v1: the official ``Answer_label`` is the ground truth; the text-based correction is opt-in.
* VQA-RAD: the OSF json and the Hugging Face copy of the same questions get the same closed/open
  breakdown, and the rule is written to ``extra_info.meta``.
* SLAKE: ``mask.png`` is carried only with its legend ``mask.txt``; ``detection.json`` labels that are
  findings (not organs) are kept as they are.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvr_verl.data import ConversionReport, LayoutError, convert, read_pmc_vqa, read_slake, read_vqa_rad
from medvr_verl.data.cli import main as cli_main
from medvr_verl.data.readers import pmc_vqa_version
from medvr_verl.data.records import SKIP_UNKNOWN_ANSWER_LABEL

REPO_ROOT = Path(__file__).resolve().parent.parent

# The real headers (xmcmic/PMC-VQA).
PMC_V2_HEADER = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
                 "Answer", "split"]  # fmt: skip
PMC_V1_HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]


def _image(path: Path, value: int, size=(32, 24)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, format="PNG")
    return path.read_bytes()


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _convert(dataset, source, out, split, **kwargs):
    report = convert(dataset, source, out, split=split, progress=False, verbose=False, **kwargs)
    return report, pd.read_parquet(out)


# --------------------------------------------------------------------------------------------------
# PMC-VQA
# --------------------------------------------------------------------------------------------------


def _pmc_release(root: Path, v2_folder: str = "figures") -> dict[str, bytes]:
    """v2 csvs + figures in ``v2_folder``; v1 csvs + images/ holding *different* same-named figures."""
    files = {
        "v2": _image(root / v2_folder / "PMC8253867_Fig2_41.jpg", 200),
        "v2b": _image(root / v2_folder / "PMC4527353_Fig1_1.jpg", 180),
        "v1": _image(root / "images" / "PMC8253867_Fig2_41.jpg", 20),
    }
    v2_rows = [
        [0, "PMC8253867_Fig2_41.jpg", "Fig. 2: CT of the abdomen.", "What is the imaging modality used?",
         "A:MRI ", " B:CT scan ", " C:PET scan ", " D:Ultrasound ", "B", "test"],
        [1, "PMC4527353_Fig1_1.jpg", "Figure 1.", "Which side is the lesion on?",
         "A:Left ", " B:Right ", " C:Both ", " D:Neither ", "D", "test"],
        [2, "PMC4527353_Fig1_1.jpg", "Figure 1.", "What does the arrow show?",
         "A:Cyst ", " B:Tumor ", " C:Abscess ", " D:Edema ", "Tumor", "test"],  # not a letter
    ]  # fmt: skip
    _csv(root / "test_2.csv", PMC_V2_HEADER, v2_rows)
    _csv(root / "train_2.csv", PMC_V2_HEADER, [[*r[:-1], "train"] for r in v2_rows[:2]])
    v1_rows = [
        ["PMC8253867_Fig2_41.jpg", "What is shown in the image?", "Liver", "A:Liver", "B:Kidney", "C:Spleen",
         "D:Heart", "A"],
        ["PMC8253867_Fig2_41.jpg", "Which organ is enlarged?", "Spleen", "A:Liver", "B:Kidney", "C:Spleen",
         "D:Heart", "B"],  # the official label B; the text names C
        ["PMC8253867_Fig2_41.jpg", "What is the finding?", "Kidney", "A:Liver", "B:Kidney", "C:Spleen",
         "D:Heart", ""],  # no label; the text names B
    ]  # fmt: skip
    _csv(root / "test.csv", PMC_V1_HEADER, v1_rows)
    return files


def test_pmc_vqa_version_by_csv_name():
    assert [pmc_vqa_version(s) for s in ("train_2", "test_2", "train", "test", "test_clean")] == [
        "v2", "v2", "v1", "v1", "v1"
    ]  # fmt: skip


@pytest.mark.parametrize("v2_folder", ["figures", "images_2/figures"])
def test_pmc_vqa_v2_converts_with_its_own_images(tmp_path, v2_folder):
    root = tmp_path / "PMC-VQA"
    files = _pmc_release(root, v2_folder)
    report, df = _convert("pmc_vqa", root, tmp_path / "v2.parquet", "test_2")
    assert report.written == 2 and report.skip_reasons == {SKIP_UNKNOWN_ANSWER_LABEL: 1}
    assert [r["ground_truth"] for r in df["reward_model"]] == ["B", "D"]
    extra = list(df["extra_info"])
    assert [e["answer_text"] for e in extra] == ["CT scan", "Neither"]
    assert dict(extra[0]["options"]) == {"A": "MRI", "B": "CT scan", "C": "PET scan", "D": "Ultrasound", "E": None}
    assert [e["question_type"] for e in extra] == ["multiple_choice"] * 2
    assert extra[0]["source_id"] == "0" and extra[0]["source_split"] == "test_2" and extra[0]["split"] == "test"
    # the v2 figure, never the same-named v1 image in images/
    assert df["images"][0][0]["bytes"] == files["v2"] != files["v1"]
    assert list(extra[0]["image_files"]) == [f"{v2_folder}/PMC8253867_Fig2_41.jpg"]
    assert json.loads(extra[0]["meta"]) == {"csv_version": "v2", "split": "test"}

    train = convert("pmc_vqa", root, tmp_path / "t.parquet", split="train_2", progress=False, verbose=False)
    assert train.written == 2
    # opt-in: a v2 answer given as text (row 2) takes the one choice it names
    report = ConversionReport()
    records = list(read_pmc_vqa(root, "test_2", answer_from_text=True, report=report))
    assert [r.answer for r in records] == ["B", "D", "B"] and report.warnings == {
        "answer letter taken from the answer text": 1
    }


def test_pmc_vqa_v1_keeps_its_images_and_the_official_label(tmp_path):
    root = tmp_path / "PMC-VQA"
    files = _pmc_release(root)
    report, df = _convert("pmc_vqa", root, tmp_path / "v1.parquet", "test")
    assert report.written == 2 and report.skip_reasons == {SKIP_UNKNOWN_ANSWER_LABEL: 1}
    assert [r["ground_truth"] for r in df["reward_model"]] == ["A", "B"]  # Answer_label, not the text
    assert report.warnings == {"answer text names another choice (official Answer_label kept)": 1}
    assert df["images"][0][0]["bytes"] == files["v1"]
    assert list(df["extra_info"][0]["image_files"]) == ["images/PMC8253867_Fig2_41.jpg"]
    assert json.loads(df["extra_info"][0]["meta"]) == {"csv_version": "v1"}

    # opt-in text-based correction
    report, df = _convert("pmc_vqa", root, tmp_path / "v1fix.parquet", "test", answer_from_text=True)
    assert [r["ground_truth"] for r in df["reward_model"]] == ["A", "C", "B"]
    assert report.warnings == {
        "answer label corrected to the choice matching the answer text": 1,
        "answer label taken from the answer text": 1,
    }


def test_pmc_vqa_images_images_figures_layout(tmp_path):
    root = tmp_path / "PMC-VQA"
    _csv(root / "test.csv", PMC_V1_HEADER, [["PMC1_F1.jpg", "Q?", "Liver", "A:Liver", "B:Kidney", "", "", "A"]])
    data = _image(root / "images" / "figures" / "PMC1_F1.jpg", 90)
    _, df = _convert("pmc_vqa", root, tmp_path / "o.parquet", "test")
    assert df["images"][0][0]["bytes"] == data
    assert list(df["extra_info"][0]["image_files"]) == ["images/figures/PMC1_F1.jpg"]


def test_pmc_vqa_version_never_borrows_the_other_image_folder(tmp_path):
    only_v1 = tmp_path / "only_v1"
    row = [0, "PMC1_F1.jpg", "c", "Q?", "A:x", "B:y", "C:z", "D:w", "A", "test"]
    _csv(only_v1 / "test_2.csv", PMC_V2_HEADER, [row])
    _image(only_v1 / "images" / "PMC1_F1.jpg", 10)
    with pytest.raises(LayoutError, match=r"figures/.*images_2/figures/.*v2 csv test_2\.csv"):
        list(read_pmc_vqa(only_v1, "test_2"))
    only_v2 = tmp_path / "only_v2"
    _csv(only_v2 / "test.csv", PMC_V1_HEADER, [["PMC1_F1.jpg", "Q?", "x", "A:x", "B:y", "C:z", "D:w", "A"]])
    _image(only_v2 / "figures" / "PMC1_F1.jpg", 10)
    with pytest.raises(LayoutError, match=r"'images/'"):
        list(read_pmc_vqa(only_v2, "test"))
    # a v1 csv without Answer_label is refused (its ground truth is that column) unless the text may decide
    no_label = tmp_path / "no_label"
    _csv(no_label / "test.csv", PMC_V1_HEADER[:-1], [["PMC1_F1.jpg", "Q?", "y", "A:x", "B:y", "C:z", "D:w"]])
    _image(no_label / "images" / "PMC1_F1.jpg", 10)
    with pytest.raises(LayoutError, match="Answer_label"):
        read_pmc_vqa(no_label, "test")
    assert [r.answer for r in read_pmc_vqa(no_label, "test", answer_from_text=True)] == ["B"]


# --------------------------------------------------------------------------------------------------
# VQA-RAD: one closed/open rule for the OSF json and the Hugging Face copy
# --------------------------------------------------------------------------------------------------

_RAD_TEST = [  # (image_name, question, answer, answer_type) as in "VQA_RAD Dataset Public.json"
    ("synpic54610.jpg", "Are regions of the brain infarcted?", "Yes", "CLOSED"),
    ("synpic54610.jpg", "Is this an MRI or a CT scan?", "CT", "CLOSED"),  # CLOSED, not yes/no
    ("synpic29265.jpg", "Which side is the lesion on?", "Right", "CLOSED"),
    ("synpic29265.jpg", "What is the abnormality?", "pneumothorax", "OPEN"),
    ("synpic29265.jpg", "Is there free air?", "no", "OPEN"),  # OPEN, but yes/no
]


def _rad_osf(root: Path) -> None:
    entries = []
    for qid, (name, question, answer, answer_type) in enumerate(_RAD_TEST):
        _image(root / "VQA_RAD Image Folder" / name, 30 + qid)
        entries.append(
            {
                "qid": qid,
                "image_name": name,
                "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
                "image_organ": "HEAD",
                "answer": answer,
                "answer_type": answer_type,
                "question_type": "PRES",
                "question": question,
                "phrase_type": "test_freeform",
            }
        )
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries), encoding="utf-8")


def _rad_hf(root: Path):
    import datasets

    images = [str(root / "VQA_RAD Image Folder" / name) for name, *_ in _RAD_TEST]
    ds = datasets.Dataset.from_dict(
        {
            "image": images,
            "question": [q.lower() for _, q, _, _ in _RAD_TEST],  # the copy lowercases
            "answer": [a.lower() for _, _, a, _ in _RAD_TEST],
        },
        features=datasets.Features(
            {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
        ),
    )
    return datasets.DatasetDict({"test": ds})


def test_vqa_rad_osf_and_hf_copy_give_the_same_breakdown(tmp_path):
    root = tmp_path / "VQA_RAD"
    _rad_osf(root)
    _, osf = _convert("vqa_rad", root, tmp_path / "osf.parquet", "test")
    _, hf = _convert("vqa_rad", _rad_hf(root), tmp_path / "hf.parquet", "test")
    osf_types = [e["question_type"] for e in osf["extra_info"]]
    assert osf_types == [e["question_type"] for e in hf["extra_info"]] == ["closed", "open", "open", "open", "closed"]
    for df in (osf, hf):
        assert {json.loads(e["meta"])["question_type_rule"] for e in df["extra_info"]} == {"answer_yes_no"}
    # the OSF label is still there for whoever wants the release's own breakdown
    assert [e["answer_type"] for e in osf["extra_info"]] == [t for *_, t in _RAD_TEST]

    # opt-in: the release's label (OSF only), recorded as such
    records = list(read_vqa_rad(root, "test", question_type_rule="release_label"))
    assert [r.question_type for r in records] == ["closed", "closed", "closed", "open", "open"]
    assert {r.meta["question_type_rule"] for r in records} == {"release_label"}
    with pytest.raises(ValueError, match="Hugging Face copy does not have"):
        read_vqa_rad(_rad_hf(root), "test", question_type_rule="release_label")
    with pytest.raises(ValueError, match="question_type_rule must be one of"):
        read_vqa_rad(root, "test", question_type_rule="closed_if_short")


# --------------------------------------------------------------------------------------------------
# SLAKE: mask.png with mask.txt; detection.json labels are findings as well as organs
# --------------------------------------------------------------------------------------------------


def _slake(root: Path) -> None:
    base = {"location": "Lung", "modality": "X-Ray", "base_type": "vqa", "q_lang": "en", "triple": ["vhead", "_", "_"]}
    entries = [
        {**base, "qid": 11934, "img_id": 102, "img_name": "xmlab102/source.jpg", "answer_type": "OPEN",
         "content_type": "Abnormality", "question": "What diseases are included in the picture?",
         "answer": "Pneumonia"},
        {**base, "qid": 11935, "img_id": 103, "img_name": "xmlab103/source.jpg", "answer_type": "CLOSED",
         "content_type": "Organ", "question": "Does the picture contain lung?", "answer": "Yes"},
    ]  # fmt: skip
    (root).mkdir(parents=True)
    (root / "test.json").write_text(json.dumps(entries), encoding="utf-8")
    for folder, detection in (
        ("xmlab102", [{"Left Lung": [20, 10, 40, 80]}, {"Pneumonia": [30, 40, 20, 20]}]),
        ("xmlab103", [{"Right Lung": [60, 10, 30, 80]}]),
    ):
        _image(root / "imgs" / folder / "source.jpg", 100, size=(100, 100))
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(root / "imgs" / folder / "mask.png")
        (root / "imgs" / folder / "detection.json").write_text(json.dumps(detection), encoding="utf-8")
    (root / "imgs" / "xmlab102" / "mask.txt").write_text("1:Left Lung\n2:Right Lung\n3:Pneumonia\n", encoding="utf-8")


def test_slake_mask_with_its_legend_and_finding_boxes(tmp_path):
    root = tmp_path / "Slake1.0"
    _slake(root)
    report, df = _convert("slake", root, tmp_path / "slake.parquet", "test")
    assert report.written == 2
    assert report.warnings == {"mask.png without mask.txt: mask_path not carried": 1}
    first, second = df["extra_info"]
    assert list(first["gt_box_labels"]) == ["Left Lung", "Pneumonia"]  # an organ and a finding
    assert [list(b) for b in first["gt_boxes"]] == [[20.0, 10.0, 60.0, 90.0], [30.0, 40.0, 50.0, 60.0]]
    assert first["mask_path"] == str((root / "imgs" / "xmlab102" / "mask.png").resolve())
    meta = json.loads(first["meta"])
    assert meta["mask_legend_file"] == str((root / "imgs" / "xmlab102" / "mask.txt").resolve())
    assert meta["mask_legend"] == {"1": "Left Lung", "2": "Right Lung", "3": "Pneumonia"}
    assert second["mask_path"] is None and "mask_legend" not in json.loads(second["meta"])
    assert [e["question_type"] for e in df["extra_info"]] == ["open", "closed"]


def test_slake_mask_legend_formats(tmp_path):
    root = tmp_path / "Slake1.0"
    _slake(root)
    legend = root / "imgs" / "xmlab102" / "mask.txt"
    for text in ("1 Left Lung\n2 Right Lung\n3 Pneumonia\n", "Left Lung:1\nRight Lung:2\nPneumonia:3\n"):
        legend.write_text(text, encoding="utf-8")
        record = next(iter(read_slake(root, "test")))
        assert record.meta["mask_legend"] == {"1": "Left Lung", "2": "Right Lung", "3": "Pneumonia"}
    legend.write_text("no numbers here\n", encoding="utf-8")
    report = ConversionReport()
    record = next(iter(read_slake(root, "test", report=report)))
    assert record.mask_path is not None and "mask_legend" not in record.meta
    assert record.meta["mask_legend_file"].endswith("mask.txt")
    assert report.warnings["mask.txt has no '<value>:<label>' lines (mask legend not parsed)"] == 1


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def test_cli_help_and_flags(tmp_path, capsys):
    helped = subprocess.run(
        [sys.executable, "-m", "medvr_verl.data", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert helped.returncode == 0
    flat = " ".join(helped.stdout.split())
    assert "<root>/{train_2,test_2}.csv" in flat and "Answer = the option letter" in flat
    assert "<root>/figures/ (or <root>/images_2/figures/)" in flat
    assert "<root>/images/ (or <root>/images/figures/)" in flat and "mask.txt" in flat

    root = tmp_path / "PMC-VQA"
    _pmc_release(root)
    out = tmp_path / "fix.parquet"
    code = cli_main(["pmc_vqa", str(root), str(out), "--split", "test", "--pmc-answer-from-text", "--no-progress"])
    assert code == 0
    assert [r["ground_truth"] for r in pd.read_parquet(out)["reward_model"]] == ["A", "C", "B"]
    code = cli_main(["slake", str(root), str(tmp_path / "x.parquet"), "--split", "test", "--pmc-answer-from-text"])
    assert code == 2 and "for pmc_vqa only" in capsys.readouterr().err

    rad = tmp_path / "VQA_RAD"
    _rad_osf(rad)
    out = tmp_path / "rad.parquet"
    code = cli_main(["vqa_rad", str(rad), str(out), "--split", "test", "--question-type-rule", "release_label"])
    assert code == 0
    assert [e["question_type"] for e in pd.read_parquet(out)["extra_info"]] == ["closed"] * 3 + ["open"] * 2
