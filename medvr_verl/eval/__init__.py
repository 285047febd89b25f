"""Benchmark evaluation with the zoom agent: the paper's table, plus a grounding check.

Evaluation runs through veRL's V1 trainer as veRL users evaluate (``trainer.val_only=true``, the
benchmark files as ``data.val_files``, the samples dumped to ``trainer.validation_data_dir``); this
package reads that dump::

    python -m verl.trainer.main_ppo --config-path=pkg://medvr_verl.recipes.medvr --config-name=medvr \\
        trainer.val_only=true trainer.val_before_train=true trainer.validation_data_dir=eval/dump ...
    python -m medvr_verl.eval report --dump eval/dump --out eval/

or ``medvr_verl.eval.report_from_dump("eval/dump", "eval/")`` (see ``python -m medvr_verl.eval --help``).

* :mod:`medvr_verl.eval.dump` -- veRL's validation dump -> per-sample records; :func:`report_from_dump`.
* :mod:`medvr_verl.eval.metrics` -- pure aggregation: table row, averages, breakdowns, grounding.
* :mod:`medvr_verl.eval.report` -- ``results.md`` / ``results.json`` / ``samples.jsonl``.

Importing this package imports neither veRL nor torch.
"""

from medvr_verl.eval.dump import DumpError, find_dump, read_dump, report_from_dump
from medvr_verl.eval.metrics import (
    AVERAGES,
    BENCHMARKS,
    PAPER_ROWS,
    Benchmark,
    benchmark_metrics,
    fmt_pct,
    grounding_metrics,
    region_scores,
    summarize,
    table_row,
)
from medvr_verl.eval.report import EvalResult, markdown, write_results

__all__ = [
    "AVERAGES",
    "BENCHMARKS",
    "PAPER_ROWS",
    "Benchmark",
    "DumpError",
    "EvalResult",
    "benchmark_metrics",
    "find_dump",
    "fmt_pct",
    "grounding_metrics",
    "markdown",
    "read_dump",
    "region_scores",
    "report_from_dump",
    "summarize",
    "table_row",
    "write_results",
]
