"""``python -m medvr_verl.data <dataset> <source> <out.parquet> --split test``: the converter CLI.

Every user error (bad option, unreadable source file, unusable output path) is one line on stderr,
``error: <what> ... <what to do>``, with exit status 2 and nothing written; no traceback unless
``--debug``. An unexpected internal error is one line too, exit status 1 (``--debug`` for the
traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from medvr_verl.data.prompts import PROMPT_STYLES
from medvr_verl.data.readers import LAYOUTS, QUESTION_TYPE_RULES, READERS, LayoutError, SourceFileError
from medvr_verl.data.subset import MEDVLM_R1_SUBSET
from medvr_verl.data.writer import AUTO, check_output_path, convert, resolve_dataset

__all__ = ["build_parser", "main"]

_EPILOG_HEAD = """\
Output: one parquet row per question for veRL's RLHFDataset (columns data_source, prompt, images,
reward_model, extra_info, agent_name); see medvr_verl/data/writer.py for the exact schema.
Writes are atomic: the output file appears only when the conversion succeeded.

Source layouts (the public releases as downloaded and unpacked):
"""


class UsageError(ValueError):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is in ``--help``)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of pixels, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of pixels, got {text!r}")
    return value


def _read_system_prompt(path: str) -> str:
    """The text of ``--system-prompt-file``; UsageError naming the file when it cannot be read."""
    if not path:
        raise UsageError("--system-prompt-file is empty; give the path of a UTF-8 text file")
    if os.path.isdir(path):
        raise UsageError(f"--system-prompt-file {path!r} is a folder; give the path of a UTF-8 text file")
    if not os.path.exists(path):
        raise UsageError(f"--system-prompt-file {path!r} does not exist; give the path of a UTF-8 text file")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--system-prompt-file {path!r} is not UTF-8 text (offset {exc.start}); re-save it as UTF-8"
        ) from None
    except OSError as exc:
        raise UsageError(f"--system-prompt-file {path!r} cannot be read: {exc.strerror or exc}") from None


def build_parser() -> argparse.ArgumentParser:
    # File names with spaces ("VQA_RAD Image Folder") must not be broken across lines.
    keep = ("VQA_RAD Dataset Public.json", "VQA_RAD Image Folder")

    def fill(text: str) -> str:
        for name in keep:
            text = text.replace(name, name.replace(" ", "\u00a0"))
        text = textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="      ")
        return text.replace("\u00a0", " ")

    layouts = "\n".join(fill(f"{name}: {text}") for name, text in LAYOUTS.items())
    parser = _Parser(
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
    parser.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default=None,
        help=(
            "medvr (default): our prompts; medvlm_r1: MedVLM-R1's question template (image, question, "
            "'A) option' lines, its <think>/<answer> instructions) and no system turn; implies "
            "--no-tool-prompt; keeps multiple-choice questions only"
        ),
    )
    parser.add_argument(
        "--modality",
        default=None,
        help="keep only questions of this imaging modality (MRI, CT, X-ray match each release's spelling; "
        "other values match the release's label exactly)",
    )
    parser.add_argument(
        "--shuffle-seed",
        type=int,
        default=None,
        help="shuffle the selected questions with this seed (numpy default_rng, as datasets.shuffle)",
    )
    parser.add_argument(
        "--data-source",
        default=None,
        help="value of the data_source column (default: the dataset's name); veRL's validation reports "
        "accuracy per data_source, e.g. medvlm_r1_mri / medvlm_r1_ct / medvlm_r1_xray",
    )
    parser.add_argument(
        "--medvlm-r1-subset",
        action="store_true",
        help=(
            "MedVLM-R1's training set: the first 600 MRI questions ('MR (Mag-netic Resonance Imaging)') in "
            "the source's order, shuffled with seed 42, in its prompt style. Exact from huatuo_eval (the "
            "bundle it used); from omnimedvqa the same modality but another order, so other questions. "
            "--limit N sets the size instead (500: its released script)"
        ),
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
        "--question-type-rule",
        choices=QUESTION_TYPE_RULES,
        default=None,
        help=(
            "VQA-RAD: how closed/open is decided (default answer_yes_no: closed iff the answer is yes/no, the "
            "same for the OSF json and the Hugging Face copy; release_label and release_label_or_yes_no read "
            "the OSF answer_type and are refused for the copy). Written to extra_info.meta"
        ),
    )
    parser.add_argument(
        "--pmc-answer-from-text",
        action="store_true",
        help=(
            "PMC-VQA: let the Answer text override the official Answer_label (v1) when it names exactly one "
            "other choice (default: the official label is the ground truth; disagreements are only counted)"
        ),
    )
    parser.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=None,
        help=(
            "skip images with more pixels than this (decompression-bomb guard; default: Pillow's limit, "
            "89,478,485, as the zoom tool's max_image_pixels). Not the model's pixel budget: images are "
            "stored at native resolution for the zoom tool, and the recipe's data.mm_processor_kwargs "
            "(min_pixels, max_pixels) sets the size the model sees them at"
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return _main(argv)
    except UsageError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (LayoutError, SourceFileError, ValueError, TypeError) as exc:
        if debug:
            raise
        # One line: LayoutError's second line (the expected layout) joins the first.
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        print(f"error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # not a user error: still one line, the traceback behind --debug
        if debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    kwargs = {}
    if args.all_languages:
        kwargs["english_only"] = False
    dataset = resolve_dataset(args.dataset) if args.question_type_rule or args.pmc_answer_from_text else None
    if args.question_type_rule is not None:
        if dataset != "vqa_rad":
            raise UsageError(f"--question-type-rule is for vqa_rad only, not {dataset}")
        kwargs["question_type_rule"] = args.question_type_rule
    if args.pmc_answer_from_text:
        if dataset != "pmc_vqa":
            raise UsageError(f"--pmc-answer-from-text is for pmc_vqa only, not {dataset}")
        kwargs["answer_from_text"] = True
    if args.max_image_pixels is not None:
        kwargs["max_image_pixels"] = args.max_image_pixels
    subset: dict = {}
    prompt_style = args.prompt_style or "medvr"
    limit = args.limit
    if args.medvlm_r1_subset:
        if args.modality is not None or args.shuffle_seed is not None:
            raise UsageError("--medvlm-r1-subset sets --modality and --shuffle-seed itself; give one or the other")
        if args.prompt_style not in (None, "medvlm_r1"):
            raise UsageError(f"--medvlm-r1-subset writes MedVLM-R1's prompt; drop --prompt-style {args.prompt_style}")
        if limit is not None and limit < 0:
            raise UsageError(f"--limit must be >= 0, got {limit}")
        subset = dict(MEDVLM_R1_SUBSET)
        if limit is not None:
            subset["first"], limit = limit, None
        prompt_style = "medvlm_r1"
    else:
        subset = {"modality": args.modality, "shuffle_seed": args.shuffle_seed}
    if prompt_style == "medvlm_r1" and args.system_prompt_file is not None:
        raise UsageError("--prompt-style medvlm_r1 has no system turn; drop --system-prompt-file")
    tool_prompt = not args.no_tool_prompt and prompt_style != "medvlm_r1"
    agent_name = None if args.no_agent_name else (args.agent_name or AUTO)
    system_prompt = None
    if args.system_prompt_file is not None:
        system_prompt = _read_system_prompt(args.system_prompt_file)
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be >= 0, got {limit}")
    try:
        check_output_path(args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = convert(
        args.dataset,
        args.source,
        args.out,
        split=args.split,
        limit=limit,
        tool_prompt=tool_prompt,
        prompt_style=prompt_style,
        data_source=args.data_source,
        embed_images=not args.no_embed_images,
        agent_name=agent_name,
        system_prompt=system_prompt,
        progress=not args.no_progress,
        verbose=False,
        **subset,
        **kwargs,
    )
    print(report.summary())
    return 0
