"""Readers of the public medical VQA releases: one ``read_<dataset>(source, split)`` per release.

Each reader checks the release layout when called (a wrong folder raises :class:`LayoutError`,
naming the missing file and the expected layout) and returns an iterator of :class:`Record`.
Records it cannot use are counted in the ``report`` passed in (:class:`ConversionReport`) and not
yielded; image files are only located here -- opening and checking them is the writer's job
(:mod:`medvr_verl.data.writer`), so a missing or broken image is reported there.

Question types (``extra_info.question_type``, see :mod:`medvr_verl.scoring`):

* ``multiple_choice``: PMC-VQA, OmniMedVQA, MedXpertQA-MM; ground truth = option letter.
* ``closed`` / ``open``: one explicit rule per dataset, the same whichever copy of the release is
  read, and recorded in ``extra_info.meta["question_type_rule"]``:

  - ``answer_yes_no`` (VQA-RAD, PathVQA): closed iff the ground-truth answer is yes/no (after
    :func:`~medvr_verl.scoring.normalize_text`). The only rule the Hugging Face copies
    (``flaviagiammarino/vqa-rad``, ``flaviagiammarino/path-vqa``, no ``answer_type`` column) allow,
    and the one evaluations of those copies use ("closed-ended if the ground-truth answer is yes or
    no"). The VQA-RAD OSF json is read with the same rule, so that its 451-question test set gets
    the same closed/open breakdown as the copy's; the OSF release's own CLOSED/OPEN label stays in
    ``extra_info.answer_type``, and ``read_vqa_rad(..., question_type_rule="release_label")`` (OSF
    only) uses it instead, saying so in the row.
  - ``release_label_or_yes_no`` (SLAKE, read from Slake1.0, which has ``answer_type``): closed when the
    release labels the question CLOSED or the answer is yes/no.

  How each type is scored: :mod:`medvr_verl.scoring`.

Layouts followed (the on-disk form of each public release; see :data:`LAYOUTS`):

* VQA-RAD: the OSF release (Lau et al. 2018, https://osf.io/89kps/): ``VQA_RAD Dataset Public.json``
  + ``VQA_RAD Image Folder/``; the train/test split is the json's ``phrase_type`` (``freeform``/``para``
  vs ``test_freeform``/``test_para``), and -- as in the Hugging Face copy ``flaviagiammarino/vqa-rad``
  -- duplicate (image, question, answer) triplets are dropped and train triplets that also occur in
  test are removed. Or that Hugging Face copy (columns ``image``/``question``/``answer``).
* SLAKE: Slake1.0 (Liu et al. 2021, https://www.med-vqa.com/slake/, also ``BoKelvin/SLAKE`` on the
  hub): ``train.json``/``validate.json``/``test.json`` + ``imgs/xmlab<N>/{source.jpg, detection.json,
  mask.png, mask.txt}``. ``detection.json`` (``[{"<label>": [x, y, w, h]}, ...]``) becomes
  ``gt_boxes`` (``[x1, y1, x2, y2]`` pixels of ``source.jpg``) and ``gt_box_labels``; its labels are
  findings as well as organs ("Left Lung", "Liver", but also "Pneumonia", "Nodule", "Brain Edema"),
  so a box is an annotated region, not necessarily an organ. ``mask.png`` is carried (``mask_path``)
  only with its legend ``mask.txt`` (``meta["mask_legend_file"]``, ``meta["mask_legend"]``).
* PathVQA: the Hugging Face copy ``flaviagiammarino/path-vqa`` (columns ``image``/``question``/
  ``answer``; splits train/validation/test). The original pickle release is not read (unpickling
  runs code from the file).
* PMC-VQA: ``xmcmic/PMC-VQA`` (Zhang et al. 2023). v2 (the csvs current evaluations use):
  ``train_2.csv``/``test_2.csv`` (``Answer`` = the option letter) + ``figures/`` (or
  ``images_2/figures/``). v1: ``train.csv``/``test.csv``/``test_clean.csv`` (ground truth
  ``Answer_label``) + ``images/`` (or ``images/figures/``). The version is the csv's name; each
  reads only its own image folders, since the two image sets share file names.
* OmniMedVQA: ``foreverbeliever/OmniMedVQA`` (Hu et al. 2024): ``QA_information/Open-access/*.json``
  + ``Images/``; ``image_path`` is relative to the release root. The release has no train/test split:
  every record gets the ``split`` label given.
* MedXpertQA-MM: ``TsinghuaC3I/MedXpertQA`` (Zuo et al. 2025): ``MM/test.jsonl``/``MM/dev.jsonl`` +
  ``images/`` (``images.zip`` unpacked at the root).

Hugging Face sources (VQA-RAD, PathVQA): a ``datasets.Dataset``/``DatasetDict`` object, a
``datasets.save_to_disk`` folder, or a hub snapshot folder (``data/<split>-*.parquet``).

Size (over 500 lines): six readers, each short, in one module because they share the layout checks,
the closed/open rules and the report helpers; split a reader out when it grows.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medvr_verl.data.records import (
    OPTION_LETTERS,
    SKIP_AMBIGUOUS_ANSWER,
    SKIP_ANSWER_NOT_IN_OPTIONS,
    SKIP_DUPLICATE,
    SKIP_NO_IMAGE,
    SKIP_NON_ENGLISH,
    SKIP_TOO_MANY_OPTIONS,
    SKIP_TRAIN_TEST_OVERLAP,
    SKIP_UNKNOWN_ANSWER_LABEL,
    ConversionReport,
    ImageRef,
    Record,
    malformed,
)
from medvr_verl.scoring import normalize_text

__all__ = [
    "LAYOUTS",
    "QUESTION_TYPE_RULES",
    "LayoutError",
    "READERS",
    "SourceFileError",
    "read_huatuo_eval",
    "read_medxpertqa_mm",
    "pmc_vqa_version",
    "read_omnimedvqa",
    "read_path_vqa",
    "read_pmc_vqa",
    "read_slake",
    "read_vqa_rad",
]

LAYOUTS: dict[str, str] = {
    "vqa_rad": (
        "VQA-RAD, OSF release: <root>/VQA_RAD Dataset Public.json and <root>/VQA_RAD Image Folder/<image_name>; "
        "splits train, test (from phrase_type). Or the Hugging Face copy flaviagiammarino/vqa-rad: a "
        "save_to_disk folder or a hub snapshot <root>/data/{train,test}-*.parquet (columns image, question, answer)."
    ),
    "slake": (
        "SLAKE (Slake1.0): <root>/{train,validate,test}.json and <root>/imgs/xmlab<N>/source.jpg "
        "(+ detection.json: boxes of organs and findings; mask.png with its legend mask.txt); "
        "split val/validation reads validate.json."
    ),
    "path_vqa": (
        "PathVQA, Hugging Face copy flaviagiammarino/path-vqa: a save_to_disk folder or a hub snapshot "
        "<root>/data/{train,validation,test}-*.parquet (columns image, question, answer)."
    ),
    "pmc_vqa": (
        "PMC-VQA (xmcmic/PMC-VQA), two versions. v2: <root>/{train_2,test_2}.csv (columns index, Figure_path, "
        "Caption, Question, Choice A..D, Answer = the option letter, split) with the images in <root>/figures/ "
        "(or <root>/images_2/figures/). v1: <root>/{train,test,test_clean}.csv (columns Figure_path, Question, "
        "Answer, Choice A..D, Answer_label = the ground truth) with the images in <root>/images/ (or "
        "<root>/images/figures/). Each version reads only its own image folder."
    ),
    "omnimedvqa": (
        "OmniMedVQA: <root>/QA_information/Open-access/*.json (lists of records with question_id, question, "
        "gt_answer, image_path, option_A..option_D, modality_type, dataset) and <root>/Images/...; "
        "no official split: --split only labels the rows."
    ),
    "huatuo_eval": (
        "HuatuoGPT-Vision's evaluation bundle (FreedomIntelligence/Medical_Multimodal_Evaluation_Data, the "
        "data MedVLM-R1 trained and tested on): <root>/medical_multimodel_evaluation_data.json (a list of "
        "records with question, options, answer = an option's text, image = [paths], dataset, subset) and "
        "the image paths relative to <root>; one split: --split only labels the rows. Or a json file of such "
        "records in the bundle's folder (MedVLM-R1's MRI_CT_XRAY_300each_dataset.json test sets)."
    ),
    "medxpertqa_mm": (
        "MedXpertQA (MM subset): <root>/MM/{dev,test}.jsonl (records id, question, options, label, images, ...) "
        "and <root>/images/<file> (images.zip unpacked)."
    ),
}


class LayoutError(FileNotFoundError):
    """The source folder does not hold the expected release layout."""

    def __init__(self, dataset: str, root: object, problem: str):
        self.dataset = dataset
        super().__init__(f"{dataset}: {problem} (source: {root}).\nExpected layout: {LAYOUTS.get(dataset, '?')}")


class SourceFileError(ValueError):
    """A file of the release cannot be read (not UTF-8 text, a corrupt parquet shard, ...).

    The message names the file and says what to do; the converter CLI prints it as one line.
    """

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        super().__init__(f"cannot read {self.path}: {problem}")


def _not_utf8(path: object, exc: UnicodeDecodeError) -> SourceFileError:
    return SourceFileError(
        path, f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); re-save it as UTF-8"
    )


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _text(rec: Mapping, key: str) -> str | None:
    """``rec[key]`` as a stripped non-empty string (numbers are converted), else None."""
    value = rec.get(key) if isinstance(rec, Mapping) else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value != value:  # NaN
            return None
        value = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _is_yes_no(answer: str) -> bool:
    return normalize_text(answer) in ("yes", "no")


#: Closed/open rules (``extra_info.meta["question_type_rule"]``), see the module docstring.
RULE_YES_NO = "answer_yes_no"
RULE_RELEASE_LABEL = "release_label"
RULE_RELEASE_LABEL_OR_YES_NO = "release_label_or_yes_no"
QUESTION_TYPE_RULES = (RULE_YES_NO, RULE_RELEASE_LABEL, RULE_RELEASE_LABEL_OR_YES_NO)


def _short_type(answer: str, answer_type: str | None, rule: str = RULE_RELEASE_LABEL_OR_YES_NO) -> str:
    """``closed`` or ``open`` for a closed/open dataset under ``rule`` (one of :data:`QUESTION_TYPE_RULES`)."""
    label = (answer_type or "").upper()
    if rule == RULE_YES_NO:
        closed = _is_yes_no(answer)
    elif rule == RULE_RELEASE_LABEL:
        closed = label == "CLOSED"
    elif rule == RULE_RELEASE_LABEL_OR_YES_NO:
        closed = label == "CLOSED" or _is_yes_no(answer)
    else:
        raise ValueError(f"question_type_rule must be one of {QUESTION_TYPE_RULES}, got {rule!r}")
    return "closed" if closed else "open"


def _report(report: ConversionReport | None, dataset: str, split: str) -> ConversionReport:
    if report is None:
        report = ConversionReport()
    report.dataset = report.dataset or dataset
    report.split = report.split or split
    return report


def _root(source: object, dataset: str) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{dataset}: source must be a folder path, got {type(source).__name__}")
    root = Path(source).expanduser()
    if not root.exists():
        raise LayoutError(dataset, root, "the source folder does not exist")
    if not root.is_dir():
        raise LayoutError(dataset, root, "the source is not a folder")
    return root


def _require(root: Path, rel: str, dataset: str, *, folder: bool = False) -> Path:
    path = root / rel
    ok = path.is_dir() if folder else path.is_file()
    if not ok:
        kind = "folder" if folder else "file"
        raise LayoutError(dataset, root, f"missing {kind} {rel!r}")
    return path


def _match_option(options: Mapping[str, str], answer: str) -> list[str]:
    """Letters whose option text equals ``answer`` (exactly, else after :func:`normalize_text`)."""
    exact = [k for k, v in options.items() if v.strip() == answer.strip()]
    if exact:
        return exact
    norm = normalize_text(answer)
    return [k for k, v in options.items() if norm and normalize_text(v) == norm]


def _load_json(path: Path, dataset: str, root: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise LayoutError(dataset, root, f"cannot read {path}: {exc}") from exc


def _records_list(data: Any, path: Path, dataset: str, root: Path) -> list:
    if not isinstance(data, list):
        raise LayoutError(dataset, root, f"{path.name} must hold a JSON list of records, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------------
# Hugging Face sources (VQA-RAD, PathVQA copies by flaviagiammarino)
# --------------------------------------------------------------------------------------------------

_SPLIT_ALIASES = {
    "val": ("validation", "val", "valid", "validate", "dev"),
    "valid": ("validation", "val", "valid", "validate", "dev"),
    "validate": ("validation", "val", "valid", "validate", "dev"),
    "validation": ("validation", "val", "valid", "validate", "dev"),
    "dev": ("dev", "validation", "val"),
}


def _split_candidates(split: str) -> tuple[str, ...]:
    return _SPLIT_ALIASES.get(split.lower(), (split,))


def _is_hf_object(source: object) -> bool:
    module = type(source).__module__ or ""
    return module.startswith("datasets") and type(source).__name__ in ("Dataset", "DatasetDict")


def _hf_local_kind(root: Path) -> str | None:
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return "save_to_disk"
    if glob.glob(str(root / "data" / "*.parquet")) or glob.glob(str(root / "*.parquet")):
        return "hub_parquet"
    return None


def _hub_parquet_files(root: Path, split: str, dataset: str) -> tuple[list[str], str]:
    """The parquet files of ``split`` in a hub snapshot, and the split name they carry."""
    for name in _split_candidates(split):
        for pattern in (f"data/{name}-*.parquet", f"{name}-*.parquet", f"data/{name}/*.parquet", f"{name}/*.parquet"):
            files = sorted(glob.glob(str(root / pattern)))
            if files:
                return files, name
    found = sorted({Path(f).name.split("-")[0] for f in glob.glob(str(root / "data" / "*.parquet"))})
    raise LayoutError(dataset, root, f"no parquet files for split {split!r} (splits found: {found or 'none'})")


def _hf_pick_split(obj: Any, split: str, dataset: str) -> tuple[Any, str]:
    if type(obj).__name__ != "DatasetDict":
        return obj, split
    for name in _split_candidates(split):
        if name in obj:
            return obj[name], name
    raise ValueError(f"{dataset}: the DatasetDict has no split {split!r}; splits: {sorted(obj)}")


def _hf_dataset_rows(ds: Any, dataset: str) -> Iterator[dict]:
    """Rows of a ``datasets.Dataset`` (columns checked now, rows read lazily)."""
    missing = [c for c in ("image", "question", "answer") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{dataset}: the dataset lacks columns {missing}; columns: {ds.column_names}")
    try:
        import datasets

        if isinstance(ds.features.get("image"), datasets.Image) and ds.features["image"].decode:
            # The encoded bytes as stored (no decode + re-encode): keeps the original file exactly.
            ds = ds.cast_column("image", datasets.Image(decode=False))
    except ImportError:  # pragma: no cover - a datasets object without datasets installed
        pass
    return iter(ds)


def _parquet_rows(files: list[str]) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            pf = pq.ParquetFile(path)
            columns = [c for c in ("image", "question", "answer") if c in pf.schema_arrow.names]
            batches = pf.iter_batches(batch_size=64, columns=columns)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise SourceFileError(path, f"not a readable parquet file ({exc}); download the shard again") from None


def _hf_image_ref(value: Any, fallback_name: str) -> ImageRef | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        name = os.path.basename(path) if isinstance(path, str) and path else fallback_name
        if data:
            return ImageRef(name=name, data=bytes(data))
        if isinstance(path, str) and path and os.path.isfile(path):
            return ImageRef.file(path, name=name)
        return None
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(name=fallback_name, data=bytes(value))
    if hasattr(value, "size") and hasattr(value, "mode"):  # PIL.Image
        return ImageRef(name=os.path.basename(getattr(value, "filename", "") or "") or fallback_name, pil=value)
    if isinstance(value, str) and os.path.isfile(value):
        return ImageRef.file(value)
    return None


def _hf_rows(source: object, split: str, dataset: str) -> tuple[Iterator[dict], str]:
    """Rows of a Hugging Face copy (object, save_to_disk folder or hub snapshot), layout checked
    now, and the name of the split found (``validation`` for ``val``)."""
    if _is_hf_object(source):
        ds, name = _hf_pick_split(source, split, dataset)
        return _hf_dataset_rows(ds, dataset), name
    root = _root(source, dataset)
    kind = _hf_local_kind(root)
    if kind == "save_to_disk":
        import datasets

        ds, name = _hf_pick_split(datasets.load_from_disk(str(root)), split, dataset)
        return _hf_dataset_rows(ds, dataset), name
    if kind == "hub_parquet":
        files, name = _hub_parquet_files(root, split, dataset)
        return _parquet_rows(files), name
    raise LayoutError(
        dataset, root, "no Hugging Face dataset found (no dataset_dict.json/state.json, no data/*.parquet)"
    )


def _read_hf_qa(
    source: object, split: str, *, dataset: str, modality: str | None, report: ConversionReport
) -> Iterator[Record]:
    rows, split = _hf_rows(source, split, dataset)

    def generate() -> Iterator[Record]:
        for i, row in enumerate(rows):
            source_id = f"{split}-{i}"
            question, answer = _text(row, "question"), _text(row, "answer")
            if question is None:
                report.skip(malformed("question"), source_id)
                continue
            if answer is None:
                report.skip(malformed("answer"), source_id)
                continue
            image = _hf_image_ref(row.get("image"), f"{source_id}.png")
            if image is None:
                report.skip(SKIP_NO_IMAGE, source_id)
                continue
            yield Record(
                dataset=dataset,
                split=split,
                source_id=source_id,
                question=question,
                answer=answer,
                question_type=_short_type(answer, None, RULE_YES_NO),
                images=[image],
                modality=modality,
                meta={"question_type_rule": RULE_YES_NO},
            )

    return generate()


# --------------------------------------------------------------------------------------------------
# VQA-RAD
# --------------------------------------------------------------------------------------------------

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
_VQA_RAD_PHRASE_TYPES = {"train": ("freeform", "para"), "test": ("test_freeform", "test_para")}


def read_vqa_rad(
    source: object,
    split: str = "test",
    *,
    dedupe: bool = True,
    question_type_rule: str = RULE_YES_NO,
    report: ConversionReport | None = None,
) -> Iterator[Record]:
    """VQA-RAD questions of ``split`` (``train`` or ``test``).

    OSF layout (``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``): the split comes from
    ``phrase_type``; with ``dedupe`` (default), duplicate (image, question, answer) triplets and train
    triplets also in test are skipped, as in the Hugging Face copy (``flaviagiammarino/vqa-rad``).

    Closed vs open: one rule for both layouts, ``answer_yes_no`` (closed iff the answer is yes/no),
    so the OSF json and the Hugging Face copy give the same breakdown of the same test set; the OSF
    ``answer_type`` (CLOSED/OPEN) is kept in ``answer_type``. ``question_type_rule="release_label"``
    (closed iff ``answer_type`` is CLOSED) or ``"release_label_or_yes_no"`` read the OSF label
    instead; the Hugging Face copy has no label, so they are refused there. The rule is written to
    ``extra_info.meta["question_type_rule"]``.
    """
    report = _report(report, "vqa_rad", split)
    if question_type_rule not in QUESTION_TYPE_RULES:
        raise ValueError(
            f"vqa_rad: question_type_rule must be one of {QUESTION_TYPE_RULES}, got {question_type_rule!r}"
        )
    if _is_hf_object(source) or (
        isinstance(source, (str, os.PathLike))
        and Path(source).is_dir()
        and not (Path(source) / VQA_RAD_JSON).is_file()
        and _hf_local_kind(Path(source))
    ):
        if question_type_rule != RULE_YES_NO:
            raise ValueError(
                f"vqa_rad: question_type_rule {question_type_rule!r} needs the release's CLOSED/OPEN label, which "
                f"the Hugging Face copy does not have; use {RULE_YES_NO!r} or the OSF release"
            )
        return _read_hf_qa(source, split, dataset="vqa_rad", modality=None, report=report)

    root = _root(source, "vqa_rad")
    json_path = _require(root, VQA_RAD_JSON, "vqa_rad")
    image_dir = _require(root, VQA_RAD_IMAGES, "vqa_rad", folder=True)
    if split not in _VQA_RAD_PHRASE_TYPES:
        raise ValueError(f"vqa_rad: split must be one of {sorted(_VQA_RAD_PHRASE_TYPES)}, got {split!r}")
    entries = _records_list(_load_json(json_path, "vqa_rad", root), json_path, "vqa_rad", root)

    def key(entry: Mapping) -> tuple:
        return (_text(entry, "image_name"), _text(entry, "question"), _text(entry, "answer"))

    test_keys: set = set()
    if dedupe and split == "train":
        test_keys = {
            key(e)
            for e in entries
            if isinstance(e, Mapping) and _text(e, "phrase_type") in _VQA_RAD_PHRASE_TYPES["test"]
        }

    def generate() -> Iterator[Record]:
        seen: set = set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                report.skip(malformed("record"), i)
                continue
            source_id = _text(entry, "qid") or str(i)
            phrase_type = _text(entry, "phrase_type")
            if phrase_type is None:
                report.skip(malformed("phrase_type"), source_id)
                continue
            if phrase_type not in _VQA_RAD_PHRASE_TYPES[split]:
                continue  # another split: not counted
            image_name, question, answer = key(entry)
            for name, value in (("image_name", image_name), ("question", question), ("answer", answer)):
                if value is None:
                    report.skip(malformed(name), source_id)
                    break
            else:
                if dedupe and (image_name, question, answer) in seen:
                    report.skip(SKIP_DUPLICATE, source_id)
                    continue
                if dedupe and (image_name, question, answer) in test_keys:
                    report.skip(SKIP_TRAIN_TEST_OVERLAP, source_id)
                    continue
                seen.add((image_name, question, answer))
                answer_type = (_text(entry, "answer_type") or "").upper() or None
                yield Record(
                    dataset="vqa_rad",
                    split=split,
                    source_id=source_id,
                    question=question,
                    answer=answer,
                    question_type=_short_type(answer, answer_type, question_type_rule),
                    images=[ImageRef.file(image_dir / image_name, name=f"{VQA_RAD_IMAGES}/{image_name}")],
                    answer_type=answer_type,
                    meta=_string_fields(entry, ("question_type", "image_organ", "phrase_type"))
                    | {"question_type_rule": question_type_rule},
                )

    return generate()


# --------------------------------------------------------------------------------------------------
# SLAKE
# --------------------------------------------------------------------------------------------------

_SLAKE_FILES = {"train": "train.json", "validate": "validate.json", "test": "test.json"}


def _slake_split_file(split: str) -> str:
    name = split.lower()
    if name in ("val", "valid", "validation", "validate", "dev"):
        name = "validate"
    if name not in _SLAKE_FILES:
        raise ValueError(f"slake: split must be one of train, validate (val), test; got {split!r}")
    return _SLAKE_FILES[name]


def _slake_boxes(det_path: Path, report: ConversionReport, source_id: str) -> tuple[list[list[float]], list[str]]:
    """``detection.json``: a list of ``{"<organ>": [x, y, w, h]}`` -> ``[x1, y1, x2, y2]`` boxes + labels."""
    if not det_path.is_file():
        return [], []
    try:
        with open(det_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        report.warn("unreadable detection.json (no gt_boxes)", source_id)
        return [], []
    if isinstance(data, Mapping):
        data = [data]
    boxes: list[list[float]] = []
    labels: list[str] = []
    if not isinstance(data, list):
        report.warn("unreadable detection.json (no gt_boxes)", source_id)
        return [], []
    for item in data:
        if not isinstance(item, Mapping):
            report.warn("malformed detection.json entry dropped", source_id)
            continue
        for label, value in item.items():
            try:
                x, y, w, h = (float(v) for v in value)
            except (TypeError, ValueError):
                report.warn("malformed detection.json entry dropped", source_id)
                continue
            if not all(v == v and abs(v) != float("inf") for v in (x, y, w, h)) or w <= 0 or h <= 0:
                report.warn("malformed detection.json entry dropped", source_id)
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(str(label))
    return boxes, labels


def _slake_mask_legend(path: Path, report: ConversionReport, source_id: str) -> dict[str, str] | None:
    """``mask.txt``: which label each pixel value of ``mask.png`` stands for, as ``{"<value>": "<label>"}``.

    Lines ``<value>:<label>`` (also ``<value> <label>``, ``<value>,<label>``, ``<value>=<label>``, or
    ``<label>:<value>``); None (and a warning) when the file holds no such line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        report.warn("unreadable mask.txt (mask legend not parsed)", source_id)
        return None
    legend: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        for sep in (":", "=", ",", "\t", " "):
            if sep in line:
                left, right = (part.strip() for part in line.split(sep, 1))
                break
        else:
            continue
        if left.lstrip("-").isdigit() and right:
            legend[str(int(left))] = right
        elif right.lstrip("-").isdigit() and left:
            legend[str(int(right))] = left
    if not legend:
        report.warn("mask.txt has no '<value>:<label>' lines (mask legend not parsed)", source_id)
        return None
    return legend


def _slake_mask(folder: Path, report: ConversionReport, source_id: str) -> tuple[str | None, dict]:
    """``(mask_path, meta)`` of an image folder: ``mask.png`` only with its legend ``mask.txt``."""
    mask_png, mask_txt = folder / "mask.png", folder / "mask.txt"
    if not mask_png.is_file():
        return None, {}
    if not mask_txt.is_file():
        report.warn("mask.png without mask.txt: mask_path not carried", source_id)
        return None, {}
    meta: dict = {"mask_legend_file": str(mask_txt.resolve())}
    legend = _slake_mask_legend(mask_txt, report, source_id)
    if legend is not None:
        meta["mask_legend"] = legend
    return str(mask_png.resolve()), meta


def read_slake(
    source: object, split: str = "test", *, english_only: bool = True, report: ConversionReport | None = None
) -> Iterator[Record]:
    """SLAKE (Slake1.0) questions of ``split`` (``train``, ``validate``/``val``, ``test``).

    English only by default (``q_lang == "en"``; others are skipped as non-English). Closed when
    ``answer_type`` is CLOSED or the answer is yes/no (rule ``release_label_or_yes_no``, written to
    ``meta["question_type_rule"]``). Carries ``modality`` and, for the grounding check, the image's
    ``detection.json`` boxes (``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` original pixels). Their labels
    (``gt_box_labels``) are whatever ``detection.json`` names -- organs ("Liver", "Left Lung") and
    findings ("Pneumonia", "Nodule", "Brain Edema") alike; nothing here tells the two apart.

    ``mask_path`` (the absolute path of the image's ``mask.png``) is only set together with its
    legend: ``mask.txt`` in the same folder, whose path goes to ``meta["mask_legend_file"]`` and whose
    parsed ``{pixel value: label}`` to ``meta["mask_legend"]``. A ``mask.png`` without ``mask.txt``
    is not carried (its values mean nothing without the legend; a warning is counted).
    """
    report = _report(report, "slake", split)
    root = _root(source, "slake")
    json_name = _slake_split_file(split)
    split = json_name[: -len(".json")]
    json_path = _require(root, json_name, "slake")
    imgs = _require(root, "imgs", "slake", folder=True)
    entries = _records_list(_load_json(json_path, "slake", root), json_path, "slake", root)

    def generate() -> Iterator[Record]:
        boxes_cache: dict[Path, tuple[list, list]] = {}
        mask_cache: dict[Path, tuple[str | None, dict]] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                report.skip(malformed("record"), i)
                continue
            source_id = _text(entry, "qid") or str(i)
            lang = (_text(entry, "q_lang") or "").lower()
            if english_only and lang != "en":
                report.skip(SKIP_NON_ENGLISH, source_id)
                continue
            img_name, question, answer = _text(entry, "img_name"), _text(entry, "question"), _text(entry, "answer")
            bad = next(
                (n for n, v in (("img_name", img_name), ("question", question), ("answer", answer)) if v is None), None
            )
            if bad:
                report.skip(malformed(bad), source_id)
                continue
            image_path = imgs / img_name
            folder = image_path.parent
            if folder not in boxes_cache:
                boxes_cache.clear()  # questions come grouped by image; keep one entry
                boxes_cache[folder] = _slake_boxes(folder / "detection.json", report, source_id)
                mask_cache.clear()
                mask_cache[folder] = _slake_mask(folder, report, source_id)
            boxes, labels = boxes_cache[folder]
            mask_path, mask_meta = mask_cache[folder]
            answer_type = (_text(entry, "answer_type") or "").upper() or None
            yield Record(
                dataset="slake",
                split=split,
                source_id=source_id,
                question=question,
                answer=answer,
                question_type=_short_type(answer, answer_type, RULE_RELEASE_LABEL_OR_YES_NO),
                images=[ImageRef.file(image_path, name=f"imgs/{img_name}")],
                answer_type=answer_type,
                modality=_text(entry, "modality"),
                gt_boxes=[list(b) for b in boxes],
                gt_box_labels=list(labels),
                mask_path=mask_path,
                meta={
                    k: entry[k]
                    for k in ("img_id", "location", "content_type", "base_type", "q_lang")
                    if isinstance(entry.get(k), (str, int)) and not isinstance(entry.get(k), bool)
                }
                | mask_meta
                | {"question_type_rule": RULE_RELEASE_LABEL_OR_YES_NO},
            )

    return generate()


# --------------------------------------------------------------------------------------------------
# PathVQA
# --------------------------------------------------------------------------------------------------


def read_path_vqa(source: object, split: str = "test", *, report: ConversionReport | None = None) -> Iterator[Record]:
    """PathVQA questions of ``split`` (``train``, ``validation``/``val``, ``test``) from the Hugging Face
    copy ``flaviagiammarino/path-vqa``. Closed iff the answer is yes/no (PathVQA's own definition)."""
    report = _report(report, "path_vqa", split)
    if not _is_hf_object(source):
        root = _root(source, "path_vqa")
        if _hf_local_kind(root) is None and (root / "qas").is_dir():
            raise LayoutError(
                "path_vqa",
                root,
                "this is the original pickle release (qas/*.pkl), which is not read (unpickling runs code); "
                "use the Hugging Face copy flaviagiammarino/path-vqa",
            )
    return _read_hf_qa(source, split, dataset="path_vqa", modality="pathology", report=report)


# --------------------------------------------------------------------------------------------------
# PMC-VQA
# --------------------------------------------------------------------------------------------------

#: Image folders by CSV version, first match wins. The v2 csvs (``train_2.csv``/``test_2.csv``) name
#: figures of ``figures/`` (``images_2.zip`` unpacks to ``images_2/figures/``); the v1 csvs
#: (``train.csv``/``test.csv``/``test_clean.csv``) those of ``images/`` (``images.zip`` unpacks to
#: ``images/`` or ``images/figures/``). The two sets reuse file names for different figures, so a
#: version never looks in the other's folders.
_PMC_IMAGE_DIRS = {
    "v1": ("images", "images/figures", "images/images"),
    "v2": ("figures", "images_2/figures", "images_2", "figures/figures"),
}
_PMC_COLUMNS = ("Figure_path", "Question", "Choice A", "Choice B", "Answer")


def pmc_vqa_version(split: str) -> str:
    """``"v2"`` for the v2 csvs (``train_2``, ``test_2``: a name ending ``_2``), else ``"v1"``."""
    return "v2" if str(split).lower().endswith("_2") else "v1"


def _strip_choice_prefix(text: str, letter: str) -> str:
    """``"A:CT scan"`` / ``" A: CT"`` -> ``"CT scan"`` / ``"CT"`` (only the option's own letter)."""
    body = text.strip()
    if len(body) >= 2 and body[0].upper() == letter:
        rest = body[1:].lstrip()
        if rest[:1] == ":":
            return rest[1:].strip()
    return body


def _letter(value: str | None, options: Mapping[str, str]) -> str | None:
    """The option letter ``value`` names (``"B"``, ``" B "``, ``"(B)"``, ``"B:MRI"``), else None."""
    text = (value or "").strip().strip("()").strip()
    if not text:
        return None
    head = text[0].upper()
    rest = text[1:].lstrip()
    if head in options and (not rest or rest[0] in ":.)"):
        return head
    return None


def read_pmc_vqa(
    source: object,
    split: str = "test",
    *,
    answer_from_text: bool = False,
    report: ConversionReport | None = None,
) -> Iterator[Record]:
    """PMC-VQA multiple-choice questions from ``<root>/<split>.csv``.

    Two releases of the csvs, told apart by name (:func:`pmc_vqa_version`):

    * v1 (``train``, ``test``, ``test_clean``): columns ``Figure_path, Question, Answer, Choice A..D,
      Answer_label``; images in ``images/`` (or ``images/figures/``). The ground truth is the
      official ``Answer_label``. ``Answer`` (the answer text) is only checked against it: a
      disagreement is counted as a warning and the label kept. ``answer_from_text=True`` (opt-in)
      lets the text decide instead: when it names exactly one choice that choice wins, and a row
      whose label is not a choice letter takes the choice its text names.
    * v2 (``train_2``, ``test_2``, the csvs current evaluations use): columns ``index, Figure_path,
      Caption, Question, Choice A..D, Answer, split``, ``Answer`` being the option letter, no
      ``Answer_label``; images in ``figures/`` (or ``images_2/figures/``).

    Each version looks only in its own image folders: the two image sets reuse file names. Choices
    ``"A:CT scan"`` lose the ``"A:"`` prefix. A row whose answer names no choice is skipped
    (``unknown answer label``). ``meta`` records ``csv_version`` (and v2's ``split`` column).
    """
    report = _report(report, "pmc_vqa", split)
    root = _root(source, "pmc_vqa")
    csv_path = _require(root, f"{split}.csv", "pmc_vqa")
    version = pmc_vqa_version(split)
    image_dirs = [root / d for d in _PMC_IMAGE_DIRS[version] if (root / d).is_dir()]
    if not image_dirs:
        folders = " or ".join(f"'{d}/'" for d in _PMC_IMAGE_DIRS[version][:2])
        raise LayoutError("pmc_vqa", root, f"missing image folder {folders} (for the {version} csv {csv_path.name})")
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise _not_utf8(csv_path, exc) from None
    except csv.Error as exc:
        raise SourceFileError(csv_path, f"not a readable CSV file ({exc})") from None
    required = _PMC_COLUMNS + (("Answer_label",) if version == "v1" and not answer_from_text else ())
    missing = [c for c in required if c not in header]
    if missing:
        raise LayoutError("pmc_vqa", root, f"{csv_path.name} lacks columns {missing} (has {header})")

    def generate() -> Iterator[Record]:
        try:
            yield from rows()
        except UnicodeDecodeError as exc:
            raise _not_utf8(csv_path, exc) from None
        except csv.Error as exc:
            raise SourceFileError(csv_path, f"not a readable CSV file ({exc})") from None

    def ground_truth(row: Mapping, options: dict[str, str], source_id: str) -> str | None:
        answer = _text(row, "Answer")
        if version == "v2":
            letter = _letter(answer, options)
            if letter is None and answer_from_text and answer:
                by_text = _match_option(options, answer)
                if len(by_text) == 1:
                    report.warn("answer letter taken from the answer text", source_id)
                    return by_text[0]
            return letter
        label = _letter(_text(row, "Answer_label"), options)
        by_text = _match_option(options, answer) if answer else []
        if label is None:
            if answer_from_text and len(by_text) == 1:
                report.warn("answer label taken from the answer text", source_id)
                return by_text[0]
            return None
        if answer and label not in by_text:
            if answer_from_text and len(by_text) == 1:
                report.warn("answer label corrected to the choice matching the answer text", source_id)
                return by_text[0]
            if len(by_text) == 1:
                report.warn("answer text names another choice (official Answer_label kept)", source_id)
            else:
                report.warn("answer text matches no choice (Answer_label kept)", source_id)
        return label

    def rows() -> Iterator[Record]:
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                source_id = _text(row, "index") or _text(row, "") or str(i)
                figure, question = _text(row, "Figure_path"), _text(row, "Question")
                if figure is None:
                    report.skip(malformed("Figure_path"), source_id)
                    continue
                if question is None:
                    report.skip(malformed("Question"), source_id)
                    continue
                options = {}
                for letter in OPTION_LETTERS:
                    raw = _text(row, f"Choice {letter}")
                    text = _strip_choice_prefix(raw, letter) if raw is not None else ""
                    if text:
                        options[letter] = text
                if len(options) < 2:
                    report.skip(malformed("Choice A..D"), source_id)
                    continue
                label = ground_truth(row, options, source_id)
                if label is None:
                    report.skip(SKIP_UNKNOWN_ANSWER_LABEL, source_id)
                    continue
                image = next((d / figure for d in image_dirs if (d / figure).is_file()), image_dirs[0] / figure)
                rel = image.relative_to(root).as_posix()
                meta = {"csv_version": version}
                if _text(row, "split"):
                    meta["split"] = _text(row, "split")
                yield Record(
                    dataset="pmc_vqa",
                    split=split,
                    source_id=source_id,
                    question=question,
                    answer=label,
                    question_type="multiple_choice",
                    images=[ImageRef.file(image, name=rel)],
                    options=options,
                    meta=meta,
                )

    return generate()


# --------------------------------------------------------------------------------------------------
# OmniMedVQA
# --------------------------------------------------------------------------------------------------


def read_omnimedvqa(
    source: object,
    split: str = "test",
    *,
    access: str | Iterable[str] = ("Open-access",),
    report: ConversionReport | None = None,
) -> Iterator[Record]:
    """OmniMedVQA multiple-choice questions from ``<root>/QA_information/<access>/*.json`` (files in
    name order). ``gt_answer`` is an option's text; its letter becomes the ground truth (exact match,
    else a unique match after normalization; none -> skipped). ``split`` only labels the rows."""
    report = _report(report, "omnimedvqa", split)
    root = _root(source, "omnimedvqa")
    accesses = [access] if isinstance(access, str) else list(access)
    files: list[Path] = []
    for acc in accesses:
        folder = _require(root, f"QA_information/{acc}", "omnimedvqa", folder=True)
        files.extend(sorted(folder.glob("*.json")))
    if not files:
        raise LayoutError("omnimedvqa", root, f"no *.json files in QA_information/{{{','.join(accesses)}}}")

    def generate() -> Iterator[Record]:
        for path in files:
            entries = _records_list(_load_json(path, "omnimedvqa", root), path, "omnimedvqa", root)
            for i, entry in enumerate(entries):
                if not isinstance(entry, Mapping):
                    report.skip(malformed("record"), f"{path.name}:{i}")
                    continue
                source_id = _text(entry, "question_id") or f"{path.stem}:{i}"
                fields = {k: _text(entry, k) for k in ("question", "gt_answer", "image_path")}
                bad = next((k for k, v in fields.items() if v is None), None)
                if bad:
                    report.skip(malformed(bad), source_id)
                    continue
                extra = sorted(k for k in entry if k.startswith("option_") and k[7:] not in OPTION_LETTERS and entry[k])
                if extra:
                    report.skip(SKIP_TOO_MANY_OPTIONS, source_id)
                    continue
                options = {L: t for L in OPTION_LETTERS if (t := _text(entry, f"option_{L}")) is not None}
                if len(options) < 2:
                    report.skip(malformed("option_A..option_D"), source_id)
                    continue
                letters = _match_option(options, fields["gt_answer"])
                if len(letters) != 1:
                    report.skip(SKIP_ANSWER_NOT_IN_OPTIONS if not letters else SKIP_AMBIGUOUS_ANSWER, source_id)
                    continue
                rel = fields["image_path"].replace("\\", "/").lstrip("/")
                if rel.startswith("./"):
                    rel = rel[2:]
                yield Record(
                    dataset="omnimedvqa",
                    split=split,
                    source_id=source_id,
                    question=fields["question"],
                    answer=letters[0],
                    question_type="multiple_choice",
                    images=[ImageRef.file(root / rel, name=rel)],
                    options=options,
                    modality=_text(entry, "modality_type") or _text(entry, "modality"),
                    meta=_string_fields(entry, ("dataset", "question_type")) | {"qa_file": path.name},
                )

    return generate()


# --------------------------------------------------------------------------------------------------
# MedXpertQA-MM
# --------------------------------------------------------------------------------------------------


def read_medxpertqa_mm(
    source: object, split: str = "test", *, report: ConversionReport | None = None
) -> Iterator[Record]:
    """MedXpertQA MM questions of ``split`` (``test`` or ``dev``) from ``<root>/MM/<split>.jsonl``.

    The question text already lists the options ("Answer Choices: (A) ..."), so the prompt does not
    repeat them; ``options`` and the ``label`` letter go to ``extra_info``/``ground_truth``. Images:
    ``<root>/images/<name>`` (or ``<root>/MM/images/``).
    """
    report = _report(report, "medxpertqa_mm", split)
    root = _root(source, "medxpertqa_mm")
    split = "dev" if split.lower() in ("dev", "val", "valid", "validation") else split
    jsonl = _require(root, f"MM/{split}.jsonl", "medxpertqa_mm")
    image_dir = next((root / d for d in ("images", "MM/images") if (root / d).is_dir()), None)
    if image_dir is None:
        raise LayoutError("medxpertqa_mm", root, "missing folder 'images/' (unpack images.zip at the root)")

    def generate() -> Iterator[Record]:
        try:
            yield from lines()
        except UnicodeDecodeError as exc:
            raise _not_utf8(jsonl, exc) from None

    def lines() -> Iterator[Record]:
        with open(jsonl, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    report.skip(malformed("json line"), f"line {lineno}")
                    continue
                if not isinstance(entry, Mapping):
                    report.skip(malformed("record"), f"line {lineno}")
                    continue
                source_id = _text(entry, "id") or f"line {lineno}"
                question = _text(entry, "question")
                if question is None:
                    report.skip(malformed("question"), source_id)
                    continue
                raw_options = entry.get("options")
                if not isinstance(raw_options, Mapping) or len(raw_options) < 2:
                    report.skip(malformed("options"), source_id)
                    continue
                options = {str(k).strip().upper(): _text(raw_options, k) for k in raw_options}
                if any(k not in OPTION_LETTERS for k in options):
                    report.skip(SKIP_TOO_MANY_OPTIONS, source_id)
                    continue
                if any(v is None for v in options.values()):
                    report.skip(malformed("options"), source_id)
                    continue
                label = (_text(entry, "label") or "").strip(" .:()").upper()
                if label not in options:
                    report.skip(SKIP_UNKNOWN_ANSWER_LABEL, source_id)
                    continue
                images = entry.get("images")
                if not isinstance(images, list) or not images:
                    report.skip(SKIP_NO_IMAGE, source_id)
                    continue
                if not all(isinstance(n, str) and n.strip() for n in images):
                    report.skip(malformed("images"), source_id)
                    continue
                yield Record(
                    dataset="medxpertqa_mm",
                    split=split,
                    source_id=source_id,
                    question=question,
                    answer=label,
                    question_type="multiple_choice",
                    images=[ImageRef.file(image_dir / n.strip(), name=n.strip()) for n in images],
                    options={k: options[k] for k in sorted(options)},
                    options_in_question=True,
                    meta=_string_fields(entry, ("medical_task", "body_system", "question_type")),
                )

    return generate()


# --------------------------------------------------------------------------------------------------
# HuatuoGPT-Vision evaluation bundle (MedVLM-R1's data)
# --------------------------------------------------------------------------------------------------

HUATUO_EVAL_FILE = "medical_multimodel_evaluation_data.json"


def read_huatuo_eval(
    source: object, split: str = "test", *, report: ConversionReport | None = None
) -> Iterator[Record]:
    """Multiple-choice questions of HuatuoGPT-Vision's evaluation bundle, in file order (the order
    MedVLM-R1's ``select(range(n))`` counts in). ``answer`` is an option's text; its letter is the
    first option equal to it (MedVLM-R1's ``options.index(answer)``), else a unique match after
    normalization. ``modality`` is the record's ``subset`` (OmniMedVQA's modality label, e.g.
    ``"MR (Mag-netic Resonance Imaging)"``, or the source benchmark's name); ``meta`` keeps
    ``dataset``, ``subset`` and ``position`` (the index in the file). ``split`` only labels the rows.

    ``source`` is the bundle folder, or a ``.json`` file of records in the same form whose image paths
    are relative to its folder (MedVLM-R1's released test sets, ``MRI_CT_XRAY_300each_dataset.json``:
    300 MRI, 300 CT, 300 X-ray questions of the bundle, placed in the bundle folder).
    """
    report = _report(report, "huatuo_eval", split)
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".json") and Path(source).is_file():
        path = Path(source).expanduser()
        root = path.parent
    else:
        root = _root(source, "huatuo_eval")
        path = _require(root, HUATUO_EVAL_FILE, "huatuo_eval")

    def generate() -> Iterator[Record]:
        entries = _records_list(_load_json(path, "huatuo_eval", root), path, "huatuo_eval", root)
        for i, entry in enumerate(entries):
            source_id = f"#{i}"
            if not isinstance(entry, Mapping):
                report.skip(malformed("record"), source_id)
                continue
            question, answer = _text(entry, "question"), _text(entry, "answer")
            if question is None or answer is None:
                report.skip(malformed("question" if question is None else "answer"), source_id)
                continue
            raw = entry.get("options")
            if not isinstance(raw, list) or len(raw) < 2 or any(_text({"o": o}, "o") is None for o in raw):
                report.skip(malformed("options"), source_id)
                continue
            if len(raw) > len(OPTION_LETTERS):
                report.skip(SKIP_TOO_MANY_OPTIONS, source_id)
                continue
            options = {OPTION_LETTERS[k]: _text({"o": o}, "o") for k, o in enumerate(raw)}
            exact = [k for k, v in options.items() if v == answer]
            letters = exact[:1] or _match_option(options, answer)
            if len(letters) != 1:
                report.skip(SKIP_ANSWER_NOT_IN_OPTIONS if not letters else SKIP_AMBIGUOUS_ANSWER, source_id)
                continue
            images = entry.get("image")
            images = [images] if isinstance(images, str) else images
            if not isinstance(images, list) or not images:
                report.skip(SKIP_NO_IMAGE, source_id)
                continue
            if not all(isinstance(n, str) and n.strip() for n in images):
                report.skip(malformed("image"), source_id)
                continue
            rels = [n.strip().replace("\\", "/").lstrip("/") for n in images]
            yield Record(
                dataset="huatuo_eval",
                split=split,
                source_id=source_id,
                question=question,
                answer=letters[0],
                question_type="multiple_choice",
                images=[ImageRef.file(root / rel, name=rel) for rel in rels],
                options=options,
                modality=_text(entry, "subset"),
                meta=_string_fields(entry, ("dataset", "subset")) | {"position": i},
            )

    return generate()


def _string_fields(entry: dict, keys) -> dict:
    """The release's extra labels of a record kept in ``meta``: those of ``keys`` that are strings."""
    return {k: entry[k] for k in keys if isinstance(entry.get(k), str)}


READERS = {
    "vqa_rad": read_vqa_rad,
    "slake": read_slake,
    "path_vqa": read_path_vqa,
    "pmc_vqa": read_pmc_vqa,
    "omnimedvqa": read_omnimedvqa,
    "medxpertqa_mm": read_medxpertqa_mm,
    "huatuo_eval": read_huatuo_eval,
}
