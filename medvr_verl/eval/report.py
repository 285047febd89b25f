"""The evaluation report: markdown table, ``results.json``, per-sample JSONL; atomic writes with the
user's umask (:mod:`medvr_verl.io_utils`).

Pure (no veRL/torch). ``results.md`` holds the paper's table (our row plus the paper's reported rows,
labelled as such), the per-benchmark breakdown and the grounding check; ``results.json`` the same
numbers unrounded (fractions in [0, 1]; the table row in percent); ``samples.jsonl`` one line per
scored sample.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvr_verl.eval.metrics import (
    AVERAGES,
    BENCHMARKS,
    CLOSED_OPEN_BENCHMARKS,
    PAPER_ROWS,
    column_of,
    fmt_pct,
    label_of,
    table_row,
)
from medvr_verl.io_utils import AtomicFile, atomic_write_text

__all__ = ["EvalResult", "JsonlWriter", "atomic_write_text", "markdown", "write_results"]

TABLE_NOTE = (
    "Accuracy (%). General avg = mean of OMVQA, PMC-VQA, MedXQA (general medical VQA); Modality avg = mean "
    "of VQA-RAD, SLAKE, PathVQA (modality-specific) -- our reading of the paper's grouping. Averages are "
    'over the benchmarks evaluated; "-" = not evaluated.'
)
PAPER_NOTE = (
    "Rows marked *(paper, reported)* are the numbers printed in the MedVR paper (Qwen2.5-VL-7B backbone, "
    "64 GRPO rounds), copied for reference; they were not measured by this run."
)
GROUNDING_NOTE = (
    "Grounding (not in the paper): zoom regions against SLAKE's detection boxes, organs and findings "
    "(pixels of image 0). "
    "Coverage = |zoom union ∩ gt union| / |gt union|, mean over samples with >= 1 zoom on image 0; IoU of the "
    "two unions; hit rate = share of those samples whose zoom union overlaps the gt union at all. SLAKE's "
    "boxes cover every annotated organ and finding of the image, not only the one a question asks about, "
    "so coverage "
    "(recall of the gt area) is the meaningful figure and IoU a lower bound. Consensus = each question's CCA "
    "region (the majority of the correct samples' zoom unions; with 1 sample per question, the zoom region "
    "of a correct answer)."
)


@dataclass
class EvalResult:
    """An evaluation's report: what :func:`medvr_verl.eval.dump.report_from_dump` returns."""

    results: dict
    """Everything in ``results.json``: ``benchmarks``, ``table``, ``grounding``, ``settings``, ``model``."""
    markdown: str
    """``results.md``."""
    records: list[dict] = field(repr=False)
    """One dict per scored sample (the lines of ``samples.jsonl``)."""
    paths: dict[str, Path] = field(default_factory=dict)
    """Written files by name (``results.md``, ``results.json``, ``samples.jsonl``); empty without ``out_dir``."""

    @property
    def table_row(self) -> dict[str, float | None]:
        """``{column: accuracy % or None}`` with the two averages (unrounded)."""
        return self.results["table"]["row"]

    def accuracy(self, benchmark: str) -> float | None:
        """Accuracy (%) of a benchmark (canonical name or alias), None when not evaluated."""
        from medvr_verl.data.writer import resolve_dataset

        return self.table_row.get(column_of(resolve_dataset(benchmark)))


def _md_table(header: list[str], rows: list[list[str]], align_left: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(":---" if i < align_left else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _row_cells(row: Mapping[str, float | None]) -> list[str]:
    return [fmt_pct(v, scale=1.0) for v in row.values()]


def markdown(results: Mapping[str, Any], *, model: str | None = None, paper_rows: bool = True) -> str:
    """The report as markdown (see the module docstring); ``results`` from :func:`~medvr_verl.eval.metrics.summarize`
    plus optional ``settings`` / ``model`` entries."""
    settings = results.get("settings", {})
    model = model or results.get("model") or "this run"
    lines = ["# MedVR evaluation", ""]
    n = settings.get("samples_per_prompt", 1)
    if "temperature" in settings:
        temp = settings["temperature"]
        sampling = "greedy (temperature 0)" if n == 1 and not temp else f"temperature {temp}"
    else:  # a validation dump does not record the sampling: the run's rollout.val_kwargs
        sampling = "the run's rollout.val_kwargs"
    lines.append(f"Model: `{model}`; zoom agent (`medvr_agent`), {sampling}, {n} sample(s) per question.")
    if settings.get("dump"):
        lines.append(f"Samples: veRL's validation dump `{settings['dump']}`.")
    lines += ["", TABLE_NOTE, ""]

    header = ["Model", *results["table"]["columns"]]
    rows = [[f"**{Path(str(model)).name or model}** (this run)", *_row_cells(results["table"]["row"])]]
    if paper_rows:
        rows += [[name, *_row_cells(table_row(values))] for name, values in PAPER_ROWS.items()]
    lines += _md_table(header, rows)
    group_size = {h: sum(b.group == g for b in BENCHMARKS) for h, g in AVERAGES}
    partial = {h: cols for h, cols in results["table"]["averages_over"].items() if 0 < len(cols) < group_size[h]}
    if partial:
        lines.append("")
        lines.append(
            "Partial averages (this run): " + "; ".join(f"{h} over {', '.join(c)}" for h, c in partial.items()) + "."
        )
    if paper_rows:
        lines += ["", PAPER_NOTE]

    lines += ["", "## Per benchmark", ""]
    header = [
        "Benchmark",
        "Questions",
        "Samples",
        "Acc",
        "Closed acc (n)",
        "Open acc (n)",
        "Zoom rate",
        "Zooms/sample",
        "Format rate",
        "Skipped",
    ]
    rows = []
    for key, m in results["benchmarks"].items():
        by_type = m.get("by_question_type", {})

        def cell(qt: str, key=key, by_type=by_type) -> str:
            if key not in CLOSED_OPEN_BENCHMARKS or qt not in by_type:
                return "-"
            return f"{fmt_pct(by_type[qt]['acc'])} ({by_type[qt]['n']})"

        rows.append(
            [
                label_of(key),
                str(m["n_prompts"]),
                str(m["n"]),
                fmt_pct(m["acc"]),
                cell("closed"),
                cell("open"),
                fmt_pct(m["zoom_rate"]),
                f"{m['zooms_per_sample']:.2f}",
                fmt_pct(m["format_rate"]),
                "-" if m.get("skipped") is None else str(m["skipped"]),
            ]
        )
    lines += _md_table(header, rows)
    lines += [
        "",
        "Acc and rates in percent. Zoom rate = share of samples with >= 1 valid zoom; format rate = share with the "
        "<think>...</think><answer>...</answer> format; skipped = rows veRL's over-long prompt filter dropped "
        '("-": not known, as from a validation dump).',
    ]

    if results.get("grounding"):
        lines += ["", "## Grounding check", ""]
        header = [
            "Benchmark",
            "Samples w/ boxes",
            "Zoomed",
            "Coverage",
            "IoU",
            "Hit rate",
            "Groups w/ consensus",
            "Cons. coverage",
            "Cons. IoU",
            "Cons. hit rate",
        ]
        rows = []
        for key, g in results["grounding"].items():
            z, c = g["zoom"], g["consensus"]
            rows.append(
                [
                    label_of(key),
                    str(g["n_with_gt"]),
                    f"{g['n_zoomed']} ({fmt_pct(g['zoom_rate'])}%)",
                    fmt_pct(z["coverage"]),
                    fmt_pct(z["iou"]),
                    fmt_pct(z["hit_rate"]),
                    f"{g['n_with_consensus']} / {g['n_groups']}",
                    fmt_pct(c["coverage"]),
                    fmt_pct(c["iou"]),
                    fmt_pct(c["hit_rate"]),
                ]
            )
        lines += _md_table(header, rows)
        lines += ["", "Percent. " + GROUNDING_NOTE]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


class JsonlWriter:
    """Streams records to ``<path>.partial`` (readable while a long run goes on); :meth:`close` renames
    it to ``path``. Leaving a ``with`` block on an error keeps the ``.partial`` file for inspection."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._file = AtomicFile(self.path, temp=self.partial)
        self._fh = open(self.partial, "w", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> Path:
        if not self._fh.closed:
            self._fh.close()
            self._file.commit()
        return self.path

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    return str(value)


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any], md: str) -> dict[str, Path]:
    """Write ``results.json`` and ``results.md`` atomically; returns their paths."""
    out = Path(out_dir)
    text = json.dumps(results, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    return {
        "results.json": atomic_write_text(out / "results.json", text),
        "results.md": atomic_write_text(out / "results.md", md),
    }
