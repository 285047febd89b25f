"""Write :class:`Record` streams to veRL parquet: :func:`convert`, :func:`row_schema`, :func:`build_row`.

Row format (one row per question; read by veRL's ``RLHFDataset``)::

    data_source   string        "vqa_rad" | "slake" | "path_vqa" | "pmc_vqa" | "omnimedvqa" | "medxpertqa_mm"
                                | "huatuo_eval", or the name given (``data_source=``)
    prompt        list<struct<role: string, content: string>>
                  [system (SYSTEM_PROMPT / TEXT_SYSTEM_PROMPT / yours), user ("<image>\\n"*n + question
                  + options + instruction)]; prompt_style="medvlm_r1": [user ("<image>"*n +
                  MEDVLM_R1_QUESTION_TEMPLATE)]
    images        list<struct<bytes: binary>>   (embed_images=True: original encoded file bytes)
                  list<string>                  (embed_images=False: absolute file paths)
    reward_model  struct<style: string ("rule"), ground_truth: string (option letter for MC)>
    extra_info    struct<
                    split: string            train | validation | dev | test (role, see split_role)
                    source_split: string     the release's split name (test_clean, validate, ...)
                    index: int64             row number in this file (0-based)
                    source_id: string        the release's question id
                    dataset: string          the reader's name (== data_source unless one was given)
                    question: string
                    question_type: string    multiple_choice | closed | open
                    options: struct<A, B, C, D, E: string>  (null for closed/open; unused letters null)
                    answer_text: string      the answer in words (the option text for MC)
                    answer_type: string      the release's own CLOSED/OPEN label, or null
                    modality: string         or null
                    image_files: list<string>   provenance, relative to the release root
                    image_sizes: list<list<int64>>  [width, height] of each image at native resolution
                    gt_boxes: list<list<float64>>   [x1, y1, x2, y2] in pixels of image 0 (SLAKE), else []
                    gt_box_labels: list<string>     label of each box (SLAKE: organ or finding)
                    mask_path: string        absolute path of SLAKE's mask.png, or null
                    meta: string             JSON object of the release's other labels
                  >
    agent_name    string        "medvr_agent" (column absent when agent_name is None)

The schema is the same for every dataset (options always a struct of the same letters, missing
fields null or empty lists), so files of different datasets concatenate in veRL.

Images are kept at native resolution. An image whose file is PNG or JPEG in 8-bit ``L``/``RGB`` is
stored byte for byte; anything else (16-bit, palette, alpha, CMYK, TIFF, DICOM, ...) is converted
with :func:`medvr_verl.tools.image_io.load_medical_image` (the zoom tool's rules) and stored as PNG.
Every image is decoded once to check it; a decompression bomb (more pixels than
``max_image_pixels``) is skipped, not decoded.

Writes are atomic: rows go to a temporary file in the output folder, renamed over ``out_path`` only
when everything succeeded; on any error the temporary file is removed and ``out_path`` is untouched.

Size (over 500 lines): the row schema, row building and the conversion loop (progress, report,
atomic write) of one output format.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from medvr_verl import io_utils
from medvr_verl.data.prompts import PROMPT_STYLES, build_messages, default_system_prompt
from medvr_verl.data.readers import READERS
from medvr_verl.data.records import (
    OPTION_LETTERS,
    SKIP_EMPTY_IMAGE,
    SKIP_IMAGE_TOO_LARGE,
    SKIP_MISSING_IMAGE,
    SKIP_NO_IMAGE,
    SKIP_NOT_MULTIPLE_CHOICE,
    SKIP_UNREADABLE_IMAGE,
    ConversionReport,
    ImageRef,
    Record,
    split_role,
)
from medvr_verl.data.subset import select_records
from medvr_verl.tools.image_io import (
    USE_PIL_LIMIT,
    EmptyImageError,
    ImageTooLargeError,
    load_medical_image,
    resolve_pixel_limit,
)

__all__ = [
    "AUTO",
    "DATASET_ALIASES",
    "DEFAULT_AGENT_NAME",
    "build_row",
    "convert",
    "resolve_dataset",
    "row_schema",
    "write_records",
]

DEFAULT_AGENT_NAME = "medvr_agent"


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


#: Default of ``agent_name``: ``"medvr_agent"`` with the tool prompt, no ``agent_name`` column (veRL's
#: ``default_agent_loop``) for the text baseline.
AUTO: Any = _Auto()

DATASET_ALIASES = {
    "vqa_rad": "vqa_rad",
    "vqarad": "vqa_rad",
    "rad": "vqa_rad",
    "slake": "slake",
    "path_vqa": "path_vqa",
    "pathvqa": "path_vqa",
    "pmc_vqa": "pmc_vqa",
    "pmcvqa": "pmc_vqa",
    "pmc": "pmc_vqa",
    "omnimedvqa": "omnimedvqa",
    "omni_med_vqa": "omnimedvqa",
    "omvqa": "omnimedvqa",
    "medxpertqa_mm": "medxpertqa_mm",
    "medxpertqa": "medxpertqa_mm",
    "medxqa": "medxpertqa_mm",
    "huatuo_eval": "huatuo_eval",
    "huatuogpt_vision_eval": "huatuo_eval",
    "medical_multimodal_evaluation_data": "huatuo_eval",
}


def resolve_dataset(name: str) -> str:
    """Canonical dataset name (``"VQA-RAD"`` -> ``"vqa_rad"``); ValueError for an unknown one."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in DATASET_ALIASES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(READERS)}")
    return DATASET_ALIASES[key]


# --------------------------------------------------------------------------------------------------
# Schema and rows
# --------------------------------------------------------------------------------------------------


def row_schema(*, embed_images: bool = True, with_agent_name: bool = True):
    """The pyarrow schema of the rows (see the module docstring)."""
    import pyarrow as pa

    string = pa.string()
    fields = [
        ("data_source", string),
        ("prompt", pa.list_(pa.struct([("role", string), ("content", string)]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary())]) if embed_images else string)),
        ("reward_model", pa.struct([("style", string), ("ground_truth", string)])),
        (
            "extra_info",
            pa.struct(
                [
                    ("split", string),
                    ("source_split", string),
                    ("index", pa.int64()),
                    ("source_id", string),
                    ("dataset", string),
                    ("question", string),
                    ("question_type", string),
                    ("options", pa.struct([(letter, string) for letter in OPTION_LETTERS])),
                    ("answer_text", string),
                    ("answer_type", string),
                    ("modality", string),
                    ("image_files", pa.list_(string)),
                    ("image_sizes", pa.list_(pa.list_(pa.int64()))),
                    ("gt_boxes", pa.list_(pa.list_(pa.float64()))),
                    ("gt_box_labels", pa.list_(string)),
                    ("mask_path", string),
                    ("meta", string),
                ]
            ),
        ),
    ]
    if with_agent_name:
        fields.append(("agent_name", string))
    return pa.schema(fields)


def _clamp_boxes(
    record: Record, size: tuple[int, int] | None, report: ConversionReport
) -> tuple[list[list[float]], list[str]]:
    """Boxes clipped to image 0 (``[0, w] x [0, h]``); boxes left empty are dropped (a warning)."""
    if not record.gt_boxes or size is None:
        return [list(map(float, b)) for b in record.gt_boxes], list(record.gt_box_labels)
    w, h = size
    boxes, labels = [], []
    for box, label in zip(record.gt_boxes, record.gt_box_labels):
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
        y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
        if x2 <= x1 or y2 <= y1:
            report.warn("box outside the image dropped", record.source_id)
            continue
        boxes.append([x1, y1, x2, y2])
        labels.append(label)
    return boxes, labels


def build_row(
    record: Record,
    images: list[Any],
    sizes: list[tuple[int, int]],
    index: int,
    *,
    system_prompt: str | None,
    agent_name: str | None,
    report: ConversionReport | None = None,
    prompt_style: str = "medvr",
    data_source: str | None = None,
) -> dict:
    """The parquet row of ``record``; ``images`` are the payloads (``{"bytes": ...}`` or paths)."""
    report = report if report is not None else ConversionReport()
    boxes, labels = _clamp_boxes(record, sizes[0] if sizes else None, report)
    options = None
    if record.options:
        options = {letter: record.options.get(letter) for letter in OPTION_LETTERS}
    row = {
        "data_source": data_source or record.dataset,
        "prompt": build_messages(record, system_prompt, prompt_style),
        "images": images,
        "reward_model": {"style": "rule", "ground_truth": record.answer},
        "extra_info": {
            "split": split_role(record.split),
            "source_split": record.split,
            "index": index,
            "source_id": record.source_id,
            "dataset": record.dataset,
            "question": record.question,
            "question_type": record.question_type,
            "options": options,
            "answer_text": record.answer_text,
            "answer_type": record.answer_type,
            "modality": record.modality,
            "image_files": [img.name for img in record.images],
            "image_sizes": [[int(w), int(h)] for w, h in sizes],
            "gt_boxes": boxes,
            "gt_box_labels": labels,
            "mask_path": record.mask_path,
            "meta": json.dumps(record.meta, ensure_ascii=False, sort_keys=True, default=str),
        },
    }
    if agent_name is not None:
        row["agent_name"] = agent_name
    return row


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


class _ImageSkip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_KEEP_FORMATS = ("PNG", "JPEG")
_KEEP_MODES = ("L", "RGB")


def _encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _decode(source: Any, max_image_pixels: Any):
    try:
        return load_medical_image(source, max_image_pixels=max_image_pixels)
    except ImageTooLargeError as exc:
        raise _ImageSkip(SKIP_IMAGE_TOO_LARGE) from exc
    except EmptyImageError as exc:
        raise _ImageSkip(SKIP_EMPTY_IMAGE) from exc
    except FileNotFoundError as exc:
        raise _ImageSkip(SKIP_MISSING_IMAGE) from exc
    except Exception as exc:  # Pillow raises many types for corrupt/truncated/unknown files
        raise _ImageSkip(SKIP_UNREADABLE_IMAGE) from exc


class _ImageLoader:
    """Turns :class:`ImageRef` into a parquet payload + native size; caches recent files (questions of
    one image usually come together)."""

    def __init__(self, *, embed: bool, max_image_pixels: Any, report: ConversionReport, cache_size: int = 16):
        self.embed = embed
        self.max_image_pixels = max_image_pixels
        self.report = report
        self.cache: OrderedDict[str, tuple] = OrderedDict()
        self.cache_size = cache_size

    def load(self, ref: ImageRef, source_id: str) -> tuple[Any, tuple[int, int]]:
        if ref.path is not None:
            hit = self.cache.get(ref.path)
            if hit is None:
                try:
                    hit = ("ok", *self._load_file(ref.path, source_id))
                except _ImageSkip as skip:
                    hit = ("skip", skip.reason)
                self.cache[ref.path] = hit
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end(ref.path)
            if hit[0] == "skip":
                raise _ImageSkip(hit[1])
            return hit[1], hit[2]
        if not self.embed:
            raise ValueError(
                f"embed_images=False needs image files on disk, but this source holds image bytes "
                f"({ref.name!r}); convert with embed_images=True"
            )
        if ref.data is not None:
            return self._payload_from_bytes(ref.data)
        if ref.pil is not None:
            img = _decode(ref.pil, self.max_image_pixels)
            return {"bytes": _encode_png(img)}, img.size
        raise _ImageSkip(SKIP_NO_IMAGE)

    def _payload_from_bytes(self, data: bytes) -> tuple[dict, tuple[int, int]]:
        img = _decode(data, self.max_image_pixels)
        if getattr(img, "format", None) in _KEEP_FORMATS and img.mode in _KEEP_MODES:
            return {"bytes": bytes(data)}, img.size
        return {"bytes": _encode_png(img)}, img.size

    def _load_file(self, path: str, source_id: str) -> tuple[Any, tuple[int, int]]:
        if not os.path.isfile(path):
            raise _ImageSkip(SKIP_MISSING_IMAGE)
        if self.embed:
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise _ImageSkip(SKIP_UNREADABLE_IMAGE) from exc
            return self._payload_from_bytes(data)
        img = _decode(path, self.max_image_pixels)
        if not (getattr(img, "format", None) in _KEEP_FORMATS and img.mode in _KEEP_MODES):
            self.report.warn("image stored by path needs conversion (veRL reads it unconverted)", source_id)
        return path, img.size


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def check_output_path(out_path: str | os.PathLike) -> str:
    """The absolute output path, or ValueError with one line saying what is wrong with it.

    Refused: an empty path, an existing folder, a path below a file, a folder that cannot be
    created or written. Nothing is created here.
    """
    raw = os.fspath(out_path) if out_path is not None else ""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("the output path is empty; give a .parquet file path")
    path = os.path.abspath(raw)
    if os.path.isdir(path) or raw.endswith(("/", os.sep)):
        example = os.path.join(raw, "out.parquet")
        raise ValueError(f"the output {raw!r} is a folder; give a file path such as {example!r}")
    parent = os.path.dirname(path)
    probe = parent
    while not os.path.exists(probe):
        up = os.path.dirname(probe)
        if up == probe:
            break
        probe = up
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ValueError(f"cannot write {raw!r}: {probe!r} is a file, not a folder; choose another output path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {raw!r}: no permission to write in {probe!r}; choose a writable folder")
    return path


def _missing_folders(folder: str) -> list[str]:
    """The folders ``os.makedirs(folder)`` would create, deepest first."""
    missing = []
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _remove_empty(folders: list[str]) -> None:
    """Remove the folders this run created (deepest first) while they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


def write_records(
    records: Iterable[Record],
    out_path: str | os.PathLike,
    *,
    report: ConversionReport | None = None,
    limit: int | None = None,
    tool_prompt: bool = True,
    system_prompt: str | None = None,
    embed_images: bool = True,
    agent_name: Any = AUTO,
    max_image_pixels: Any = USE_PIL_LIMIT,
    allow_empty: bool = False,
    progress: bool = True,
    prompt_style: str = "medvr",
    data_source: str | None = None,
    row_group_size: int = 64,
    row_group_bytes: int = 64 << 20,
) -> ConversionReport:
    """Write ``records`` to ``out_path`` atomically; see :func:`convert` for the arguments."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    report = report if report is not None else ConversionReport()
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    medvlm_r1 = prompt_style == "medvlm_r1"
    if medvlm_r1 and tool_prompt:
        raise ValueError("prompt_style 'medvlm_r1' is the text baseline's template; pass tool_prompt=False")
    if agent_name is AUTO:
        agent_name = DEFAULT_AGENT_NAME if tool_prompt else None
    if system_prompt is None:
        # MedVLM-R1's trainer sends no system turn (Qwen2-VL's chat template adds its default one)
        system_prompt = "" if medvlm_r1 else default_system_prompt(tool_prompt)
    resolve_pixel_limit(max_image_pixels)  # ValueError for a bad limit, before anything is read
    out_path = check_output_path(out_path)
    report.out_path = out_path
    out_dir = os.path.dirname(out_path)
    schema = row_schema(embed_images=embed_images, with_agent_name=agent_name is not None)
    loader = _ImageLoader(embed=embed_images, max_image_pixels=max_image_pixels, report=report)
    start = time.monotonic()

    created = _missing_folders(out_dir)  # removed again when the conversion fails: nothing is left
    try:
        os.makedirs(out_dir, exist_ok=True)
        target = io_utils.AtomicFile(out_path)  # the parquet gets the user's umask, not mkstemp's 0600
    except OSError as exc:
        _remove_empty(created)
        raise ValueError(f"cannot write {out_path!r}: {exc.strerror or exc}; choose a writable output path") from None
    tmp_path = str(target.tmp)
    writer = None
    try:
        writer = pq.ParquetWriter(tmp_path, schema)
        buffer: list[dict] = []
        buffered_bytes = 0

        def flush() -> None:
            nonlocal buffered_bytes
            if buffer:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                buffer.clear()
                buffered_bytes = 0

        iterator: Iterator[Record] = iter(records)
        desc = f"{report.dataset or 'convert'} [{report.split}]"
        for record in io_utils.progress(iterator, enabled=progress, desc=desc, unit=" q"):
            if limit is not None and report.written >= limit:
                break
            if not record.images:
                report.skip(SKIP_NO_IMAGE, record.source_id)
                continue
            if medvlm_r1 and record.question_type != "multiple_choice":
                report.skip(SKIP_NOT_MULTIPLE_CHOICE, record.source_id)
                continue
            try:
                loaded = [loader.load(ref, record.source_id) for ref in record.images]
            except _ImageSkip as skip:
                report.skip(skip.reason, record.source_id)
                continue
            payloads = [p for p, _ in loaded]
            sizes = [s for _, s in loaded]
            row = build_row(
                record,
                payloads,
                sizes,
                report.written,
                system_prompt=system_prompt,
                agent_name=agent_name,
                report=report,
                prompt_style=prompt_style,
                data_source=data_source,
            )
            buffer.append(row)
            buffered_bytes += sum(len(p["bytes"]) if isinstance(p, dict) else len(p) for p in payloads)
            report.written += 1
            if len(buffer) >= row_group_size or buffered_bytes >= row_group_bytes:
                flush()
        flush()
        writer.close()
        writer = None
        if report.written == 0 and not allow_empty:
            raise ValueError(f"no rows to write; nothing was written to {out_path}.\n{report.summary()}")
        target.commit()
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        target.discard()
        _remove_empty(created)
        raise
    finally:
        report.seconds = time.monotonic() - start
    return report


def convert(
    dataset: str,
    source: Any,
    out_path: str | os.PathLike,
    *,
    split: str,
    limit: int | None = None,
    tool_prompt: bool = True,
    embed_images: bool = True,
    agent_name: Any = AUTO,
    system_prompt: str | None = None,
    max_image_pixels: Any = USE_PIL_LIMIT,
    allow_empty: bool = False,
    progress: bool = True,
    verbose: bool = True,
    prompt_style: str = "medvr",
    data_source: str | None = None,
    modality: str | None = None,
    first: int | None = None,
    shuffle_seed: int | None = None,
    **reader_kwargs: Any,
) -> ConversionReport:
    """Convert one split of a public medical VQA release to a veRL parquet file.

    Args:
        dataset: ``vqa_rad``, ``slake``, ``path_vqa``, ``pmc_vqa``, ``omnimedvqa`` or
            ``medxpertqa_mm`` (aliases like ``VQA-RAD``, ``PathVQA``, ``MedXpertQA`` work).
        source: the release folder (layouts: :data:`medvr_verl.data.readers.LAYOUTS`), or for
            VQA-RAD/PathVQA a ``datasets.Dataset``/``DatasetDict``.
        out_path: the parquet file to write (atomically; its folder is created).
        split: which split to read (see each ``read_<dataset>``).
        limit: stop after this many rows written.
        tool_prompt: True: the MedVR system prompt with the zoom tool; False: the text-reasoning
            prompt of the MedVLM-R1 baseline.
        embed_images: True: encoded image bytes in the parquet; False: absolute file paths.
        agent_name: the ``agent_name`` column; default ``"medvr_agent"`` with the tool prompt and no
            column without it; None: no column.
        system_prompt: replaces the default system prompt ("" for none).
        max_image_pixels: decompression-bomb guard (default Pillow's ``Image.MAX_IMAGE_PIXELS``).
        allow_empty: write a file with no rows instead of raising when nothing is left.
        progress: tqdm progress bar on stderr.
        verbose: print the report's summary at the end.
        prompt_style: ``medvr`` (our prompts) or ``medvlm_r1`` (MedVLM-R1's question template, no
            system turn; needs ``tool_prompt=False``; non-multiple-choice records are skipped).
        data_source: the ``data_source`` column (default the dataset's name). veRL's validation
            reports accuracy per ``data_source``, so e.g. ``medvlm_r1_ct`` keeps MedVLM-R1's MRI,
            CT and X-ray test sets apart in one run.
        modality, first, shuffle_seed: pick a subset of the reader's records before writing
            (:func:`medvr_verl.data.subset.select_records`; MedVLM-R1's training set is
            :data:`~medvr_verl.data.subset.MEDVLM_R1_SUBSET`). ``first`` counts records chosen,
            ``limit`` rows written.
        **reader_kwargs: passed to the reader (``english_only`` for SLAKE, ``dedupe`` for VQA-RAD,
            ``access`` for OmniMedVQA).

    Returns:
        The :class:`ConversionReport` (rows written, skips by reason, warnings).
    """
    name = resolve_dataset(dataset)
    report = ConversionReport(dataset=name, split=split)
    records = READERS[name](source, split, report=report, **reader_kwargs)
    if modality is not None or first is not None or shuffle_seed is not None:
        records = select_records(records, modality=modality, first=first, shuffle_seed=shuffle_seed, report=report)
    write_records(
        records,
        out_path,
        report=report,
        limit=limit,
        tool_prompt=tool_prompt,
        system_prompt=system_prompt,
        embed_images=embed_images,
        agent_name=agent_name,
        max_image_pixels=max_image_pixels,
        allow_empty=allow_empty,
        progress=progress,
        prompt_style=prompt_style,
        data_source=data_source,
    )
    if verbose:
        print(report.summary(), file=sys.stderr)
    return report
