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

Imports neither veRL nor torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from medvr_verl.boxes import BoxError, parse_bbox

Box = tuple[float, float, float, float]
ImageBox = tuple[int, Box]

ZOOM_RECORDS_KEY = "medvr_zoom_calls"
DEFAULT_TOOL_NAME = "image_zoom_in_tool"

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
# A bound on the text scanned for tool calls: a response never legitimately holds more, and it keeps
# adversarial text (megabytes of tags) from costing more than linear time in this bound.
_MAX_SCAN_CHARS = 1_000_000
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
        try:
            box = parse_bbox(args.get("bbox_2d"), _UNBOUNDED, _UNBOUNDED)
        except BoxError:
            invalid += 1
            continue
        boxes.append((image_index, box))
    return boxes, invalid


def boxes_from_records(records: Iterable[Mapping[str, Any]]) -> tuple[list[ImageBox], int]:
    """Zoom boxes from :class:`~medvr_verl.tools.ZoomInTool` records, in root-image pixels.

    A record carries ``valid``, ``root_image_index`` / ``bbox_root`` (the box mapped back to the prompt
    image a crop came from) and ``image_index`` / ``bbox_original``. Returns ``(boxes, num_invalid)``.
    """
    boxes: list[ImageBox] = []
    invalid = 0
    for record in records:
        box = record.get("bbox_root") or record.get("bbox_original")
        if not record.get("valid") or box is None:
            invalid += 1
            continue
        image_index = record.get("root_image_index", record.get("image_index", 0))
        boxes.append((int(image_index), tuple(float(v) for v in box)))
    return boxes, invalid


def trajectory_boxes(
    extra_fields: Mapping[str, Any] | None, response_text: str, tool_name: str = DEFAULT_TOOL_NAME
) -> tuple[list[ImageBox], int, str]:
    """Boxes of one trajectory: the tool's records when present, else the response text.

    Returns ``(boxes, num_invalid, source)`` with ``source`` in ``{"records", "text"}``.
    """
    records = (extra_fields or {}).get(ZOOM_RECORDS_KEY)
    if records is not None:
        boxes, invalid = boxes_from_records(records)
        return boxes, invalid, "records"
    boxes, invalid = boxes_from_text(response_text, tool_name)
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
