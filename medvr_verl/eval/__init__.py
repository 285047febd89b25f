"""Benchmark evaluation of a checkpoint with the zoom agent: the paper's table, plus a grounding check.

::

    from medvr_verl.eval import evaluate
    result = evaluate("/ckpt/hf", {"slake": "slake_test.parquet", "pmc_vqa": "pmc_test.parquet"}, out_dir="results/")
    print(result.markdown)

or ``python -m medvr_verl.eval --model /ckpt/hf --data slake=slake_test.parquet --out results/``.

* :mod:`medvr_verl.eval.runner` -- rollout and rewards through veRL (``RLHFDataset``, the agent-loop
  workers, ``medvr_cca`` in the reward-loop workers, a standalone vLLM server on GPU).
* :mod:`medvr_verl.eval.metrics` -- pure aggregation: table row, averages, breakdowns, grounding.
* :mod:`medvr_verl.eval.report` -- ``results.md`` / ``results.json`` / ``samples.jsonl``.

Importing this package does not import veRL or torch; :func:`evaluate` does.
"""

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
from medvr_verl.eval.report import markdown, write_results

__all__ = [
    "AVERAGES",
    "BENCHMARKS",
    "PAPER_ROWS",
    "Benchmark",
    "EvalResult",
    "benchmark_metrics",
    "build_eval_config",
    "evaluate",
    "fmt_pct",
    "grounding_metrics",
    "markdown",
    "region_scores",
    "summarize",
    "table_row",
    "write_results",
]

_RUNNER = ("EvalResult", "build_eval_config", "evaluate")


def __getattr__(name):
    if name in _RUNNER:
        from medvr_verl.eval import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
