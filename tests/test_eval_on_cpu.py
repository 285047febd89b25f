"""medvr_verl.eval: the table math and grounding figures by hand, and evaluate() end to end on CPU.

End to end: tiny SLAKE (with organ detection boxes) and PMC-VQA releases in their real layouts are
converted with ``medvr_verl.data``, then ``evaluate`` runs them through veRL's RLHFDataset, the
agent-loop workers (``medvr_agent`` + zoom tool, tiny random-weight Qwen2.5-VL for tokenizer and
processor) and ``medvr_cca`` in the reward-loop workers, with a scripted client playing the model:
it zooms into known boxes and answers right for some questions and wrong for others. Every figure
of the report is checked against values worked out by hand below.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from cca_script import zoom_call
from PIL import Image

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
    (tmp_path / "a.parquet").write_bytes(b"")
    for argv, message in [
        (["--data", "gsm8k=" + str(tmp_path / "a.parquet")], "unknown dataset"),
        (["--data", "slake"], "BENCHMARK=PARQUET"),
        (["--data", "slake=" + str(tmp_path / "missing.parquet")], "no such file"),
        (["--data", f"slake={tmp_path / 'a.parquet'}", "--data", f"SLAKE={tmp_path / 'a.parquet'}"], "twice"),
        (["--data", f"slake={tmp_path / 'a.parquet'}", "--batch-size", "0"], "--batch-size"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["--model", "m", "--out", str(tmp_path), *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_fsdp_checkpoint_is_refused_with_the_merge_command(tmp_path):
    from medvr_verl.eval.runner import EvalSetupError, check_hf_checkpoint

    actor = tmp_path / "global_step_64" / "actor"
    actor.mkdir(parents=True)
    (actor / "model_world_size_8_rank_0.pt").write_bytes(b"")
    for path in (actor, actor.parent):
        with pytest.raises(EvalSetupError, match="python -m verl.model_merger merge --backend fsdp"):
            check_hf_checkpoint(path)
    check_hf_checkpoint("Qwen/Qwen2.5-VL-7B-Instruct")  # not a local folder: a hub id, left alone


def test_without_client_a_gpu_is_required(ray_session, tiny_model_path, tmp_path, capsys):
    """No GPU in this Ray session: the CLI (-> evaluate with client=None) stops before reading data."""
    from medvr_verl.eval.cli import main

    (tmp_path / "slake.parquet").write_bytes(b"not read")
    code = main(
        ["--model", str(tiny_model_path), "--data", f"slake={tmp_path / 'slake.parquet'}", "--out", str(tmp_path)]
    )
    assert code == 2 and "needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "results.md").exists()


# --------------------------------------------------------------------------------------------------
# End to end on CPU: fixtures in the releases' layouts
# --------------------------------------------------------------------------------------------------


def _image(path: Path, size, seed: int, fmt: str | None = None) -> None:
    """A small random image; its size is a multiple of 28 (>= 56x56), so Qwen2.5-VL sees it unresized
    and model-space zoom boxes are original pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


# SLAKE xmlab0: 112x84, organ boxes [x, y, w, h] -> Liver [10, 10, 50, 40], Spleen [60, 40, 90, 70]
LIVER, SPLEEN = (10, 10, 50, 40), (60, 40, 90, 70)
GT_AREA = 40 * 30 + 30 * 30  # 2100, disjoint boxes
TOP_LEFT, BOTTOM_RIGHT, CORNER = [0, 0, 56, 42], [56, 42, 112, 84], [90, 0, 112, 10]

# question -> (zoom box or None, answer, well formatted); SLAKE answers: Yes, Liver, Liver, Right, No
SLAKE_PLAN = {
    "Does the picture contain liver?": (TOP_LEFT, "yes", True),  # right
    "Which organ is the largest?": (BOTTOM_RIGHT, "spleen", True),  # wrong
    "Which is bigger, liver or spleen?": (None, "liver", True),  # right, no zoom
    "Where is the spleen?": (CORNER, "left", False),  # wrong, zoom misses every organ, bad format
    "Is the brain healthy?": ([0, 0, 56, 56], "no", True),  # right, image without boxes
}
PMC_PLAN = {
    "What imaging modality was used?": ([0, 0, 28, 28], "A", True),  # right
    "Which organ is enlarged?": (None, "C", True),  # wrong (B)
    "What stain is used?": (None, "A", True),  # right
}


def _slake(root: Path) -> None:
    _image(root / "imgs" / "xmlab0" / "source.jpg", (112, 84), seed=3, fmt="JPEG")
    Image.fromarray(np.zeros((84, 112), np.uint8)).save(root / "imgs" / "xmlab0" / "mask.png")
    _write_json(
        root / "imgs" / "xmlab0" / "detection.json", [{"Liver": [10, 10, 40, 30]}, {"Spleen": [60, 40, 30, 30]}]
    )
    _image(root / "imgs" / "xmlab1" / "source.jpg", (56, 56), seed=4, fmt="JPEG")
    base = {"img_id": 0, "img_name": "xmlab0/source.jpg", "location": "Abdomen", "modality": "CT"}
    base |= {"content_type": "Organ", "base_type": "vqa", "q_lang": "en"}
    rows = [
        (100, "Does the picture contain liver?", "Yes", "CLOSED", {}),
        (101, "Which organ is the largest?", "Liver", "OPEN", {}),
        (102, "图中包含肝脏吗?", "是", "CLOSED", {"q_lang": "zh"}),  # skipped: not English
        (103, "Which is bigger, liver or spleen?", "Liver", "CLOSED", {}),
        (107, "Where is the spleen?", "Right", "OPEN", {}),
        (106, "Is the brain healthy?", "No", "CLOSED", {"img_id": 1, "img_name": "xmlab1/source.jpg"}),
    ]
    test = [
        {**base, "qid": q, "question": text, "answer": a, "answer_type": t, **extra} for q, text, a, t, extra in rows
    ]
    _write_json(root / "test.json", test)


def _pmc_vqa(root: Path) -> None:
    for i in range(3):
        _image(root / "images" / f"PMC{i}_fig.png", (56, 56), seed=10 + i)
    header = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D"]
    questions = [
        ("What imaging modality was used?", ["CT scan", "MRI", "PET", "X-ray"], "A"),
        ("Which organ is enlarged?", ["Liver", "Spleen", "Kidney", "Heart"], "B"),
        ("What stain is used?", ["H&E", "PAS", "Gram", "Giemsa"], "A"),
    ]
    rows = []
    for i, (question, choices, label) in enumerate(questions):
        options = [f"{letter}:{text}" for letter, text in zip("ABCD", choices)]
        rows.append([i, f"PMC{i}_fig.png", "c", question, *options, choices["ABCD".index(label)], label])
    with open(root / "test.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*header, "Answer", "Answer_label"])
        writer.writerows(rows)


class PlanScript:
    """A ScriptedLLMClient script: finds the question in the context and plays its plan.

    ``plan[question]`` is one ``(box, answer, formatted)`` or a list of them, one per sample of the
    question (taken in call order). Turn 0 zooms into ``box`` (or answers at once when None); the
    next turn answers. The variant number rides in the thought, so later turns find it again.
    """

    def __init__(self, plan):
        self.plan = {q: v if isinstance(v, list) else [v] for q, v in plan.items()}
        self.calls: dict[str, int] = {}

    def __call__(self, ctx) -> str:
        question = next(q for q in self.plan if q in ctx.text)
        variants = self.plan[question]
        if ctx.turn == 0:
            k = self.calls.get(question, 0) % len(variants)
            self.calls[question] = self.calls.get(question, 0) + 1
            box, answer, formatted = variants[k]
            if box is not None:
                return f"<think>variant {k}: a closer look</think>" + zoom_call(box)
        else:
            k = int(re.findall(r"variant (\d+)", ctx.text)[-1])
            _, answer, formatted = variants[k]
        if not formatted:
            return f"<answer>{answer}</answer>"
        return f"<think>variant {k}: seen it</think><answer>{answer}</answer>"


TEST_OVERRIDES = [
    "data.max_prompt_length=2048",  # the tool schema alone is ~650 tokens of the tiny BPE
    "data.max_response_length=512",
    "actor_rollout_ref.rollout.agent.num_workers=1",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
]


@pytest.fixture(scope="module")
def parquets(tmp_path_factory):
    from medvr_verl.data import convert

    root = tmp_path_factory.mktemp("eval_data")
    _slake(root / "Slake1.0")
    _pmc_vqa(root / "PMC-VQA")
    files = {"slake": root / "slake_test.parquet", "PMC-VQA": root / "pmc_test.parquet"}
    assert convert("slake", root / "Slake1.0", files["slake"], split="test", progress=False, verbose=False).written == 5
    assert (
        convert("pmc_vqa", root / "PMC-VQA", files["PMC-VQA"], split="test", progress=False, verbose=False).written == 3
    )
    return files


def _evaluate(parquets, tiny_model_path, reward_workers, out_dir, plan, **kwargs):
    import datasets

    from medvr_verl.eval import evaluate
    from medvr_verl.testing.scripted_server import ScriptedLLMClient

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(out_dir.parent / "hf_cache"))
        return evaluate(
            tiny_model_path,
            kwargs.pop("files", parquets),
            client=lambda config: ScriptedLLMClient(config, script=PlanScript(plan)),
            out_dir=out_dir,
            overrides=[*TEST_OVERRIDES, f"+data.cache_dir={out_dir.parent / 'verl_cache'}"],
            reward_workers=reward_workers,
            progress=False,
            verbose=False,
            **kwargs,
        )


@pytest.fixture(scope="module")
def greedy_run(parquets, tiny_model_path, ray_session, reward_workers, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run") / "results"
    return _evaluate(parquets, tiny_model_path, reward_workers, out, {**SLAKE_PLAN, **PMC_PLAN}, batch_size=2)


@pytest.mark.vl_stack
def test_end_to_end_table(greedy_run):
    res = greedy_run
    slake, pmc = res.results["benchmarks"]["slake"], res.results["benchmarks"]["pmc_vqa"]
    assert (slake["n"], slake["n_prompts"], pmc["n"]) == (5, 5, 3)
    assert slake["acc"] == pytest.approx(3 / 5) and pmc["acc"] == pytest.approx(2 / 3)
    assert slake["by_question_type"]["closed"] == {"n": 3, "acc": 1.0}
    assert slake["by_question_type"]["open"] == {"n": 2, "acc": 0.0}
    assert slake["zoom_rate"] == pytest.approx(4 / 5) and pmc["zoom_rate"] == pytest.approx(1 / 3)
    assert slake["format_rate"] == pytest.approx(4 / 5) and pmc["format_rate"] == 1.0
    assert res.accuracy("SLAKE") == pytest.approx(60.0) and res.accuracy("pmc") == pytest.approx(200 / 3)
    assert res.accuracy("vqa_rad") is None
    row = res.table_row
    assert row["General avg"] == pytest.approx(200 / 3) and row["Modality avg"] == pytest.approx(60.0)
    assert "(this run) | - | 66.7 | - | - | 60.0 | - | 66.7 | 60.0 |" in res.markdown
    assert "| SLAKE | 5 | 5 | 60.0 | 100.0 (3) | 0.0 (2) | 80.0 | 0.80 | 80.0 | 0 |" in res.markdown
    assert "| PMC-VQA | 3 | 3 | 66.7 | - | - | 33.3 | 0.33 | 100.0 | 0 |" in res.markdown


@pytest.mark.vl_stack
def test_end_to_end_grounding(greedy_run):
    g = greedy_run.results["grounding"]
    assert list(g) == ["slake"]  # PMC-VQA has no boxes
    g = g["slake"]
    # samples with boxes: the 4 questions on xmlab0; zoomed: "contain liver", "largest", "where spleen"
    assert (g["n_with_gt"], g["n_zoomed"]) == (4, 3)
    cover_tl = 1200 / GT_AREA  # TOP_LEFT holds all of the liver box (40x30), none of the spleen
    cover_br = 30 * 28 / GT_AREA  # BOTTOM_RIGHT meets the spleen box on x 60-90, y 42-70
    iou_tl = 1200 / (56 * 42 + GT_AREA - 1200)
    iou_br = 840 / (56 * 42 + GT_AREA - 840)
    assert g["zoom"]["coverage"] == pytest.approx((cover_tl + cover_br + 0.0) / 3)
    assert g["zoom"]["iou"] == pytest.approx((iou_tl + iou_br + 0.0) / 3)
    assert g["zoom"]["hit_rate"] == pytest.approx(2 / 3)  # CORNER misses
    # greedy, one sample: the consensus is the zoom of a correct answer -> only "contain liver"
    assert (g["n_groups"], g["n_with_consensus"]) == (4, 1)
    assert g["consensus"] == {"coverage": pytest.approx(cover_tl), "iou": pytest.approx(iou_tl), "hit_rate": 1.0}
    assert "| SLAKE | 4 | 3 (75.0%) | 32.4 | 20.1 | 66.7 | 1 / 4 | 57.1 | 36.9 | 100.0 |" in greedy_run.markdown


@pytest.mark.vl_stack
def test_end_to_end_files(greedy_run):
    paths = greedy_run.paths
    assert sorted(paths) == ["results.json", "results.md", "samples.jsonl"]
    out = paths["results.md"].parent
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "samples.jsonl"]
    assert paths["results.md"].read_text() == greedy_run.markdown
    saved = json.loads(paths["results.json"].read_text())
    assert saved["table"]["row"]["SLAKE"] == pytest.approx(60.0)
    assert saved["settings"]["samples_per_prompt"] == 1 and saved["settings"]["temperature"] == 0.0
    lines = [json.loads(line) for line in paths["samples.jsonl"].read_text().splitlines()]
    assert len(lines) == 8 and [r["benchmark"] for r in lines] == ["pmc_vqa"] * 3 + ["slake"] * 5  # paper order
    by_q = {r["question"]: r for r in lines}
    liver = by_q["Does the picture contain liver?"]
    assert (liver["gt"], liver["pred"], liver["acc"], liver["index"]) == ("Yes", "yes", 1.0, 0)
    assert liver["zoom_boxes"] == [[0, 0.0, 0.0, 56.0, 42.0]] and liver["consensus"] == liver["zoom_boxes"]
    assert liver["gt_boxes"] == [list(map(float, LIVER)), list(map(float, SPLEEN))]
    assert liver["gt_box_labels"] == ["Liver", "Spleen"] and liver["num_turns"] >= 3
    # acc + tool; format penalty 0
    assert "<answer>yes</answer>" in liver["response"] and liver["score"] == pytest.approx(2.0)
    spleen = by_q["Where is the spleen?"]
    assert (spleen["pred"], spleen["acc"], spleen["format"], spleen["consensus"]) == ("left", 0.0, 0.0, [])
    enlarged = by_q["Which organ is enlarged?"]
    assert (enlarged["gt"], enlarged["pred"], enlarged["acc"], enlarged["zoom_boxes"]) == ("B", "C", 0.0, [])
    assert [r["uid"] for r in lines[3:5]] == ["slake/0", "slake/1"]


# --------------------------------------------------------------------------------------------------
# Several samples per question: config and the batch plumbing (a stand-in rollout manager)
# --------------------------------------------------------------------------------------------------


def test_eval_config(tiny_model_path):
    from medvr_verl.eval.runner import build_eval_config

    greedy = build_eval_config(tiny_model_path, {"slake": "/data/slake.parquet"})
    rollout = greedy.actor_rollout_ref.rollout
    assert (rollout.name, rollout.load_format, rollout.calculate_log_probs) == ("vllm", "auto", False)
    assert rollout.agent.agent_loop_manager_class == "medvr_verl.rollout.GroupAgentLoopManager"
    assert not rollout.custom.evr.enable and rollout.multi_turn.enable
    assert (rollout.val_kwargs.n, rollout.val_kwargs.temperature, rollout.val_kwargs.do_sample) == (1, 0, False)
    assert greedy.reward.reward_manager.name == "medvr_cca" and greedy.data.val_files == ["/data/slake.parquet"]
    assert greedy.actor_rollout_ref.model.path == str(tiny_model_path)
    sampled = build_eval_config(
        tiny_model_path, samples_per_prompt=3, overrides=["actor_rollout_ref.rollout.temperature=0.7"]
    )
    val = sampled.actor_rollout_ref.rollout.val_kwargs
    assert (val.n, val.temperature, val.do_sample) == (3, 0.7, True)
    with pytest.raises(ValueError, match="identical samples"):
        build_eval_config(
            tiny_model_path, samples_per_prompt=2, overrides=["actor_rollout_ref.rollout.val_kwargs.temperature=0"]
        )


class _Tokenizer:
    eos_token_id, pad_token_id = 2, 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids)


class _StandInManager:
    """Answers each sample like GroupAgentLoopManager + medvr_cca would: the reward extra info per row."""

    def __init__(self, reverse=False):
        self.reverse = reverse
        self.seen = None

    def generate_sequences(self, batch):
        import torch
        from verl.protocol import DataProto

        self.seen = batch
        n = len(batch)
        uids = list(batch.non_tensor_batch["uid"])[:: -1 if self.reverse else 1]
        zooms = [[[0, 0, 0, 10, 10]], [[0, 0, 0, 20, 10]], [], [[0, 50, 50, 60, 60]]]
        consensus = [[[0, 0, 0, 10, 10]]] * 2 + [[]] * 2  # group 0: both right and zoomed; group 1: none right
        mask = torch.ones(n, 3 + 4, dtype=torch.int64)
        mask[:, -1] = 0
        return DataProto.from_dict(
            tensors={
                "responses": torch.arange(n * 4).reshape(n, 4),
                "attention_mask": mask,
                "rm_scores": torch.ones(n, 4),
            },
            non_tensors={
                "group_uid": np.array(uids, dtype=object),
                "acc": np.array([1.0, 1.0, 0.0, 0.0]),
                "format": np.array([1.0, 1.0, 1.0, 0.0]),
                "pred": np.array(["yes", "yes", "no", ""], dtype=object),
                "num_zoom": np.array([len(z) for z in zooms]),
                "num_zoom_invalid": np.array([0, 0, 1, 0]),
                "zoom_boxes_json": np.array([json.dumps(z) for z in zooms], dtype=object),
                "cca_consensus_json": np.array([json.dumps(c) for c in consensus], dtype=object),
                "__num_turns__": np.array([4, 4, 2, 4], dtype=np.int32),
            },
        )


def test_several_samples_per_question_are_grouped_by_uid():
    import torch
    from verl.utils.dataset.rl_dataset import collate_fn

    from medvr_verl.eval.runner import _run_batch

    rows = [
        {
            "data_source": "slake",
            "reward_model": {"style": "rule", "ground_truth": gt},
            "extra_info": {
                "index": 10 + i,
                "question_type": "closed",
                "question": f"q{i}",
                "gt_boxes": [[0, 0, 10, 20]],
            },
            "dummy_tensor": torch.tensor([0], dtype=torch.uint8),
        }
        for i, gt in enumerate(["yes", "no"])
    ]
    manager = _StandInManager()
    records = _run_batch(manager, collate_fn(rows), "slake", 4, 2, _Tokenizer(), save_responses=True)
    assert manager.seen.meta_info["validate"] and manager.seen.meta_info["do_sample"]
    assert [r["uid"] for r in records] == ["slake/4", "slake/4", "slake/5", "slake/5"]  # interleaved repeat
    assert [r["sample"] for r in records] == [0, 1, 0, 1] and [r["index"] for r in records] == [10, 10, 11, 11]
    assert [r["gt"] for r in records] == ["yes", "yes", "no", "no"]
    assert records[0]["response"] == "0 1 2" and records[2]["num_zoom_invalid"] == 1
    g = summarize(records)["grounding"]["slake"]  # gt union: 10 x 20 = 200
    assert (g["n_with_gt"], g["n_zoomed"], g["n_groups"], g["n_with_consensus"]) == (4, 3, 2, 1)
    assert g["zoom"]["coverage"] == pytest.approx((100 / 200 + 100 / 200 + 0.0) / 3)
    assert g["zoom"]["iou"] == pytest.approx((100 / 200 + 100 / 300 + 0.0) / 3)
    assert g["consensus"] == {"coverage": 0.5, "iou": 0.5, "hit_rate": 1.0}
    with pytest.raises(RuntimeError, match="out of order"):
        _run_batch(_StandInManager(reverse=True), collate_fn(rows), "slake", 0, 2, _Tokenizer(), save_responses=False)
