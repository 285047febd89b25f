"""Trajectory records -> pictures: reading ``reward_extra_info`` / veRL dump lines, file names, titles,
and the training-time hook :func:`write_step_overlays`.

Fields read from each record (see the package docstring): ``zoom_boxes_json``, ``cca_consensus_json``,
``group_uid`` (else ``uid``), ``sample_index``, ``acc``, ``tool_reward``, ``cca_iou``, ``score`` (else
``reward``), optionally ``cca_in_quorum``, ``cca_quorum_size``, ``fork`` and ``fork_of``. Values that
went through ``json.dumps(default=str)`` as strings are accepted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medvr_verl.viz.draw import ImageBox, MemberView, group_panels, save_png

logger = logging.getLogger(__name__)

F_BOXES = "zoom_boxes_json"
F_CONSENSUS = "cca_consensus_json"
F_UIDS = ("group_uid", "uid")  # first non-empty wins
F_INDEX = "sample_index"
F_FORK = ("fork", "medvr_fork")  # first present wins


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    f = as_float(value)
    if f is None or f != int(f):
        return None
    return int(f)


def as_bool(value: Any) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    f = as_float(value)
    return None if f is None else f != 0


def parse_image_boxes(value: Any) -> list[ImageBox]:
    """``[[image_index, x1, y1, x2, y2], ...]`` (JSON text or list) -> ``[(image_index, box)]``.

    Malformed entries (wrong length, non-finite numbers, negative or fractional index, empty box)
    are dropped; malformed JSON gives ``[]``.
    """
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except (ValueError, RecursionError):
            return []
    if not isinstance(value, (list, tuple, np.ndarray)):
        return []
    out: list[ImageBox] = []
    for entry in value:
        if not isinstance(entry, (list, tuple, np.ndarray)) or len(entry) != 5:
            continue
        k = as_int(entry[0])
        coords = [as_float(v) for v in entry[1:]]
        if k is None or k < 0 or any(c is None for c in coords):
            continue
        x1, y1, x2, y2 = coords
        if x2 > x1 and y2 > y1:
            out.append((k, (x1, y1, x2, y2)))
    return out


def fork_of_record(rec: Mapping[str, Any]) -> bool | None:
    """True for a fork, False for a base, None when the record does not say.

    ``fork`` (bool, 0/1, "true"/"false"), else ``medvr_fork`` as veRL's V1 rows carry it in
    ``extra_fields``: None for a base, a dict (where the fork left its base) for a fork.
    """
    for key in F_FORK:
        if key not in rec:
            continue
        value = rec[key]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return False
        if isinstance(value, Mapping):
            return True
        return as_bool(value)
    return None


def members_from_records(records: Sequence[Mapping[str, Any]]) -> tuple[list[MemberView], list[ImageBox]]:
    """Trajectory views (labels ``#1..#N`` in record order) and the group consensus from the records.

    ``correct`` is ``acc > 0``; ``reward`` is ``score`` (else ``reward``); IoU is shown only for quorum
    members (``cca_in_quorum``, or correct-and-zoomed when that field is absent). ``fork`` per
    :func:`fork_of_record`; ``fork_of`` (0-based position of the base in the group's records) names
    the base as ``#k``. The consensus is the first non-empty ``cca_consensus_json`` of the group.
    """
    members: list[MemberView] = []
    consensus: list[ImageBox] = []
    for i, rec in enumerate(records):
        boxes = parse_image_boxes(rec.get(F_BOXES))
        acc = as_float(rec.get("acc"))
        correct = acc is not None and acc > 0
        reward = as_float(rec.get("score"))
        if reward is None:
            reward = as_float(rec.get("reward"))
        in_quorum = as_bool(rec.get("cca_in_quorum"))
        if in_quorum is None:
            in_quorum = correct and bool(boxes)
        iou = as_float(rec.get("cca_iou")) if in_quorum else None
        tool = as_float(rec.get("tool_reward"))
        fork = fork_of_record(rec)
        base = as_int(rec.get("fork_of")) if fork else None
        members.append(
            MemberView(
                boxes=boxes,
                correct=correct,
                reward=math.nan if reward is None else reward,
                tool_reward=0.0 if tool is None else tool,
                iou=iou,
                label=f"#{i + 1}",
                fork=fork,
                fork_of=f"#{base + 1}" if base is not None and 0 <= base < len(records) else None,
            )
        )
        if not consensus:
            consensus = parse_image_boxes(rec.get(F_CONSENSUS))
    return members, consensus


def uid_of(rec: Mapping[str, Any]) -> str | None:
    """The group id of a record: ``group_uid`` (what ``medvr_cca`` writes), else ``uid``; None if empty."""
    for key in F_UIDS:
        uid = rec.get(key)
        if uid is None or (isinstance(uid, float) and math.isnan(uid)):
            continue
        uid = str(uid).strip()
        if uid and uid.lower() not in ("none", "nan"):
            return uid
    return None


def _uid8(uid: str | None) -> str:
    if not uid:
        return "nouid"
    short = re.sub(r"[^A-Za-z0-9_-]", "", uid)[:8]
    return short or "nouid"


def overlay_filename(step: Any, sample_index: int | None, uid: str | None, image_index: int | None = None) -> str:
    """``step{S}_idx{I}_{uid8}.png`` (``_img{k}`` added for a prompt with panels on several images)."""
    s = as_int(step)
    name = f"step{s if s is not None else 'NA'}_idx{sample_index if sample_index is not None else 'NA'}_{_uid8(uid)}"
    if image_index is not None:
        name += f"_img{image_index}"
    return name + ".png"


def _group_title(step: Any, sample_index: int | None, uid: str | None, records, members) -> str:
    quorum = next((q for q in (as_int(r.get("cca_quorum_size")) for r in records) if q is not None), None)
    if quorum is None:
        quorum = sum(1 for m in members if m.correct and m.boxes)
    s = as_int(step)
    parts = [
        f"step {s if s is not None else '?'}",
        f"idx {sample_index if sample_index is not None else '?'}",
        f"uid {_uid8(uid)}",
        f"correct {sum(m.correct for m in members)}/{len(members)}",
        f"quorum {quorum}",
    ]
    if any(m.fork is not None for m in members):
        parts.append(f"forks {sum(bool(m.fork) for m in members)}")
    gts = records[0].get("gts") if records else None
    if gts is not None and not isinstance(gts, (dict, list)):
        parts.append(f"gt: {str(gts).strip()[:60]}")
    return " | ".join(parts)


def render_records(
    images: Sequence[Image.Image],
    records: Sequence[Mapping[str, Any]],
    *,
    step: Any,
    sample_index: int | None,
    uid: str | None,
    max_side: int,
) -> list[tuple[str, Image.Image]]:
    """File name and picture for each panel of one group."""
    members, consensus = members_from_records(records)
    title = _group_title(step, sample_index, uid, records, members)
    panels = group_panels(images, members, consensus, title=title, max_side=max_side)
    several = len(panels) > 1
    return [(overlay_filename(step, sample_index, uid, k if several else None), img) for k, img in panels]


def has_boxes(records: Iterable[Mapping[str, Any]]) -> bool:
    return any(parse_image_boxes(r.get(F_BOXES)) or parse_image_boxes(r.get(F_CONSENSUS)) for r in records)


def unique_path(out_dir: Path, name: str, used: set[str]) -> Path:
    stem, candidate, n = name[: -len(".png")], name, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}.png"
    used.add(candidate)
    return out_dir / candidate


def write_step_overlays(
    out_dir: str | os.PathLike,
    step: int,
    prompts_images: list[list[Image.Image]],
    group_records: list[list[dict]],
    max_groups: int,
    *,
    max_side: int = 1024,
) -> list[Path]:
    """Training-time hook: render up to ``max_groups`` groups of one step and return the PNG paths.

    ``prompts_images[g]`` are the images of group ``g``'s prompt; ``group_records[g]`` its
    trajectories' ``reward_extra_info`` dicts plus ``score`` (and optionally ``fork``, a bool: the
    legend then tells bases from forks). Groups without any zoom box or consensus are passed over
    (they would draw nothing), so up to ``max_groups`` groups *with* boxes are drawn, in order.
    Never raises for one bad group: it is logged and skipped.
    """
    out = Path(out_dir)
    written: list[Path] = []
    used: set[str] = set()
    drawn = 0
    for images, records in zip(prompts_images, group_records):
        if drawn >= max_groups:
            break
        if not records or not has_boxes(records):
            continue
        uid = next((u for u in (uid_of(r) for r in records) if u), None)
        index = next((i for i in (as_int(r.get(F_INDEX)) for r in records) if i is not None and i >= 0), None)
        try:
            panels = render_records(images, records, step=step, sample_index=index, uid=uid, max_side=max_side)
            for name, img in panels:
                written.append(save_png(img, unique_path(out, name, used)))
        except Exception as exc:  # visualisation must never stop training
            logger.warning("viz: could not draw group uid=%s idx=%s at step %s: %r", uid, index, step, exc)
            continue
        drawn += 1
    return written
