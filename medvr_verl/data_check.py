"""The training and validation files checked in the driver, before Ray or any model starts.

Run by the MedVR recipes' Hydra callback (:class:`medvr_verl.config_check.CheckMedVRSettings`) after
the settings check. Without it, bad data shows up late and in the wrong words: an empty parquet fails
about a minute in, inside a Ray traceback ("ArrowInvalid: BatchSize must be greater than 0"); an
integer ground truth (0/1 for options A/B) trains to the end with every reward 0.0; a text-only
parquet loads under the zoom agent without a word; a corrupt image is dropped at load as if its
prompt were too long. :func:`check_data` reads only parquet metadata, the ground-truth columns of the
first ``max_rows`` rows and the images of the first ``image_rows`` rows, and returns one line per
problem naming the file, the row and the fix. Settings (``data.medvr_check``)::

    data:
      medvr_check:
        enable: true     # false: skip the check (e.g. files only the cluster can read)
        max_rows: 10000  # rows of each file whose columns and ground truths are checked; null: all
        image_rows: 8    # first rows of each file whose images are decoded

Remote files (``hdfs://``, ``s3://``, ...) are not checked.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medvr_verl.ground_truth import ground_truth_problem

MAX_EXAMPLES = 3
"""Example rows named per problem (the count says how many there are)."""
SKIP_HINT = "data.medvr_check.enable=false skips this check (+data.medvr_check.enable=false on a config without it)"


@dataclass(frozen=True)
class DataCheckSettings:
    enable: bool = True
    max_rows: int | None = 10000
    image_rows: int = 8

    @classmethod
    def from_config(cls, config) -> DataCheckSettings:
        node = dict((config.get("data", None) or {}).get("medvr_check", None) or {})
        unknown = set(node) - set(cls.__dataclass_fields__)
        if unknown:
            known = sorted(cls.__dataclass_fields__)
            raise ValueError(f"unknown data.medvr_check options {sorted(unknown)}; known: {known}")
        return cls(**node)


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _agent_of(config) -> str | None:
    rollout = config.actor_rollout_ref.rollout
    return (rollout.get("agent", None) or {}).get("default_agent_loop", None)


def check_data(config, *, needs_images: bool | None = None) -> list[str]:
    """One line per problem with ``data.train_files`` / ``data.val_files``; empty when all is well.

    ``needs_images``: whether the recipe's agent needs an image per row (default: the configured
    ``default_agent_loop`` is ``medvr_agent`` or a subclass).
    """
    settings = DataCheckSettings.from_config(config)
    if not settings.enable:
        return []
    data = config.data
    if needs_images is None:
        from medvr_verl.agent_loop import is_medvr_agent

        needs_images = is_medvr_agent(_agent_of(config))
    image_key = data.get("image_key", None) or "images"
    prompt_key = data.get("prompt_key", None) or "prompt"
    problems: list[str] = []
    from omegaconf import DictConfig, OmegaConf

    for role in ("train_files", "val_files"):
        if isinstance(data, DictConfig) and OmegaConf.is_missing(data, role):
            problems.append(f"data.{role} is not set: add data.{role}=<your parquet> to the command")
            continue
        for path in _files(data.get(role, None)):
            if _is_remote(path):
                continue
            problems += _check_file(path, role, settings, needs_images, image_key, prompt_key)
    return problems


def _check_file(path, role, settings, needs_images, image_key, prompt_key) -> list[str]:
    import pyarrow.parquet as pq

    where = f"data.{role}: {path}"
    if not os.path.exists(path):
        return [f"{where}: no such file; set data.{role} to an existing parquet"]
    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:
        return [f"{where}: not a readable parquet ({type(e).__name__}: {e}); write it with python -m medvr_verl.data"]
    if parquet.metadata.num_rows == 0:
        return [f"{where}: the file has no rows; convert the data again or point data.{role} at another file"]
    columns = set(parquet.schema_arrow.names)
    problems = []
    required = {prompt_key: "the prompt", "reward_model": "the ground truth (reward_model.ground_truth)"}
    missing = [f"{name!r} ({what})" for name, what in required.items() if name not in columns]
    if missing:
        problems.append(f"{where}: no column {', '.join(missing)}; write the file with python -m medvr_verl.data")
    if needs_images and image_key not in columns:
        problems.append(
            f"{where}: no {image_key!r} column, but the recipe's agent medvr_agent zooms into each question's "
            "image: convert image data with python -m medvr_verl.data, or for text-only data set "
            "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent (or tool_agent)"
        )
    if "reward_model" in columns:
        problems += _check_ground_truths(parquet, where, settings.max_rows)
    if image_key in columns and settings.image_rows > 0:
        problems += _check_images(parquet, where, image_key, settings.image_rows, needs_images)
    return problems


def _rows(parquet, columns: Sequence[str], limit: int | None):
    """``(row number, row dict)`` of the first ``limit`` rows (all when None), reading only ``columns``."""
    seen = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=list(columns)):
        for row in batch.to_pylist():
            if limit is not None and seen >= limit:
                return
            yield seen, row
            seen += 1


def _check_ground_truths(parquet, where: str, max_rows: int | None) -> list[str]:
    columns = ["reward_model"] + (["extra_info"] if "extra_info" in parquet.schema_arrow.names else [])
    found: dict[str, list] = {}
    checked = 0
    for row_number, row in _rows(parquet, columns, max_rows):
        checked += 1
        reward_model = row.get("reward_model") or {}
        truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        problem = ground_truth_problem(truth, row.get("extra_info"))
        if problem is not None:
            found.setdefault(problem.kind, []).append((row_number, problem.message))
    lines = []
    for rows in found.values():
        numbers = ", ".join(str(n) for n, _ in rows[:MAX_EXAMPLES])
        more = f" (and {len(rows) - MAX_EXAMPLES} more)" if len(rows) > MAX_EXAMPLES else ""
        lines.append(
            f"{where}: row {numbers}{more}, {len(rows)} of {checked} checked: {rows[0][1]}; every answer to such "
            "a row scores 0.0"
        )
    return lines


def _decode(image: Any) -> None:
    """Decode one image entry as veRL's dataset stores it (``{"bytes": ...}``, ``{"image": path}``, a path)."""
    from PIL import Image

    if isinstance(image, dict):
        if image.get("bytes") is not None:
            source = io.BytesIO(image["bytes"])
        else:
            source = image.get("image") or image.get("path")
    else:
        source = io.BytesIO(image) if isinstance(image, bytes) else image
    if source is None:
        raise ValueError("empty image entry")
    if isinstance(source, str) and source.startswith("file://"):
        source = source[len("file://") :]
    with Image.open(source) as img:
        img.load()


def _check_images(parquet, where: str, image_key: str, image_rows: int, needs_images: bool) -> list[str]:
    unreadable, without = [], []
    checked = 0
    for row_number, row in _rows(parquet, [image_key], image_rows):
        checked += 1
        images = row.get(image_key) or []
        if not images:
            without.append(row_number)
        for k, image in enumerate(images):
            try:
                _decode(image)
            except Exception as e:
                unreadable.append((row_number, k, f"{type(e).__name__}: {e}"))
                break
    lines = []
    if unreadable:
        row_number, k, error = unreadable[0]
        numbers = ", ".join(str(n) for n, _, _ in unreadable[:MAX_EXAMPLES])
        lines.append(
            f"{where}: row {numbers} ({len(unreadable)} of the first {checked}): image {k} cannot be decoded "
            f"({error}); convert the data again with python -m medvr_verl.data (it checks every image) or "
            "remove the row (veRL would drop it at load)"
        )
    if needs_images and without:
        numbers = ", ".join(str(n) for n in without[:MAX_EXAMPLES])
        lines.append(
            f"{where}: row {numbers} ({len(without)} of the first {checked}) has no image, but medvr_agent "
            "zooms into each question's image: convert image data with python -m medvr_verl.data, or for "
            "text-only data set actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent"
        )
    return lines


def check_data_or_exit(config) -> None:
    """:func:`check_data`; print every problem and exit with status 1 when there is one."""
    problems = check_data(config)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise SystemExit(f"medvr-verl: the data cannot train as configured:\n{lines}\n({SKIP_HINT})")
