"""medvr_verl.eval: the table math and grounding figures by hand, and the report of a veRL validation dump.

The dump is written by veRL's own writer (the V1 trainer's ``_write_generations``) from reward extra
info laid out as ``medvr_cca`` returns it; the end-to-end run (``main_ppo`` with ``trainer.val_only=true``
on the CPU backend, then ``python -m medvr_verl.eval report``) is ``tests/test_eval_val_only_on_cpu.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medvr_verl.eval.metrics import (
    PAPER_ROWS,
    benchmark_metrics,
    fmt_pct,
    grounding_metrics,
    region_scores,
    summarize,
    table_row,
)
from medvr_verl.eval.report import JsonlWriter, atomic_write_text, markdown

COLUMNS = ["OMVQA", "PMC-VQA", "MedXQA", "VQA-RAD", "SLAKE", "PathVQA", "General avg", "Modality avg"]


# --------------------------------------------------------------------------------------------------
# Pure: table math
# --------------------------------------------------------------------------------------------------


def test_table_row_order_and_averages():
    row = table_row({"slake": 60.0, "pmc_vqa": 50.0, "omnimedvqa": 70.0})
    assert list(row) == COLUMNS
    assert row["OMVQA"] == 70.0 and row["PMC-VQA"] == 50.0 and row["SLAKE"] == 60.0
    assert row["MedXQA"] is None and row["VQA-RAD"] is None and row["PathVQA"] is None
    assert row["General avg"] == pytest.approx(60.0)  # (70 + 50) / 2: over the evaluated ones only
    assert row["Modality avg"] == pytest.approx(60.0)
    assert table_row({"pmc_vqa": 50.0})["Modality avg"] is None
    assert all(v is None for v in table_row({}).values())


def test_paper_rows_match_design():
    medvr = table_row(PAPER_ROWS["MedVR (paper, reported)"])
    base = table_row(PAPER_ROWS["Qwen2.5-VL-7B base (paper, reported)"])
    assert [fmt_pct(v, scale=1) for v in medvr.values()] == [
        "96.8", "54.3", "26.4", "74.4", "85.3", "62.3", "59.2", "74.0"
    ]  # fmt: skip
    assert [fmt_pct(v, scale=1) for v in base.values()] == [
        "59.0", "51.2", "22.3", "64.5", "67.2", "44.1", "44.2", "58.6"
    ]  # fmt: skip


def test_fmt_pct_rounds_half_up():
    assert fmt_pct(None) == "-"
    assert fmt_pct(0.625) == "62.5"
    assert fmt_pct(0.0625) == "6.3"  # half up, not to even
    assert fmt_pct(1 / 3) == "33.3" and fmt_pct(2 / 3) == "66.7"
    assert fmt_pct(1.0) == "100.0" and fmt_pct(0.0) == "0.0"
    assert fmt_pct(59.1666666, scale=1) == "59.2"


def _rec(bench, uid, acc, qt="closed", zoom=(), consensus=(), gt=(), fmt=1.0, invalid=0):
    return {
        "benchmark": bench,
        "uid": uid,
        "acc": acc,
        "format": fmt,
        "question_type": qt,
        "zoom_boxes": [list(b) for b in zoom],
        "consensus": [list(b) for b in consensus],
        "gt_boxes": [list(b) for b in gt],
        "num_zoom_invalid": invalid,
    }


def test_benchmark_metrics_breakdown():
    records = [
        _rec("slake", "a", 1.0, "closed", zoom=[(0, 0, 0, 5, 5)]),
        _rec("slake", "b", 0.0, "closed", fmt=0.0, invalid=2),
        _rec("slake", "c", 1.0, "open", zoom=[(0, 0, 0, 5, 5), (1, 0, 0, 2, 2)]),
        _rec("slake", "d", 0.0, "open"),
        _rec("slake", "e", 0.0, "open"),
    ]
    m = benchmark_metrics(records)
    assert m["n"] == m["n_prompts"] == 5
    assert m["acc"] == pytest.approx(0.4)
    assert m["by_question_type"] == {"closed": {"n": 2, "acc": 0.5}, "open": {"n": 3, "acc": pytest.approx(1 / 3)}}
    assert m["zoom_rate"] == pytest.approx(0.4) and m["zooms_per_sample"] == pytest.approx(0.6)
    assert m["format_rate"] == pytest.approx(0.8) and m["invalid_zoom_calls"] == 2


def test_summarize_and_markdown_with_missing_benchmarks():
    records = [_rec("pmc_vqa", f"p{i}", float(i < 3), "multiple_choice") for i in range(4)]
    records += [_rec("vqa_rad", f"v{i}", float(i < 1)) for i in range(2)]
    records += [_rec("path_vqa", f"q{i}", float(i < 2), "open") for i in range(5)]
    results = summarize(records, skipped={"vqa_rad": 3})
    row = results["table"]["row"]
    assert row["PMC-VQA"] == pytest.approx(75.0) and row["VQA-RAD"] == pytest.approx(50.0)
    assert row["PathVQA"] == pytest.approx(40.0)
    assert row["General avg"] == pytest.approx(75.0) and row["Modality avg"] == pytest.approx(45.0)
    assert results["table"]["averages_over"] == {"General avg": ["PMC-VQA"], "Modality avg": ["VQA-RAD", "PathVQA"]}
    assert list(results["benchmarks"]) == ["pmc_vqa", "vqa_rad", "path_vqa"]  # the paper's order
    assert results["benchmarks"]["vqa_rad"]["skipped"] == 3 and results["grounding"] == {}

    md = markdown(results, model="/ckpt/medvr-step64")
    assert "| Model | " + " | ".join(COLUMNS) + " |" in md
    assert "| **medvr-step64** (this run) | - | 75.0 | - | 50.0 | - | 40.0 | 75.0 | 45.0 |" in md
    assert "| MedVR (paper, reported) | 96.8 | 54.3 | 26.4 | 74.4 | 85.3 | 62.3 | 59.2 | 74.0 |" in md
    assert "not measured by this run" in md
    assert "General avg over PMC-VQA; Modality avg over VQA-RAD, PathVQA" in md
    assert "| PathVQA | 5 | 5 | 40.0 | - | 40.0 (5) |" in md  # closed/open breakdown
    assert "| PMC-VQA | 4 | 4 | 75.0 | - | - |" in md  # none for multiple choice sets
    assert "Grounding" not in md
    with pytest.raises(ValueError, match="unknown benchmarks"):
        summarize([_rec("gsm8k", "x", 1.0)])


# --------------------------------------------------------------------------------------------------
# Pure: grounding
# --------------------------------------------------------------------------------------------------


def test_region_scores_by_hand():
    gt = [(5, 5, 15, 15), (20, 20, 30, 30)]  # |G| = 200
    s = region_scores([(0, 0, 10, 10)], gt)  # overlap 5x5 = 25; |P u G| = 100 + 200 - 25
    assert s == {"coverage": pytest.approx(25 / 200), "iou": pytest.approx(25 / 275), "hit": 1.0}
    # overlapping zoom boxes count once; the union of gt boxes is the target
    s = region_scores([(0, 0, 16, 16), (4, 4, 16, 16)], gt)
    assert s["coverage"] == pytest.approx(100 / 200) and s["iou"] == pytest.approx(100 / (256 + 200 - 100))
    assert region_scores([(0, 0, 5, 5)], [(5, 0, 10, 5)])["hit"] == 0.0  # touching edges do not hit
    assert region_scores([(0, 0, 40, 40)], gt)["coverage"] == 1.0
    with pytest.raises(ValueError):
        region_scores([(0, 0, 1, 1)], [(3, 3, 3, 9)])


def test_grounding_metrics_by_hand():
    gt = [(0, 0, 10, 10)]  # |G| = 100
    records = [
        # group u1: two samples; zoom of image 1 is ignored; consensus the same for both members
        _rec("slake", "u1", 1.0, zoom=[(0, 0, 0, 5, 10), (1, 0, 0, 99, 99)], consensus=[(0, 0, 0, 5, 10)], gt=gt),
        _rec("slake", "u1", 1.0, zoom=[(0, 0, 0, 10, 10)], consensus=[(0, 0, 0, 5, 10)], gt=gt),
        # group u2: zoom misses; no consensus (wrong answer)
        _rec("slake", "u2", 0.0, zoom=[(0, 20, 20, 30, 30)], gt=gt),
        # group u3: no zoom at all, only on image 1 -> not zoomed on image 0
        _rec("slake", "u3", 1.0, zoom=[(1, 0, 0, 5, 5)], gt=gt),
        # without gt boxes: left out
        _rec("slake", "u4", 1.0, zoom=[(0, 0, 0, 5, 5)], consensus=[(0, 0, 0, 5, 5)]),
    ]
    g = grounding_metrics(records)
    assert g["n_with_gt"] == 4 and g["n_zoomed"] == 3 and g["zoom_rate"] == pytest.approx(0.75)
    assert g["zoom"]["coverage"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert g["zoom"]["iou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # zoom inside gt: IoU = coverage
    assert g["zoom"]["hit_rate"] == pytest.approx(2 / 3)
    assert g["n_groups"] == 3 and g["n_with_consensus"] == 1
    assert g["consensus"] == {"coverage": 0.5, "iou": 0.5, "hit_rate": 1.0}
    assert grounding_metrics([r for r in records if not r["gt_boxes"]]) is None
    none = grounding_metrics([_rec("slake", "x", 0.0, gt=gt)])
    assert none["n_zoomed"] == 0 and none["zoom"] == {"coverage": None, "iou": None, "hit_rate": None}


# --------------------------------------------------------------------------------------------------
# Pure: files, CLI, setup errors
# --------------------------------------------------------------------------------------------------


def test_atomic_files(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.md", "x\n")
    assert path.read_text() == "x\n" and [p.name for p in path.parent.iterdir()] == ["a.md"]
    with pytest.raises(RuntimeError):
        with JsonlWriter(tmp_path / "s.jsonl") as w:
            w.write({"a": np.float32(1.5), "b": np.array([1, 2])})
            w.flush()
            raise RuntimeError("boom")
    assert not (tmp_path / "s.jsonl").exists()  # a failed run leaves only the partial file
    assert json.loads((tmp_path / "s.jsonl.partial").read_text()) == {"a": 1.5, "b": [1, 2]}
    with JsonlWriter(tmp_path / "s.jsonl") as w:
        w.write({"a": 1})
    assert (tmp_path / "s.jsonl").read_text() == '{"a": 1}\n' and not (tmp_path / "s.jsonl.partial").exists()


def test_cli_help_and_argument_errors(tmp_path, capsys):
    from medvr_verl.eval.cli import build_parser, main

    text = build_parser().format_help()
    for needle in ("General avg", "Modality avg", "our reading of the paper", "verl.model_merger merge"):
        assert needle in text
    assert "trainer.val_only=true" in text and "report --dump" in text  # the V1 command sequence
    with pytest.raises(SystemExit) as exc:
        main(["--model", "m"])  # the removed offline runner's arguments: refused, with the usage
    assert exc.value.code == 2 and "usage: python -m medvr_verl.eval" in capsys.readouterr().err
    assert main(["report", "--dump", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "0.jsonl").write_text('{"input": "q", "output": "a", "score": 1.0, "acc": 1.0}\n')
    assert main(["report", "--dump", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "reward.reward_manager.name=medvr_cca" in capsys.readouterr().err  # a dump of another reward
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------------
# veRL's validation dump -> records -> report (the dump written by veRL's own writer)
# --------------------------------------------------------------------------------------------------


def _write_verl_dump(path: Path, step: int) -> None:
    """Two SLAKE questions x 2 samples and one question of another source, as medvr_cca's
    reward_extra_info reaches veRL's ``PPOTrainer._write_generations`` (the V1 trainer's dump)."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    gt = [[0.0, 0.0, 10.0, 20.0]]  # |G| = 200
    zooms = [[[0, 0, 0, 10, 10]], [[0, 0, 0, 20, 10]], [], [[0, 50, 50, 60, 60]], [[0, 0, 0, 5, 5]]]
    consensus = [[[0, 0, 0, 10, 10]]] * 2 + [[]] * 2 + [[]]
    extra = {
        "reward": [2.0, 2.0, 0.0, -0.5, 1.0],
        "acc": [1.0, 1.0, 0.0, 0.0, 1.0],
        "format": [1.0, 1.0, 1.0, 0.0, 1.0],
        "pred": ["yes", "yes", "no", "", "A"],
        "num_zoom": [len(z) for z in zooms],
        "num_zoom_invalid": [0, 0, 1, 0, 0],
        "zoom_boxes_json": [json.dumps(z) for z in zooms],
        "cca_consensus_json": [json.dumps(c) for c in consensus],
        "gt_boxes_json": [json.dumps(gt)] * 4 + ["[]"],
        "cca_iou": [float("nan")] * 5,  # NaN as medvr_cca leaves it where undefined
        "group_uid": ["u1", "u1", "u2", "u2", "u3"],
        "sample_index": [10, 10, 11, 11, 0],
        "boxes_from_text": [False] * 5,
        "data_source": ["slake"] * 4 + ["my_set"],
        "question_type": ["closed", "closed", "open", "open", "multiple_choice"],
        "uid": ["u1_0_0", "u1_1_0", "u2_0_0", "u2_1_0", "u3_0_0"],  # veRL's TransferQueue keys
    }
    PPOTrainer._write_generations(
        inputs=["q"] * 5,
        outputs=[f"response {i}" for i in range(5)],
        gts=["yes", "yes", "no", "no", "A"],
        scores=extra["reward"],
        reward_extra_infos_dict=extra,
        dump_path=str(path),
        global_steps=step,
    )


def test_report_of_a_verl_dump_by_hand(tmp_path):
    from medvr_verl.eval.dump import DumpError, find_dump, read_dump, record_of_line, report_from_dump

    _write_verl_dump(tmp_path / "dump", 0)
    _write_verl_dump(tmp_path / "dump", 8)
    assert find_dump(tmp_path / "dump").name == "8.jsonl"  # the last validation of the run
    assert find_dump(tmp_path / "dump", 0).name == "0.jsonl"
    with pytest.raises(DumpError, match=r"no step 4; steps there: \[0, 8\]"):
        find_dump(tmp_path / "dump", 4)

    records = read_dump(find_dump(tmp_path / "dump"))
    assert [r["uid"] for r in records] == ["u1", "u1", "u2", "u2", "u3"]
    assert [r["sample"] for r in records] == [0, 1, 0, 1, 0] and [r["index"] for r in records] == [10, 10, 11, 11, 0]
    assert [r["benchmark"] for r in records] == ["slake"] * 4 + ["my_set"]
    assert records[0]["gt"] == "yes" and records[0]["response"] == "response 0" and records[2]["num_zoom_invalid"] == 1
    assert records[0]["cca_iou"] is None  # NaN: undefined
    line = {**json.loads((tmp_path / "dump" / "8.jsonl").read_text().splitlines()[0]), "boxes_from_text": True}
    assert record_of_line(line)["gt_boxes"] == []  # text boxes (model image space) are not graded

    result = report_from_dump(tmp_path / "dump", tmp_path / "out", model="step8")
    g = result.results["grounding"]["slake"]  # gt union: 10 x 20 = 200
    assert (g["n_with_gt"], g["n_zoomed"], g["n_groups"], g["n_with_consensus"]) == (4, 3, 2, 1)
    assert g["zoom"]["coverage"] == pytest.approx((100 / 200 + 100 / 200 + 0.0) / 3)
    assert g["zoom"]["iou"] == pytest.approx((100 / 200 + 100 / 300 + 0.0) / 3)
    assert g["consensus"] == {"coverage": 0.5, "iou": 0.5, "hit_rate": 1.0}
    assert result.accuracy("slake") == pytest.approx(50.0) and result.table_row["Modality avg"] == pytest.approx(50.0)
    assert result.results["benchmarks"]["my_set"]["acc"] == 1.0  # reported, outside the table
    assert "my_set" not in result.results["table"]["row"]
    assert result.results["settings"]["samples_per_prompt"] == 2
    md = result.markdown
    assert "| **step8** (this run) | - | - | - | - | 50.0 | - | - | 50.0 |" in md
    assert "| SLAKE | 2 | 4 | 50.0 | 100.0 (2) | 0.0 (2) | 75.0 | 0.75 | 75.0 | - |" in md  # skipped: not known
    assert "| my_set | 1 | 1 | 100.0 |" in md
    assert "the run's rollout.val_kwargs" in md and "8.jsonl" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json", "results.md", "samples.jsonl"]
    assert len((tmp_path / "out" / "samples.jsonl").read_text().splitlines()) == 5
