"""Data types shared by the readers and the parquet writer: :class:`Record`, :class:`ImageRef`,
:class:`ConversionReport`, the skip reasons and the split names.

Pure Python: no veRL, no torch, no pyarrow.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OPTION_LETTERS",
    "QUESTION_TYPES",
    "SKIP_AMBIGUOUS_ANSWER",
    "SKIP_ANSWER_NOT_IN_OPTIONS",
    "SKIP_DUPLICATE",
    "SKIP_EMPTY_IMAGE",
    "SKIP_IMAGE_TOO_LARGE",
    "SKIP_MISSING_IMAGE",
    "SKIP_NON_ENGLISH",
    "SKIP_NO_IMAGE",
    "SKIP_NOT_MULTIPLE_CHOICE",
    "SKIP_TOO_MANY_OPTIONS",
    "SKIP_TRAIN_TEST_OVERLAP",
    "SKIP_UNKNOWN_ANSWER_LABEL",
    "SKIP_UNREADABLE_IMAGE",
    "ConversionReport",
    "ImageRef",
    "Record",
    "malformed",
    "split_role",
]

#: Option letters a row can carry. Every row's ``extra_info.options`` is a struct with exactly these
#: fields (``None`` for the letters a question does not use) so that parquet files of different
#: datasets share one schema and can be concatenated by veRL. MedXpertQA-MM, the widest, has A-E.
OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")

#: The question types written to ``extra_info.question_type`` (those of :mod:`medvr_verl.scoring`).
QUESTION_TYPES = ("multiple_choice", "closed", "open")

# Skip reasons (the keys of ConversionReport.skip_reasons). Malformed records use malformed(field).
SKIP_MISSING_IMAGE = "missing image file"
SKIP_UNREADABLE_IMAGE = "unreadable image"
SKIP_IMAGE_TOO_LARGE = "image too large (decompression-bomb guard)"
SKIP_NO_IMAGE = "no image"
SKIP_EMPTY_IMAGE = "empty image (zero width or height)"
SKIP_NON_ENGLISH = "non-English question"
SKIP_UNKNOWN_ANSWER_LABEL = "unknown answer label"
SKIP_ANSWER_NOT_IN_OPTIONS = "answer matches no option"
SKIP_AMBIGUOUS_ANSWER = "answer matches several options"
SKIP_TOO_MANY_OPTIONS = f"more than {len(OPTION_LETTERS)} options"
SKIP_DUPLICATE = "duplicate (image, question, answer)"
SKIP_TRAIN_TEST_OVERLAP = "train record also in the test split"
SKIP_NOT_MULTIPLE_CHOICE = "not multiple choice (the MedVLM-R1 template asks for a letter)"


def malformed(field_name: str) -> str:
    """Skip reason of a record whose ``field_name`` is missing, empty or of the wrong type."""
    return f"malformed record (field {field_name!r})"


_SPLIT_ROLES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "dev": "dev",
    "test": "test",
    "eval": "test",
}


def split_role(split: str) -> str:
    """The coarse role written to ``extra_info.split``: ``train``, ``validation``, ``dev`` or ``test``.

    The release's own split name (``test_clean``, ``validate``, ``train_2``) goes to
    ``extra_info.source_split``; ``extra_info.split`` uses names that veRL-side code recognizes
    (the ``medvr_cca`` reward manager picks its validation group size from it). A name starting with
    ``train``/``test``/``val``/``dev`` maps to that role; anything else is kept lowercased.
    """
    name = str(split).strip().lower()
    if name in _SPLIT_ROLES:
        return _SPLIT_ROLES[name]
    for prefix, role in (("train", "train"), ("test", "test"), ("val", "validation"), ("dev", "dev")):
        if name.startswith(prefix):
            return role
    return name


@dataclass(frozen=True)
class ImageRef:
    """One image of a record: a file on disk (``path``), encoded bytes (``data``, e.g. from a Hugging
    Face ``datasets.Image`` column), or an already decoded ``PIL.Image`` (``pil``). ``name`` is the
    provenance written to ``extra_info.image_files`` (the path relative to the release root, or the
    file name stored with the bytes)."""

    name: str
    path: str | None = None
    data: bytes | None = None
    pil: Any = None

    @classmethod
    def file(cls, path: str | os.PathLike, name: str | None = None) -> ImageRef:
        path = os.path.abspath(os.fspath(path))
        return cls(name=name if name is not None else os.path.basename(path), path=path)


@dataclass
class Record:
    """One question of a release, before images are loaded and the prompt is built.

    ``answer`` is the ground truth written to ``reward_model.ground_truth``: the option letter for
    multiple choice, else the answer text. ``answer_text`` is the answer in words (the option text
    for multiple choice). ``options_in_question``: the question already lists the options
    (MedXpertQA), so the prompt does not repeat them. ``gt_boxes`` are ``[x1, y1, x2, y2]`` in pixels
    of ``images[0]`` at its original resolution; ``gt_box_labels`` name them as the release does
    (SLAKE's ``detection.json``: organs and findings alike, e.g. "Liver" and "Pneumonia").
    ``mask_path`` is a segmentation mask whose pixel values only mean something with its legend, so a
    reader sets it only together with the legend (SLAKE: ``meta["mask_legend_file"]`` and
    ``meta["mask_legend"]``). ``meta`` holds the release's other per-question labels and how the
    reader decided (``question_type_rule``, ``csv_version``), written as a JSON string to
    ``extra_info.meta``.
    """

    dataset: str
    split: str
    source_id: str
    question: str
    answer: str
    question_type: str
    images: list[ImageRef]
    options: dict[str, str] | None = None
    answer_text: str = ""
    answer_type: str | None = None
    modality: str | None = None
    options_in_question: bool = False
    gt_boxes: list[list[float]] = field(default_factory=list)
    gt_box_labels: list[str] = field(default_factory=list)
    mask_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.question_type not in QUESTION_TYPES:
            raise ValueError(f"question_type must be one of {QUESTION_TYPES}, got {self.question_type!r}")
        if self.options is not None:
            unknown = [k for k in self.options if k not in OPTION_LETTERS]
            if unknown:
                raise ValueError(f"option letters must be among {OPTION_LETTERS}, got {unknown}")
        if len(self.gt_boxes) != len(self.gt_box_labels):
            raise ValueError("gt_boxes and gt_box_labels must have the same length")
        if not self.answer_text:
            self.answer_text = (
                self.options[self.answer] if self.options and self.answer in self.options else self.answer
            )


@dataclass
class ConversionReport:
    """What a conversion (or a bare reader run) did: rows written, records skipped and why.

    ``skip_reasons`` counts skipped records per reason; ``warnings`` counts non-fatal oddities (a
    corrected answer label, a dropped box, an image stored by path that veRL will read unconverted);
    ``examples`` keeps the first few source ids per reason for debugging.
    """

    dataset: str = ""
    split: str = ""
    out_path: str | None = None
    written: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    max_examples: int = 3

    @property
    def skipped(self) -> int:
        return sum(self.skip_reasons.values())

    def skip(self, reason: str, source_id: object = None) -> None:
        self.skip_reasons[reason] += 1
        self._example(reason, source_id)

    def warn(self, reason: str, source_id: object = None) -> None:
        self.warnings[reason] += 1
        self._example(reason, source_id)

    def _example(self, reason: str, source_id: object) -> None:
        if source_id is None:
            return
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < self.max_examples:
            bucket.append(str(source_id))

    def summary(self) -> str:
        where = f" -> {self.out_path}" if self.out_path else ""
        lines = [
            f"{self.dataset or '?'} [{self.split or '?'}]{where}: {self.written} rows written, "
            f"{self.skipped} records skipped ({self.seconds:.1f} s)"
        ]
        for title, counter in (("skipped", self.skip_reasons), ("warnings", self.warnings)):
            for reason, count in counter.most_common():
                examples = self.examples.get(reason)
                tail = f"  e.g. {', '.join(examples)}" if examples else ""
                lines.append(f"  {title}: {reason}: {count}{tail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
