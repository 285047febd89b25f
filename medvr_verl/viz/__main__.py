"""``python -m medvr_verl.viz``: draw the CCA groups of veRL rollout dumps over their dataset images.

    python -m medvr_verl.viz ROLLOUTS.jsonl [MORE.jsonl | DIR ...] --data train.parquet [--data more.parquet] \\
        --out viz/ [--step S] [--max-groups N] [--max-side 1024] [--index-by auto|row|extra_info]

Exit status: 0 when something was drawn (or nothing needed drawing), 1 when every group that should
have been drawn failed, 2 for a missing or unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medvr_verl.viz.dumps import render_rollouts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medvr_verl.viz",
        description="Draw CCA groups (zoom boxes, consensus, rewards) from veRL rollout dumps "
        "(trainer.rollout_data_dir / trainer.validation_data_dir JSONL) over the dataset images.",
    )
    parser.add_argument("rollouts", nargs="+", help="rollout JSONL file(s) or folder(s) of {step}.jsonl")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="veRL dataset parquet file; repeat for several files, in the order the trainer concatenates them",
    )
    parser.add_argument("--out", required=True, help="output folder for the PNG files")
    parser.add_argument("--step", type=int, default=None, help="only records of this training step")
    parser.add_argument("--max-groups", type=int, default=None, help="draw at most this many groups (with boxes)")
    parser.add_argument("--max-side", type=int, default=1024, help="longer side of the drawn image (default 1024)")
    parser.add_argument(
        "--index-by",
        choices=("auto", "row", "extra_info"),
        default="auto",
        help="how sample_index finds the dataset row: extra_info.index, the row position, or auto (default)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.max_side < 16:
        parser.error("--max-side must be at least 16")
    try:
        summary = render_rollouts(
            args.rollouts,
            args.data,
            args.out,
            step=args.step,
            max_groups=args.max_groups,
            max_side=args.max_side,
            index_by=args.index_by,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    if summary.written:
        print(f"wrote {len(summary.written)} PNG file(s) to {args.out}")
    if summary.skipped:
        print(f"warning: {summary.skipped} skipped (see the counts above)", file=sys.stderr)
    failed = summary.skipped_missing_row + summary.skipped_image_error
    return 1 if failed and not summary.written else 0


if __name__ == "__main__":
    sys.exit(main())
