"""Readers of the public medical VQA releases: one ``read_<dataset>(source, split)`` per release.

Each reader checks the release layout when called (a wrong folder raises :class:`LayoutError`,
naming the missing file and the expected layout) and returns an iterator of :class:`Record`.
Records it cannot use are counted in the ``report`` passed in (:class:`ConversionReport`) and not
yielded; image files are only located here -- opening and checking them is the writer's job
(:mod:`medvr_verl.data.writer`), so a missing or broken image is reported there.

Question types (``extra_info.question_type``, see :mod:`medvr_verl.scoring`):

* ``multiple_choice``: PMC-VQA, OmniMedVQA, MedXpertQA-MM; ground truth = option letter.
* ``closed``: the release labels the question CLOSED (VQA-RAD OSF json, SLAKE), or the answer is yes/no
  (every release, the only rule for the Hugging Face copies of VQA-RAD and PathVQA); scored by exact
  match (first word for yes/no).
* ``open``: everything else; scored by exact match or bounded containment.

Layouts followed (the on-disk form of each public release; see :data:`LAYOUTS`):

* VQA-RAD: the OSF release (Lau et al. 2018, https://osf.io/89kps/): ``VQA_RAD Dataset Public.json``
  + ``VQA_RAD Image Folder/``; the train/test split is the json's ``phrase_type`` (``freeform``/``para``
  vs ``test_freeform``/``test_para``), and -- as in the Hugging Face copy ``flaviagiammarino/vqa-rad``
  -- duplicate (image, question, answer) triplets are dropped and train triplets that also occur in
  test are removed. Or that Hugging Face copy (columns ``image``/``question``/``answer``).
* SLAKE: Slake1.0 (Liu et al. 2021, https://www.med-vqa.com/slake/, also ``BoKelvin/SLAKE`` on the
  hub): ``train.json``/``validate.json``/``test.json`` + ``imgs/xmlab<N>/{source.jpg, mask.png,
  detection.json}``.
* PathVQA: the Hugging Face copy ``flaviagiammarino/path-vqa`` (columns ``image``/``question``/
  ``answer``; splits train/validation/test). The original pickle release is not read (unpickling
  runs code from the file).
* PMC-VQA: ``xmcmic/PMC-VQA`` (Zhang et al. 2023): ``train.csv``/``test.csv``/``test_clean.csv``
  (and ``train_2.csv``/``test_2.csv``) + ``images/`` (or ``figures/`` for the v2 csvs).
* OmniMedVQA: ``foreverbeliever/OmniMedVQA`` (Hu et al. 2024): ``QA_information/Open-access/*.json``
  + ``Images/``; ``image_path`` is relative to the release root. The release has no train/test split:
  every record gets the ``split`` label given.
* MedXpertQA-MM: ``TsinghuaC3I/MedXpertQA`` (Zuo et al. 2025): ``MM/test.jsonl``/``MM/dev.jsonl`` +
  ``images/`` (``images.zip`` unpacked at the root).

Hugging Face sources (VQA-RAD, PathVQA): a ``datasets.Dataset``/``DatasetDict`` object, a
``datasets.save_to_disk`` folder, or a hub snapshot folder (``data/<split>-*.parquet``).
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
    "LayoutError",
    "READERS",
    "SourceFileError",
    "read_medxpertqa_mm",
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
        "(+ mask.png, detection.json); split val/validation reads validate.json."
    ),
    "path_vqa": (
        "PathVQA, Hugging Face copy flaviagiammarino/path-vqa: a save_to_disk folder or a hub snapshot "
        "<root>/data/{train,validation,test}-*.parquet (columns image, question, answer)."
    ),
    "pmc_vqa": (
        "PMC-VQA: <root>/{train,test,test_clean,train_2,test_2}.csv (columns Figure_path, Question, Answer, "
        "Choice A..D, Answer_label) and the images in <root>/images/ or <root>/figures/."
    ),
    "omnimedvqa": (
        "OmniMedVQA: <root>/QA_information/Open-access/*.json (lists of records with question_id, question, "
        "gt_answer, image_path, option_A..option_D, modality_type, dataset) and <root>/Images/...; "
        "no official split: --split only labels the rows."
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


def _short_type(answer: str, answer_type: str | None) -> str:
    """``closed`` when the release says CLOSED or the answer is yes/no, else ``open``."""
    if (answer_type or "").upper() == "CLOSED" or _is_yes_no(answer):
        return "closed"
    return "open"


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
                question_type=_short_type(answer, None),
                images=[image],
                modality=modality,
            )

    return generate()


# --------------------------------------------------------------------------------------------------
# VQA-RAD
# --------------------------------------------------------------------------------------------------

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
_VQA_RAD_PHRASE_TYPES = {"train": ("freeform", "para"), "test": ("test_freeform", "test_para")}


def read_vqa_rad(
    source: object, split: str = "test", *, dedupe: bool = True, report: ConversionReport | None = None
) -> Iterator[Record]:
    """VQA-RAD questions of ``split`` (``train`` or ``test``).

    OSF layout (``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``): the split comes from
    ``phrase_type``; ``answer_type`` CLOSED/OPEN and yes/no answers decide closed vs open; with
    ``dedupe`` (default), duplicate (image, question, answer) triplets and train triplets also in test
    are skipped, as in the Hugging Face copy. Hugging Face copy (``flaviagiammarino/vqa-rad``):
    closed iff the answer is yes/no (the copy dropped ``answer_type``).
    """
    report = _report(report, "vqa_rad", split)
    if _is_hf_object(source) or (
        isinstance(source, (str, os.PathLike))
        and Path(source).is_dir()
        and not (Path(source) / VQA_RAD_JSON).is_file()
        and _hf_local_kind(Path(source))
    ):
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
                    question_type=_short_type(answer, answer_type),
                    images=[ImageRef.file(image_dir / image_name, name=f"{VQA_RAD_IMAGES}/{image_name}")],
                    answer_type=answer_type,
                    meta=_string_fields(entry, ("question_type", "image_organ", "phrase_type")),
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


def read_slake(
    source: object, split: str = "test", *, english_only: bool = True, report: ConversionReport | None = None
) -> Iterator[Record]:
    """SLAKE (Slake1.0) questions of ``split`` (``train``, ``validate``/``val``, ``test``).

    English only by default (``q_lang == "en"``; others are skipped as non-English). Closed when
    ``answer_type`` is CLOSED or the answer is yes/no. Carries ``modality`` and, for the grounding
    check, the image's ``detection.json`` boxes (``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` original
    pixels, with organ names) and the absolute path of its ``mask.png`` (None when absent).
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
            boxes, labels = boxes_cache[folder]
            mask = folder / "mask.png"
            answer_type = (_text(entry, "answer_type") or "").upper() or None
            yield Record(
                dataset="slake",
                split=split,
                source_id=source_id,
                question=question,
                answer=answer,
                question_type=_short_type(answer, answer_type),
                images=[ImageRef.file(image_path, name=f"imgs/{img_name}")],
                answer_type=answer_type,
                modality=_text(entry, "modality"),
                gt_boxes=[list(b) for b in boxes],
                gt_box_labels=list(labels),
                mask_path=str(mask.resolve()) if mask.is_file() else None,
                meta={
                    k: entry[k]
                    for k in ("img_id", "location", "content_type", "base_type", "q_lang")
                    if isinstance(entry.get(k), (str, int)) and not isinstance(entry.get(k), bool)
                },
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

_PMC_IMAGE_DIRS = ("images", "images/images", "figures", "figures/figures", "images_2", "images_2/figures", ".")
_PMC_COLUMNS = ("Figure_path", "Question", "Choice A", "Choice B")


def _strip_choice_prefix(text: str, letter: str) -> str:
    """``"A:CT scan"`` / ``" A: CT"`` -> ``"CT scan"`` / ``"CT"`` (only the option's own letter)."""
    body = text.strip()
    if len(body) >= 2 and body[0].upper() == letter:
        rest = body[1:].lstrip()
        if rest[:1] == ":":
            return rest[1:].strip()
    return body


def read_pmc_vqa(source: object, split: str = "test", *, report: ConversionReport | None = None) -> Iterator[Record]:
    """PMC-VQA multiple-choice questions from ``<root>/<split>.csv``.

    Choices ``"A:CT scan"`` lose the ``"A:"`` prefix. The ground truth is ``Answer_label``, checked
    against the ``Answer`` text: when the label is not a choice letter the text decides; when the text
    names exactly one other choice, that choice wins (a warning is counted); a record with neither a
    usable label nor a matching text is skipped. Images are looked up in ``images/``, ``figures/``
    (and their nested ``images/images/``, ``figures/figures/`` as unzipped), then the root.
    """
    report = _report(report, "pmc_vqa", split)
    root = _root(source, "pmc_vqa")
    csv_path = _require(root, f"{split}.csv", "pmc_vqa")
    image_dirs = [root / d for d in _PMC_IMAGE_DIRS if (root / d).is_dir() and d != "."]
    if not image_dirs:
        raise LayoutError("pmc_vqa", root, "missing image folder 'images/' (or 'figures/')")
    image_dirs.append(root)
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise _not_utf8(csv_path, exc) from None
    except csv.Error as exc:
        raise SourceFileError(csv_path, f"not a readable CSV file ({exc})") from None
    missing = [c for c in _PMC_COLUMNS if c not in header]
    if missing:
        raise LayoutError("pmc_vqa", root, f"{csv_path.name} lacks columns {missing} (has {header})")

    def generate() -> Iterator[Record]:
        try:
            yield from rows()
        except UnicodeDecodeError as exc:
            raise _not_utf8(csv_path, exc) from None
        except csv.Error as exc:
            raise SourceFileError(csv_path, f"not a readable CSV file ({exc})") from None

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
                label = (_text(row, "Answer_label") or "").strip(" .:()").upper()
                answer_text = _text(row, "Answer")
                by_text = _match_option(options, answer_text) if answer_text else []
                if label not in options:
                    if len(by_text) != 1:
                        report.skip(SKIP_UNKNOWN_ANSWER_LABEL, source_id)
                        continue
                    label = by_text[0]
                    report.warn("answer label taken from the answer text", source_id)
                elif answer_text and label not in by_text:
                    if len(by_text) == 1:
                        label = by_text[0]
                        report.warn("answer label corrected to the choice matching the answer text", source_id)
                    else:
                        report.warn("answer text matches no choice (label kept)", source_id)
                image = next((d / figure for d in image_dirs if (d / figure).is_file()), image_dirs[0] / figure)
                yield Record(
                    dataset="pmc_vqa",
                    split=split,
                    source_id=source_id,
                    question=question,
                    answer=label,
                    question_type="multiple_choice",
                    images=[ImageRef.file(image, name=figure)],
                    options=options,
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
}
