"""Command line of :func:`medvr_verl.eval.evaluate`: ``python -m medvr_verl.eval --help``."""

from __future__ import annotations

import argparse
import os
import sys

from medvr_verl.eval.metrics import BENCHMARKS

DESCRIPTION = """\
Evaluate a checkpoint with the MedVR zoom agent (medvr_agent, greedy) on the converted benchmarks,
through veRL's own code: RLHFDataset -> agent-loop workers (zoom tool) -> medvr_cca rewards in the
reward-loop workers. The model is served by a standalone vLLM replica per GPU (needs a GPU and the
[vllm] extra). Data: parquet files written by `python -m medvr_verl.data`.
"""

EPILOG = """\
the table (results.md, printed at the end):
  columns in the paper's order: OMVQA (omnimedvqa), PMC-VQA (pmc_vqa), MedXQA (medxpertqa_mm),
  VQA-RAD (vqa_rad), SLAKE (slake), PathVQA (path_vqa), then
  General avg  = mean of OMVQA, PMC-VQA, MedXQA   (general medical VQA)
  Modality avg = mean of VQA-RAD, SLAKE, PathVQA  (modality-specific)
  (this grouping is our reading of the paper). Accuracy in percent, one decimal; averages over the
  benchmarks evaluated; "-" = not evaluated. The paper's reported MedVR and Qwen2.5-VL-7B rows follow
  as labelled reference rows. Below: per-benchmark counts, closed/open accuracy (VQA-RAD, SLAKE,
  PathVQA), zoom rate (samples with >= 1 valid zoom), format rate, and a grounding check of the zoom
  boxes against SLAKE's detection boxes, organs and findings (coverage, IoU, hit rate; also for the
  CCA consensus region).
  results.json holds the unrounded numbers; samples.jsonl one line per sample (pred, gt, acc, boxes).

checkpoints:
  --model takes a Hugging Face model folder. Export a veRL FSDP checkpoint first:
    python -m verl.model_merger merge --backend fsdp \\
        --local_dir checkpoints/<project>/<experiment>/global_step_64/actor --target_dir ckpt/hf

example:
  python -m medvr_verl.eval --model ckpt/hf --data slake=data/slake_test.parquet \\
      --data pmc_vqa=data/pmc_test.parquet --out results/ --batch-size 128
"""


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(b.key for b in BENCHMARKS)
    parser = argparse.ArgumentParser(
        prog="python -m medvr_verl.eval",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="Hugging Face model folder (or hub id) to evaluate")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="BENCHMARK=PARQUET",
        help=f"a benchmark and its parquet file; repeat for several. Benchmarks: {names} (aliases work)",
    )
    parser.add_argument("--out", required=True, help="output folder for results.md, results.json, samples.jsonl")
    parser.add_argument("--batch-size", type=int, default=64, help="questions per rollout batch (default 64)")
    parser.add_argument("--max-samples", type=int, default=None, help="at most N questions per benchmark (seeded)")
    parser.add_argument(
        "--samples-per-prompt",
        type=int,
        default=1,
        help="samples per question (default 1 = greedy); > 1 samples at val_kwargs.temperature "
        "(default rollout.temperature) and reports the CCA consensus grounding over each question's samples",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra override of the config, e.g. actor_rollout_ref.rollout.tensor_model_parallel_size=2 "
        "or data.max_response_length=2048; repeat for several",
    )
    parser.add_argument(
        "--recipe",
        default="medvr",
        help="medvr, or one of its ablations (recipes/medvr/ablation/; text_rl for the text baseline)",
    )
    parser.add_argument("--no-responses", action="store_true", help="leave the decoded responses out of samples.jsonl")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_data(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    from medvr_verl.data.writer import resolve_dataset

    files: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--data takes BENCHMARK=PARQUET, got {item!r}")
        try:
            key = resolve_dataset(name)
        except ValueError as exc:
            parser.error(str(exc))
        if key in files:
            parser.error(f"--data {key} given twice")
        if not os.path.isfile(path):
            parser.error(f"--data {key}: no such file {path}")
        files[key] = path
    return files


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    files = parse_data(parser, args.data)
    for name in ("batch_size", "samples_per_prompt"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max-samples must be >= 1")

    from medvr_verl.eval.runner import EvalSetupError, evaluate

    try:
        result = evaluate(
            args.model,
            files,
            out_dir=args.out,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            samples_per_prompt=args.samples_per_prompt,
            overrides=args.override,
            recipe=args.recipe,
            save_responses=not args.no_responses,
            progress=not args.no_progress,
        )
    except EvalSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in result.paths.values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
