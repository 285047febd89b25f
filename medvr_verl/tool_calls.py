"""Pure: read zoom boxes out of a trajectory, from the tool's records or from the response text.

Two sources, in order of preference:

1. The records :class:`medvr_verl.tools.ZoomInTool` leaves in the trajectory's ``extra_fields``
   (``medvr_zoom_calls``): boxes already mapped to original-image pixels, with their root image.
2. The decoded response text, for trajectories rolled out by a loop that keeps no records (veRL's
   stock ``tool_agent`` with any zoom tool): hermes ``<tool_call>{json}</tool_call>`` blocks whose
   ``name`` is the zoom tool. These boxes stay in the model's resized-image space and are not
   clamped (the image size is unknown here). CCA compares boxes of one prompt, all drawn in the same
   space, and IoU is invariant under per-axis scaling, so consensus rewards are the same in either
   space.

Both sources are untrusted (records can come from any agent loop or a rollout dump): nothing here
raises on bad data. A malformed record or call is one invalid zoom (``num_invalid``), never a box;
valid boxes have 4 finite coordinates within ``MAX_COORDINATE``, some area, and an image index in
``[0, MAX_IMAGE_INDEX]``. At most ``MAX_BOXES_PER_TRAJECTORY`` boxes are kept per trajectory (the
first ones, in call order); the excess counts as invalid, which bounds CCA's cost per group.

Imports neither veRL nor torch.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from medvr_verl.boxes import BoxError, parse_bbox

Box = tuple[float, float, float, float]
ImageBox = tuple[int, Box]

ZOOM_RECORDS_KEY = "medvr_zoom_calls"
DEFAULT_TOOL_NAME = "image_zoom_in_tool"

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
# A bound on the text scanned for tool calls: a response never legitimately holds more, and it keeps
# adversarial text (megabytes of tags) from costing more than linear time in this bound.
_MAX_SCAN_CHARS = 1_000_000
# Bounds on what a trajectory's boxes may be, whatever wrote them (records can come from any agent
# loop or rollout dump). A trajectory's zoom calls are bounded by its turns; the cap keeps CCA's cost
# bounded for a hostile or broken writer, and the boxes past it count as invalid zooms.
MAX_BOXES_PER_TRAJECTORY = 64
MAX_RECORDS = 100_000  # records read at all per trajectory; the rest count as invalid
MAX_IMAGE_INDEX = 1_000_000  # no conversation holds more images
MAX_COORDINATE = float(2**31)  # pixels; keeps every area finite (and exact for integer boxes < 2**26.5)
# No image size is known for boxes read from text: validate them without clamping.
_UNBOUNDED = math.inf


def iter_tool_calls(text: str) -> Iterable[dict[str, Any]]:
    """Yield every well-formed hermes tool call ``{"name": ..., "arguments": {...}}`` in ``text``.

    Blocks whose body is not a JSON object are skipped (the model's malformed calls earn no box).
    """
    text = text[:_MAX_SCAN_CHARS]
    start = text.find(_OPEN)
    while start != -1:
        end = text.find(_CLOSE, start + len(_OPEN))
        if end == -1:
            return
        body = text[start + len(_OPEN) : end].strip()
        try:
            call = json.loads(body)
        except (ValueError, RecursionError):
            call = None
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            arguments = call.get("arguments", {})
            if isinstance(arguments, str):  # some models double-encode the arguments
                try:
                    arguments = json.loads(arguments)
                except (ValueError, RecursionError):
                    arguments = None
            if isinstance(arguments, dict):
                yield {"name": call["name"], "arguments": arguments}
        start = text.find(_OPEN, end + len(_CLOSE))


def boxes_from_text(text: str, tool_name: str = DEFAULT_TOOL_NAME) -> tuple[list[ImageBox], int]:
    """Zoom boxes of the ``tool_name`` calls in ``text``.

    Returns ``(boxes, num_invalid)``: valid boxes as ``(image_index, (x1, y1, x2, y2))`` in the model's
    image space (reversed corners reordered, no clamping), and the count of calls whose box or image
    index was rejected.
    """
    boxes: list[ImageBox] = []
    invalid = 0
    for call in iter_tool_calls(text):
        if call["name"] != tool_name:
            continue
        args = call["arguments"]
        image_index = args.get("image_index", 0)
        if isinstance(image_index, bool) or not isinstance(image_index, int) or image_index < 0:
            invalid += 1
            continue
        if image_index > MAX_IMAGE_INDEX:
            invalid += 1
            continue
        try:
            box = parse_bbox(args.get("bbox_2d"), _UNBOUNDED, _UNBOUNDED)
        except BoxError:
            invalid += 1
            continue
        if not all(abs(v) <= MAX_COORDINATE for v in box):
            invalid += 1
            continue
        boxes.append((image_index, box))
    return _cap(boxes, invalid)


def as_image_index(value: object) -> int | None:
    """An image index read from a record or a call: an int (numpy ints and integral floats too,
    as a pandas/parquet round trip leaves them) in ``[0, MAX_IMAGE_INDEX]``; None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        index = int(value)
    elif isinstance(value, numbers.Real):
        as_float = float(value)
        if not math.isfinite(as_float) or as_float != int(as_float):
            return None
        index = int(as_float)
    else:
        return None
    return index if 0 <= index <= MAX_IMAGE_INDEX else None


def validate_box(value: object) -> Box | None:
    """A zoom box read back from a record or a text call: 4 finite numbers (any form
    :func:`medvr_verl.boxes.parse_bbox` accepts), corners reordered, with some area, every
    coordinate within ``MAX_COORDINATE`` of 0; negative parts are clipped at 0. None otherwise."""
    try:
        box = parse_bbox(value, _UNBOUNDED, _UNBOUNDED, min_size=0.0)
    except (BoxError, ValueError, TypeError, OverflowError, RecursionError):
        return None
    if not all(abs(v) <= MAX_COORDINATE for v in box):
        return None
    # Areas of boxes this large stay finite; a box too thin for a float area counts as no box.
    if not (box[2] - box[0]) * (box[3] - box[1]) > 0.0:
        return None
    return box


def _record_box(record: object) -> ImageBox | None:
    """``(image_index, box)`` of one valid record, None for anything else (see boxes_from_records)."""
    if not isinstance(record, Mapping):
        return None
    try:
        valid = record.get("valid")
        if not (valid is True or (isinstance(valid, np.bool_) and bool(valid))):
            return None
        root_box = record.get("bbox_root")
        if root_box is not None:
            box, index = root_box, record.get("root_image_index")
        else:
            box, index = record.get("bbox_original"), record.get("image_index", 0)
    except Exception:  # a hostile Mapping whose get() raises
        return None
    if box is None:
        return None
    image_index = as_image_index(index)
    if image_index is None:
        return None
    parsed = validate_box(box)
    return None if parsed is None else (image_index, parsed)


def _record_list(records: object) -> list | None:
    """The records as a list: a list or tuple, or a 1-D numpy array of them (a rollout dump read
    back with pandas). None for anything else (a string, a mapping, a number)."""
    if isinstance(records, (list, tuple)):
        return list(records[:MAX_RECORDS])
    if isinstance(records, np.ndarray) and records.ndim == 1:
        return list(records[:MAX_RECORDS])
    return None


def boxes_from_records(records: object) -> tuple[list[ImageBox], int]:
    """Zoom boxes from :class:`~medvr_verl.tools.ZoomInTool` records, in root-image pixels.

    A record carries ``valid``, ``root_image_index`` / ``bbox_root`` (the box mapped back to the prompt
    image a crop came from) and ``image_index`` / ``bbox_original``. Returns ``(boxes, num_invalid)``.

    Records may come from any agent loop or a rollout dump, so every one is validated and none can
    raise: a record counts as one invalid zoom (no box) unless it is a mapping with ``valid`` True,
    a box (``bbox_root``, else ``bbox_original``) that :func:`validate_box` accepts, and the
    matching image index (``root_image_index`` for ``bbox_root``, else ``image_index``, default 0)
    an int in ``[0, MAX_IMAGE_INDEX]``. ``records`` itself must be a list/tuple (or 1-D array) of
    records; anything else is one invalid zoom. At most ``MAX_RECORDS`` records are read, and at
    most ``MAX_BOXES_PER_TRAJECTORY`` boxes kept (in call order); the excess counts as invalid.
    """
    items = _record_list(records)
    if items is None:
        return [], 1
    boxes: list[ImageBox] = []
    invalid = 0
    for record in items:
        entry = _record_box(record)
        if entry is None:
            invalid += 1
        else:
            boxes.append(entry)
    invalid += len(records) - len(items)  # records past MAX_RECORDS
    return _cap(boxes, invalid)


def _cap(boxes: list[ImageBox], invalid: int) -> tuple[list[ImageBox], int]:
    """Keep the first ``MAX_BOXES_PER_TRAJECTORY`` boxes; the rest count as invalid zooms."""
    if len(boxes) > MAX_BOXES_PER_TRAJECTORY:
        invalid += len(boxes) - MAX_BOXES_PER_TRAJECTORY
        boxes = boxes[:MAX_BOXES_PER_TRAJECTORY]
    return boxes, invalid


def trajectory_boxes(
    extra_fields: Mapping[str, Any] | None, response_text: str, tool_name: str = DEFAULT_TOOL_NAME
) -> tuple[list[ImageBox], int, str]:
    """Boxes of one trajectory: the tool's records when present, else the response text.

    Returns ``(boxes, num_invalid, source)`` with ``source`` in ``{"records", "text"}``. Never
    raises: ``extra_fields`` that is not a mapping counts as holding no records, a non-string
    ``response_text`` as empty text.
    """
    records = None
    if isinstance(extra_fields, Mapping):
        try:
            records = extra_fields.get(ZOOM_RECORDS_KEY)
        except Exception:  # a hostile Mapping
            records = None
    if records is not None:
        boxes, invalid = boxes_from_records(records)
        return boxes, invalid, "records"
    text = response_text if isinstance(response_text, str) else ""
    name = tool_name if isinstance(tool_name, str) else DEFAULT_TOOL_NAME
    boxes, invalid = boxes_from_text(text, name)
    return boxes, invalid, "text"


def coordinate_char_spans(text: str, tool_name: str = DEFAULT_TOOL_NAME) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the ``bbox_2d`` arrays of the ``tool_name`` calls in ``text``.

    One span per hermes block calling ``tool_name`` whose ``bbox_2d`` array is written out, from its
    ``[`` to its ``]`` inclusive, in order. These are the tokens where EVR measures the model's
    uncertainty about where to look, and where a fork starts sampling anew.
    """
    spans = []
    text = text[:_MAX_SCAN_CHARS]
    start = text.find(_OPEN)
    while start != -1:
        end = text.find(_CLOSE, start + len(_OPEN))
        block_end = len(text) if end == -1 else end
        body = text[start + len(_OPEN) : block_end]
        name_ok = f'"{tool_name}"' in body
        key = body.find('"bbox_2d"')
        if name_ok and key != -1:
            open_bracket = body.find("[", key)
            close_bracket = body.find("]", open_bracket + 1) if open_bracket != -1 else -1
            if close_bracket != -1:
                offset = start + len(_OPEN)
                spans.append((offset + open_bracket, offset + close_bracket + 1))
        if end == -1:
            break
        start = text.find(_OPEN, end + len(_CLOSE))
    return spans
