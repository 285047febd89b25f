"""Command line of the evaluation report: ``python -m medvr_verl.eval report --help``."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Evaluation runs through veRL's own trainer, as veRL users evaluate: main_ppo with trainer.val_only=true
over the benchmark files (medvr_agent with the zoom tool, medvr_cca rewards, greedy), which dumps every
sample to trainer.validation_data_dir; then `report` turns that dump into the paper's table, the
per-benchmark breakdown and the grounding check (zoom boxes against the annotated boxes).

  python -m verl.trainer.main_ppo --config-path=pkg://medvr_verl.recipes.medvr --config-name=medvr \\
      hardware=gpu1 trainer.val_only=true trainer.val_before_train=true \\
      actor_rollout_ref.actor.use_kl_loss=false trainer.resume_mode=disable \\
      data.val_files=[data/slake_test.parquet,data/pmc_test.parquet] data.train_files=[data/slake_test.parquet] \\
      trainer.validation_data_dir=eval/dump actor_rollout_ref.model.path=ckpt/hf
  python -m medvr_verl.eval report --dump eval/dump --out eval/

On a machine without a GPU: +backend=cpu instead of hardware=gpu1 (VERL_PLATFORM=cpu in the
environment; medvr_cpu serves the model). Data: parquet files written by `python -m medvr_verl.data`.
"""

EPILOG = """\
the table (results.md, printed):
  columns in the paper's order: OMVQA (omnimedvqa), PMC-VQA (pmc_vqa), MedXQA (medxpertqa_mm),
  VQA-RAD (vqa_rad), SLAKE (slake), PathVQA (path_vqa), then
  General avg  = mean of OMVQA, PMC-VQA, MedXQA   (general medical VQA)
  Modality avg = mean of VQA-RAD, SLAKE, PathVQA  (modality-specific)
  (this grouping is our reading of the paper). Accuracy in percent, one decimal; averages over the
  benchmarks evaluated; "-" = not evaluated. The paper's reported MedVR and Qwen2.5-VL-7B rows follow
  as labelled reference rows. Below: per-benchmark counts, closed/open accuracy (VQA-RAD, SLAKE,
  PathVQA), zoom rate (samples with >= 1 valid zoom), format rate, and a grounding check of the zoom
  boxes against the annotated boxes (SLAKE's organs and findings; coverage, IoU, hit rate; also for
  the CCA consensus region). Other data sources of the validation set get the breakdown and the
  grounding rows, outside the table.
  results.json holds the unrounded numbers; samples.jsonl one line per sample (pred, gt, acc, boxes).

checkpoints:
  actor_rollout_ref.model.path takes a Hugging Face model folder. Export a veRL FSDP checkpoint first:
    python -m verl.model_merger merge --backend fsdp \\
        --local_dir checkpoints/<project>/<experiment>/global_step_64/actor --target_dir ckpt/hf
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medvr_verl.eval",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="report")
    report = commands.add_parser(
        "report",
        help="the paper's table and the grounding check of a validation dump",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "--dump", required=True, help="the run's trainer.validation_data_dir (or one <step>.jsonl file in it)"
    )
    report.add_argument("--out", required=True, help="output folder for results.md, results.json, samples.jsonl")
    report.add_argument("--step", type=int, default=None, help="the validation of this step (default: the last one)")
    report.add_argument("--model", default=None, help="the model's name in the table (default: the dump folder's)")
    report.add_argument("--no-responses", action="store_true", help="leave the decoded responses out of samples.jsonl")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from medvr_verl.eval.dump import DumpError, report_from_dump

    try:
        result = report_from_dump(
            args.dump, args.out, step=args.step, model=args.model, save_responses=not args.no_responses
        )
    except (DumpError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.markdown, end="")
    for path in result.paths.values():
        print(f"wrote {path}", file=sys.stderr)
    return 0
