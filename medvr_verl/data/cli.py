"""``python -m medvr_verl.data <dataset> <source> <out.parquet> --split test``: the converter CLI."""

from __future__ import annotations

import argparse
import sys
import textwrap

from medvr_verl.data.readers import LAYOUTS, READERS, LayoutError
from medvr_verl.data.writer import AUTO, convert

__all__ = ["build_parser", "main"]

_EPILOG_HEAD = """\
Output: one parquet row per question for veRL's RLHFDataset (columns data_source, prompt, images,
reward_model, extra_info, agent_name); see medvr_verl/data/writer.py for the exact schema.
Writes are atomic: the output file appears only when the conversion succeeded.

Source layouts (the public releases as downloaded and unpacked):
"""


def build_parser() -> argparse.ArgumentParser:
    # File names with spaces ("VQA_RAD Image Folder") must not be broken across lines.
    keep = ("VQA_RAD Dataset Public.json", "VQA_RAD Image Folder")

    def fill(text: str) -> str:
        for name in keep:
            text = text.replace(name, name.replace(" ", "\u00a0"))
        text = textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="      ")
        return text.replace("\u00a0", " ")

    layouts = "\n".join(fill(f"{name}: {text}") for name, text in LAYOUTS.items())
    parser = argparse.ArgumentParser(
        prog="python -m medvr_verl.data",
        description="Convert a public medical VQA release to veRL parquet (MedVR zoom-in agent format).",
        epilog=_EPILOG_HEAD + layouts,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help=f"one of {', '.join(READERS)} (aliases like vqa-rad, pathvqa work)")
    parser.add_argument("source", help="the release folder (or a datasets save_to_disk / hub snapshot folder)")
    parser.add_argument("out", help="output parquet file")
    parser.add_argument("--split", required=True, help="split to convert, e.g. train, test, validate, dev, test_clean")
    parser.add_argument("--limit", type=int, default=None, help="stop after N rows written")
    parser.add_argument(
        "--no-tool-prompt",
        action="store_true",
        help="text-reasoning system prompt without the zoom tool (MedVLM-R1 baseline); implies no agent_name column",
    )
    parser.add_argument("--no-embed-images", action="store_true", help="store absolute image paths instead of bytes")
    parser.add_argument(
        "--agent-name",
        default=None,
        help="value of the agent_name column (default medvr_agent, or none with --no-tool-prompt)",
    )
    parser.add_argument("--no-agent-name", action="store_true", help="write no agent_name column")
    parser.add_argument("--system-prompt-file", default=None, help="file whose text replaces the system prompt")
    parser.add_argument("--all-languages", action="store_true", help="SLAKE: keep non-English questions too")
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="skip images with more pixels than this (default: Pillow's decompression-bomb limit)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs = {}
    if args.all_languages:
        kwargs["english_only"] = False
    if args.max_image_pixels is not None:
        kwargs["max_image_pixels"] = args.max_image_pixels
    agent_name = None if args.no_agent_name else (args.agent_name or AUTO)
    system_prompt = None
    if args.system_prompt_file:
        with open(args.system_prompt_file, encoding="utf-8") as fh:
            system_prompt = fh.read().strip()
    try:
        report = convert(
            args.dataset,
            args.source,
            args.out,
            split=args.split,
            limit=args.limit,
            tool_prompt=not args.no_tool_prompt,
            embed_images=not args.no_embed_images,
            agent_name=agent_name,
            system_prompt=system_prompt,
            progress=not args.no_progress,
            verbose=False,
            **kwargs,
        )
    except (LayoutError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
