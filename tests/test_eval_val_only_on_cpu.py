"""Evaluation as veRL users evaluate: ``main_ppo`` with ``trainer.val_only=true`` on the CPU backend
(``+backend=cpu``, the ``medvr_cpu`` rollout with the scripted zoom policy), then
``python -m medvr_verl.eval report`` on veRL's validation dump.

Two validation files of the synthetic stripes set (annotated boxes): one as it is written
(``data_source=synthetic_stripes``, not a paper benchmark), one written under ``slake`` (a paper
column). The report's numbers are checked against the dump lines veRL wrote, recomputed here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medvr_verl.boxes import intersection_area, union_area

pytestmark = pytest.mark.vl_stack

ROWS = 2  # per file


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from medvr_verl.cpu import tiny_run
    from medvr_verl.data import write_records
    from medvr_verl.data.synthetic import stripes_records, write_stripes
    from medvr_verl.testing.tiny_qwen25vl import tiny_model_path_for

    out = tmp_path_factory.mktemp("val_only")
    stripes = out / "stripes_test.parquet"
    write_stripes(stripes, ROWS, split="test")
    slake = out / "slake_test.parquet"
    records = [dataclasses.replace(r, dataset="slake") for r in stripes_records(ROWS, seed=1, split="test")]
    write_records(records, slake, progress=False)

    cmd = tiny_run.val_only_command(tiny_model_path_for("cpu"), [stripes, slake], out)
    run = subprocess.run(cmd, env=tiny_run.environment("cpu", out), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = subprocess.run(
        [sys.executable, "-m", "medvr_verl.eval", "report"]
        + ["--dump", str(out / "validation"), "--out", str(out / "report")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stdout[-4000:] + report.stderr[-4000:]
    return out, report.stdout


def _dump(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "validation" / "0.jsonl").read_text().splitlines()]


def test_val_only_dumps_every_sample_with_medvr_fields_and_trains_nothing(evaluated):
    out, _ = evaluated
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["0.jsonl"]  # step 0: no training step
    lines = _dump(out)
    assert len(lines) == 2 * ROWS
    assert sorted(line["data_source"] for line in lines) == ["slake"] * ROWS + ["synthetic_stripes"] * ROWS
    for line in lines:
        assert json.loads(line["gt_boxes_json"]) == [[112.0, 112.0, 224.0, 224.0]]  # cell 3 of 224 px
        assert line["question_type"] == "multiple_choice"
        assert line["cca_group_size"] == 1  # val_kwargs.n = 1: greedy, one sample per question
    assert not (out / "checkpoints").exists()


def test_report_table_is_the_dumps_accuracy(evaluated):
    out, stdout = evaluated
    lines = _dump(out)
    results = json.loads((out / "report" / "results.json").read_text())
    slake = [line["acc"] for line in lines if line["data_source"] == "slake"]
    assert results["table"]["row"]["SLAKE"] == pytest.approx(100 * sum(slake) / len(slake))
    assert results["table"]["row"]["Modality avg"] == pytest.approx(results["table"]["row"]["SLAKE"])
    assert results["table"]["row"]["PMC-VQA"] is None
    assert set(results["benchmarks"]) == {"slake", "synthetic_stripes"}
    assert results["benchmarks"]["synthetic_stripes"]["n"] == ROWS
    assert "| SLAKE |" in stdout and "synthetic_stripes" in stdout  # the markdown report, printed
    assert (out / "report" / "results.md").read_text() == stdout
    samples = (out / "report" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2 * ROWS


def test_report_grounding_is_zoom_against_gt_boxes(evaluated):
    out, _ = evaluated
    results = json.loads((out / "report" / "results.json").read_text())
    for source in ("slake", "synthetic_stripes"):
        lines = [line for line in _dump(out) if line["data_source"] == source]
        coverage = []
        for line in lines:
            zooms = [tuple(z[1:]) for z in json.loads(line["zoom_boxes_json"]) if z[0] == 0]
            gt = [tuple(b) for b in json.loads(line["gt_boxes_json"])]
            if zooms:
                coverage.append(intersection_area(zooms, gt) / union_area(gt))
        grounding = results["grounding"][source]
        assert grounding["n_with_gt"] == ROWS
        assert grounding["n_zoomed"] == len(coverage) > 0  # the scripted policy zooms on its first turn
        assert grounding["zoom"]["coverage"] == pytest.approx(sum(coverage) / len(coverage))


def test_report_refuses_a_folder_without_a_dump(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "medvr_verl.eval", "report", "--dump", str(tmp_path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "holds no <step>.jsonl" in run.stderr
