"""Pure aggregation of per-sample evaluation records: the paper's table, breakdowns, grounding.

Imports neither veRL nor torch (numpy-free too; exact areas come from :mod:`medvr_verl.boxes`).

A *record* is one scored trajectory, a dict with at least::

    benchmark      canonical name ("slake", "pmc_vqa", ...)
    uid            the prompt's group id (all samples of one question share it)
    acc            0.0 / 1.0 (medvr_cca's ``acc``)
    format         0.0 / 1.0 (format reward)
    question_type  "multiple_choice" | "closed" | "open" (or None)
    zoom_boxes     [[image_index, x1, y1, x2, y2], ...]  valid zooms, original pixels (``zoom_boxes_json``)
    consensus      [[image_index, x1, y1, x2, y2], ...]  the group's CCA region (``cca_consensus_json``)
    gt_boxes       [[x1, y1, x2, y2], ...]  ground-truth boxes on image 0 (SLAKE), else []
    num_zoom_invalid  invalid zoom calls (optional)

Fractions are kept in [0, 1] here; the table shows percent with one decimal (:func:`fmt_pct`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from medvr_verl.boxes import intersection_area, iou, union_area
from medvr_verl.scoring import lenient_accuracy
from medvr_verl.tool_calls import as_image_index, validate_box

__all__ = [
    "AVERAGES",
    "BENCHMARKS",
    "BENCHMARK_KEYS",
    "PAPER_ROWS",
    "Benchmark",
    "benchmark_metrics",
    "column_of",
    "fmt_pct",
    "grounding_metrics",
    "image_boxes",
    "label_of",
    "region_scores",
    "summarize",
    "table_row",
]


@dataclass(frozen=True)
class Benchmark:
    key: str
    """Canonical dataset name (the parquet's ``data_source``)."""
    column: str
    """Column header in the paper's table."""
    group: str
    """``"general"`` or ``"modality"`` (which average it enters)."""


#: The paper's columns, in its order. The grouping into general (OMVQA, PMC-VQA, MedXQA: broad
#: medical VQA collections) and modality-specific (VQA-RAD radiology, SLAKE radiology, PathVQA
#: pathology) benchmarks is our reading of the paper.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("omnimedvqa", "OMVQA", "general"),
    Benchmark("pmc_vqa", "PMC-VQA", "general"),
    Benchmark("medxpertqa_mm", "MedXQA", "general"),
    Benchmark("vqa_rad", "VQA-RAD", "modality"),
    Benchmark("slake", "SLAKE", "modality"),
    Benchmark("path_vqa", "PathVQA", "modality"),
)
BENCHMARK_KEYS: tuple[str, ...] = tuple(b.key for b in BENCHMARKS)
#: Average columns: (header, group).
AVERAGES: tuple[tuple[str, str], ...] = (("General avg", "general"), ("Modality avg", "modality"))
#: Benchmarks whose questions are a mix of closed (yes/no) and open ones: the table breaks them down.
CLOSED_OPEN_BENCHMARKS: tuple[str, ...] = ("vqa_rad", "slake", "path_vqa")

#: Accuracies (%) reported in the MedVR paper (Qwen2.5-VL-7B backbone): reference rows, not measured here.
PAPER_ROWS: dict[str, dict[str, float]] = {
    "MedVR (paper, reported)": {
        "omnimedvqa": 96.8,
        "pmc_vqa": 54.3,
        "medxpertqa_mm": 26.4,
        "vqa_rad": 74.4,
        "slake": 85.3,
        "path_vqa": 62.3,
    },
    "Qwen2.5-VL-7B base (paper, reported)": {
        "omnimedvqa": 59.0,
        "pmc_vqa": 51.2,
        "medxpertqa_mm": 22.3,
        "vqa_rad": 64.5,
        "slake": 67.2,
        "path_vqa": 44.1,
    },
}


def column_of(key: str) -> str:
    for b in BENCHMARKS:
        if b.key == key:
            return b.column
    raise KeyError(f"unknown benchmark {key!r}; known: {BENCHMARK_KEYS}")


def label_of(key: str) -> str:
    """The paper's column name of a benchmark; another data source's own name."""
    return column_of(key) if key in BENCHMARK_KEYS else key


def fmt_pct(value: float | None, *, scale: float = 100.0) -> str:
    """``0.625 -> "62.5"``, one decimal, half up (``0.0625 -> "6.3"``); ``None -> "-"``."""
    if value is None:
        return "-"
    # round to 9 places first so float noise (62.4999999) does not decide the last digit
    d = Decimal(repr(round(float(value) * scale, 9)))
    return str(d.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def table_row(accuracies: Mapping[str, float | None]) -> dict[str, float | None]:
    """One table row from per-benchmark accuracies (any unit; percent for the table).

    Returns ``{column: value or None}`` with the six benchmark columns in the paper's order, then
    "General avg" and "Modality avg": the plain mean over the benchmarks of that group present in
    ``accuracies`` (not None), None when the group has none.
    """
    row: dict[str, float | None] = {}
    for b in BENCHMARKS:
        value = accuracies.get(b.key)
        row[b.column] = None if value is None else float(value)
    for header, group in AVERAGES:
        values = [row[b.column] for b in BENCHMARKS if b.group == group and row[b.column] is not None]
        row[header] = _mean(values)
    return row


def average_coverage(keys: Iterable[str]) -> dict[str, list[str]]:
    """``{average header: [columns it covers]}`` for the evaluated benchmark ``keys``."""
    present = set(keys)
    return {
        header: [b.column for b in BENCHMARKS if b.group == group and b.key in present] for header, group in AVERAGES
    }


# --------------------------------------------------------------------------------------------------
# Per benchmark
# --------------------------------------------------------------------------------------------------


def image_boxes(tagged: Iterable[Sequence[float]] | None, image_index: int = 0) -> list[tuple[float, ...]]:
    """The ``(x1, y1, x2, y2)`` of the ``[k, x1, y1, x2, y2]`` entries on image ``image_index``.

    Records may be read back from files written by anyone: malformed entries (not 5 items, a bad
    image index, a box :func:`medvr_verl.tool_calls.validate_box` refuses) are skipped.
    """
    if not isinstance(tagged, (list, tuple)):
        return []
    out = []
    for entry in tagged:
        if not isinstance(entry, (list, tuple)) or len(entry) != 5:
            continue
        if as_image_index(entry[0]) != image_index:
            continue
        box = validate_box(list(entry[1:5]))
        if box is not None:
            out.append(box)
    return out


def _gt_boxes(record: Mapping) -> list[tuple[float, ...]]:
    """A record's valid ``gt_boxes`` (malformed ones skipped)."""
    raw = record.get("gt_boxes")
    if not isinstance(raw, (list, tuple)):
        return []
    return [b for b in (validate_box(v) for v in raw) if b is not None]


def _lenient(record: Mapping) -> float | None:
    """The lenient (containment) accuracy of one record, for an extra column; None when the record
    keeps no ``pred``. Multiple choice has no lenient form: its ``acc``."""
    pred, gt, qt = record.get("pred"), record.get("gt"), record.get("question_type")
    if pred is None or gt is None:
        return None
    if qt == "multiple_choice":
        return float(record["acc"])
    gts = gt if isinstance(gt, (list, tuple)) else [gt]
    qt = qt if qt in ("closed", "open") else None
    return max((lenient_accuracy(str(pred), str(g), qt) for g in gts if g is not None), default=0.0)


def benchmark_metrics(records: Sequence[Mapping]) -> dict:
    """Accuracy, closed/open breakdown, zoom usage and format rate of one benchmark's records.

    ``acc`` is the mean over all scored samples (with ``samples_per_prompt = n > 1`` every sample
    counts: the expected accuracy of one sampled answer). ``zoom_rate`` is the share of samples
    with at least one valid zoom (on any image). ``acc_lenient`` is the evaluation-only lenient
    accuracy (:func:`medvr_verl.scoring.lenient_accuracy`; None when records keep no ``pred``).
    """
    n = len(records)
    by_type: dict[str, dict] = {}
    for qt in ("closed", "open", "multiple_choice"):
        sub = [r for r in records if r.get("question_type") == qt]
        if sub:
            by_type[qt] = {"n": len(sub), "acc": _mean([float(r["acc"]) for r in sub])}
    zooms = [len(r.get("zoom_boxes") or []) for r in records]
    lenient = [_lenient(r) for r in records]
    return {
        "n": n,
        "n_prompts": len({r["uid"] for r in records}),
        "acc": _mean([float(r["acc"]) for r in records]),
        # the older containment rule, an extra column only (the reward and ``acc`` use exact match)
        "acc_lenient": _mean(lenient) if lenient and all(v is not None for v in lenient) else None,
        "format_rate": _mean([float(r.get("format") or 0.0) for r in records]),
        "zoom_rate": _mean([float(z > 0) for z in zooms]),
        "zooms_per_sample": _mean([float(z) for z in zooms]),
        "invalid_zoom_calls": sum(int(r.get("num_zoom_invalid") or 0) for r in records),
        "by_question_type": by_type,
    }


# --------------------------------------------------------------------------------------------------
# Grounding against ground-truth boxes
# --------------------------------------------------------------------------------------------------


def region_scores(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> dict[str, float]:
    """How a predicted region (union of ``pred``) covers the ground truth (union of ``gt``).

    ``coverage = |P ∩ G| / |G|`` (recall of the gt area), ``iou = |P ∩ G| / |P ∪ G|``,
    ``hit = 1.0`` when ``|P ∩ G| > 0`` (boxes that only touch along an edge do not hit).
    Exact areas (:mod:`medvr_verl.boxes`). ``G`` must have positive area.
    """
    gt_area = union_area(gt)
    if gt_area <= 0.0:
        raise ValueError("the ground-truth boxes have no area")
    inter = intersection_area(pred, gt)
    return {"coverage": inter / gt_area, "iou": iou(pred, gt), "hit": float(inter > 0.0)}


def _region_stats(pairs: Sequence[tuple[list, list]]) -> dict:
    scores = [region_scores(p, g) for p, g in pairs]
    return {
        "coverage": _mean([s["coverage"] for s in scores]),
        "iou": _mean([s["iou"] for s in scores]),
        "hit_rate": _mean([s["hit"] for s in scores]),
    }


def grounding_metrics(records: Sequence[Mapping]) -> dict | None:
    """Zoom and consensus regions against ``gt_boxes`` (image 0), or None when no record has boxes.

    Over the samples with gt boxes:

    * ``n_with_gt``; ``n_zoomed``: those with >= 1 valid zoom on image 0; ``zoom_rate`` their share.
    * ``zoom``: mean ``coverage`` / ``iou`` / ``hit_rate`` (:func:`region_scores`) of the union of a
      sample's zoom boxes on image 0 against the union of its gt boxes, over the zoomed samples.
    * ``consensus``: the same for each group's CCA consensus region on image 0 (one value per
      ``uid``, over the groups whose consensus is non-empty there); ``n_groups`` groups with gt boxes,
      ``n_with_consensus`` of them with a consensus. With one sample per question the consensus is
      the zoom region of a correct answer (CCA's quorum is the correct samples that zoomed).
    """
    with_gt = [r for r in records if _gt_boxes(r)]
    if not with_gt:
        return None
    zoom_pairs = []
    for r in with_gt:
        boxes = image_boxes(r.get("zoom_boxes"))
        if boxes:
            zoom_pairs.append((boxes, _gt_boxes(r)))
    groups: dict[str, Mapping] = {}
    for r in with_gt:
        groups.setdefault(str(r.get("uid")), r)
    consensus_pairs = []
    for r in groups.values():
        region = image_boxes(r.get("consensus"))
        if region:
            consensus_pairs.append((region, _gt_boxes(r)))
    empty = {"coverage": None, "iou": None, "hit_rate": None}
    return {
        "n_with_gt": len(with_gt),
        "n_zoomed": len(zoom_pairs),
        "zoom_rate": len(zoom_pairs) / len(with_gt),
        "zoom": _region_stats(zoom_pairs) if zoom_pairs else dict(empty),
        "n_groups": len(groups),
        "n_with_consensus": len(consensus_pairs),
        "consensus": _region_stats(consensus_pairs) if consensus_pairs else dict(empty),
    }


# --------------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------------


def summarize(
    records: Sequence[Mapping], *, skipped: Mapping[str, int] | None = None, other_sources: bool = False
) -> dict:
    """All metrics of an evaluation: per benchmark, the table row (percent), grounding.

    ``skipped``: rows per benchmark that were not evaluated (veRL's over-long prompt filter); None:
    not known (a validation dump does not say), shown as "-".
    ``other_sources``: records of data sources that are none of the paper's benchmarks (a validation
    set of one's own) get their breakdown and grounding rows after the paper's, outside the table;
    False: they are an error.
    """
    keys = [b.key for b in BENCHMARKS if any(r["benchmark"] == b.key for r in records)]
    unknown = sorted({r["benchmark"] for r in records} - set(BENCHMARK_KEYS))
    if unknown and not other_sources:
        raise ValueError(f"records of unknown benchmarks {unknown}; known: {BENCHMARK_KEYS}")
    per_bench = {}
    grounding = {}
    for key in [*keys, *unknown]:
        sub = [r for r in records if r["benchmark"] == key]
        per_bench[key] = benchmark_metrics(sub)
        per_bench[key]["skipped"] = None if skipped is None else int(skipped.get(key, 0))
        g = grounding_metrics(sub)
        if g is not None:
            grounding[key] = g
    row = table_row({k: 100.0 * m["acc"] for k, m in per_bench.items() if m["acc"] is not None})
    return {
        "benchmarks": per_bench,
        "table": {
            "columns": list(row),
            "row": row,
            "averages_over": average_coverage(keys),
        },
        "grounding": grounding,
    }
