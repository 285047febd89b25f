"""The MedVR zoom-in tool for veRL 0.9.1: ``image_zoom_in_tool``.

The model calls ``image_zoom_in_tool(bbox_2d=[x1, y1, x2, y2], image_index=0, label="...")`` with a
box in pixels of the image *as it sees it* (Qwen2.5-VL grounds in absolute pixels of its resized
input). The tool maps the box back to the image held in ``agent_data.image_data`` (the "original"
image), crops there at native resolution, and returns the crop, which veRL's ``ToolAgentLoop``
appends to the conversation and to ``agent_data.image_data``.

Images and indices
    ``image_index`` (default **0**, the first prompt image) counts the images of the conversation so
    far in ``agent_data.image_data`` order: the prompt's images first, then the crops returned by
    earlier calls (in the order veRL appended them). A crop can be zoomed again: its box is mapped
    back to the prompt image it came from (its *root*).

Coordinates
    The model sees image ``k`` (``W x H`` pixels) resized by Qwen2-VL's ``smart_resize`` to
    ``model_input_size(W, H)`` (``factor = patch_size * merge_size``, ``min_pixels``, ``max_pixels``
    of the processor). The box is parsed and clamped in that space (:func:`medvr_verl.boxes.parse_bbox`),
    scaled per axis to image ``k``'s pixels (:func:`medvr_verl.boxes.scale_box`), and cropped on the
    integer box that contains it (floor of the top-left, ceil of the bottom-right).

Pixel budget
    ``min_pixels`` / ``max_pixels`` are the processor's: when the agent loop hands the processor a pair
    (``agent_data.mm_processor_kwargs``, from veRL's ``data.mm_processor_kwargs``: ``min_pixels`` and
    ``max_pixels``, or a ``size`` dict with ``shortest_edge`` and ``longest_edge``), the tool uses that
    pair for both the coordinate mapping and the crop size, so the one budget of the recipe governs
    prompt images and crops alike. transformers applies ``min_pixels`` / ``max_pixels`` only as a pair:
    a lone one is ignored by the processor, so by the tool too (with a warning). Without a pair the
    tool config's values apply (they must then equal the model's ``preprocessor_config.json``).

Returned crop
    8-bit ``RGB`` (:func:`to_rgb8`; high-bit-depth grayscale is windowed by the min/max of the *full*
    image, so a crop keeps the brightness mapping of its source). A crop above ``max_pixels`` is scaled
    down (aspect kept); then a crop whose shorter side is below ``min_crop_side`` is scaled up to it
    (BICUBIC, aspect kept). Crops whose aspect ratio exceeds 200:1 are refused (the processor's
    ``smart_resize`` would raise).

Records (``agent_data.extra_fields``)
    ``medvr_zoom_calls``: one dict per call, appended in call order, valid or not::

        call_index        position in the list
        image_index       int requested image, or None when the index itself was bad
        label             str or None (model's own words, truncated; logs only)
        bbox_model        [x1, y1, x2, y2] parsed+clamped, in the model's view of image_index;
                          repr() of the raw bbox_2d (of the whole arguments when they are not a
                          JSON object), truncated to 200 characters, when it could not be parsed
        bbox_original     [x1, y1, x2, y2] floats in pixels of image image_index, or None
        root_image_index  prompt image the box lies in (== image_index for a prompt image), or None
        bbox_root         bbox_original mapped into root_image_index's pixels, or None
        crop_box          [x1, y1, x2, y2] ints actually cropped from image image_index, or None
        crop_size         [w, h] of the returned image, or None
        image_size        [w, h] of image image_index, or None
        model_size        [w, h] the model sees for image image_index, or None
        valid             True iff a crop was returned
        error             None, or the error text the model got

    ``medvr_image_provenance``: one dict per image of ``agent_data.image_data`` at the time of the
    latest call: ``{"root": i, "box": None}`` for a prompt image (or any image the tool did not make),
    ``{"root": r, "box": [x1, y1, x2, y2], "scale": [sx, sy], "parent": k}`` for a crop, where ``box``
    is the region of root image ``r`` (its pixels) the crop shows and ``scale`` root pixels per crop
    pixel. Each crop also carries its entry in ``crop.info["medvr_provenance"]``; the list is rebuilt
    from those at every call, so it stays right whatever order parallel calls finish in and whichever
    calls fail (crops of the last turn appear once a later call runs).

Errors
    Nothing raises out of :meth:`ZoomInTool.execute` (except task cancellation): every bad argument,
    image problem or Pillow error returns ``ToolResponse(text="Error: ...")``, reward 0.0, and an
    invalid record. Unknown extra arguments are ignored.

Concurrency
    veRL runs many trajectories in one event loop; the crop/convert/resize work runs in the default
    thread-pool executor. The tool holds no per-instance state (everything lives in ``agent_data``).

Size (over 500 lines): one veRL ``BaseTool`` -- argument checking (every bad argument answered in
text), coordinate mapping, the pixel budget and the crop -- whose parts only make sense together.
"""

from __future__ import annotations

import sys

if "verl" not in sys.modules:
    # Import order: ``import verl`` loads this plugin (``verl.plugins`` entry point), whose agent loop
    # imports this module. Were veRL first imported from here, the plugin would find this module
    # half-initialized and fail to register ``medvr_agent``. So import veRL with this module out of
    # ``sys.modules``: the plugin then imports a complete copy, which the importer of this module
    # receives (importlib returns ``sys.modules[__name__]`` once this body has run); this partial
    # copy finishes running and is dropped. Without a plugin import, this copy is put back.
    _self = sys.modules.pop(__name__, None)
    try:
        import verl  # noqa: F401
    finally:
        if _self is not None:
            sys.modules.setdefault(__name__, _self)
        del _self

import asyncio
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from PIL import Image
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from verl.utils.rollout_trace import rollout_trace_op

from medvr_verl.boxes import BoxError, parse_bbox, scale_box
from medvr_verl.tools.image_io import (
    USE_PIL_LIMIT,
    EmptyImageError,
    ImageTooLargeError,
    check_pixel_budget,
    crop_to_rgb8,
    ensure_loaded,
    intensity_window,
    is_high_bit_depth,
    resolve_pixel_limit,
    to_rgb8,
)

__all__ = [
    "CALLS_KEY",
    "PROVENANCE_INFO_KEY",
    "PROVENANCE_KEY",
    "TOOL_NAME",
    "ZoomInTool",
    "default_tool_schema",
    "model_input_size",
    "to_rgb8",
]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

TOOL_NAME = "image_zoom_in_tool"
CALLS_KEY = "medvr_zoom_calls"
PROVENANCE_KEY = "medvr_image_provenance"
PROVENANCE_INFO_KEY = "medvr_provenance"
ORIGINALS_ATTR = "medvr_originals"
"""``AgentData`` attribute: the prompt images at stored resolution (``image_io.OriginalImages``)."""

DEFAULT_IMAGE_INDEX = 0
MAX_ASPECT_RATIO = 200  # smart_resize raises above this
_MAX_REPR = 200  # characters of a bad argument kept in a record / error text

# Qwen2.5-VL's image processor (preprocessor_config.json of Qwen/Qwen2.5-VL-*-Instruct).
_DEFAULTS: dict[str, Any] = {
    "patch_size": 14,
    "merge_size": 2,
    "min_pixels": 56 * 56,  # 3136
    "max_pixels": 28 * 28 * 16384,  # 12845056
    "min_crop_side": 28,
    "max_calls_per_trajectory": None,
    "max_image_pixels": USE_PIL_LIMIT,
}
_KNOWN_KEYS = set(_DEFAULTS) | {"type"}


def model_input_size(
    width: int,
    height: int,
    *,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 16384,
) -> tuple[int, int]:
    """``(w, h)`` of the image the model sees for a ``width x height`` input.

    transformers' own ``smart_resize`` (``transformers/models/qwen2_vl/image_processing_qwen2_vl.py``;
    the same function in ``qwen_vl_utils.vision_process``), which Qwen2-VL and Qwen2.5-VL's image
    processors call with ``factor = patch_size * merge_size``,
    ``min_pixels = size["shortest_edge"]``, ``max_pixels = size["longest_edge"]``. Note the argument
    order: this takes and returns (width, height); smart_resize takes and returns (height, width).
    Raises ``ValueError`` when the aspect ratio exceeds 200 (smart_resize's own error), and for an
    empty (zero width or height) or non-finite size.
    """
    if not (
        isinstance(width, (int, float))
        and isinstance(height, (int, float))
        and math.isfinite(width)
        and math.isfinite(height)
        and width >= 1
        and height >= 1
    ):
        raise ValueError(
            f"the image is empty or has no usable size ({width}x{height} pixels); it cannot be shown or zoomed"
        )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h_bar, w_bar = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w_bar, h_bar


def default_tool_schema(name: str = TOOL_NAME) -> OpenAIFunctionToolSchema:
    """The OpenAI function schema used when the tool YAML gives no ``tool_schema``."""
    return OpenAIFunctionToolSchema.model_validate(
        {
            "type": "function",
            "function": {
                "name": name,
                "description": (
                    "Zoom in on a region of an image in the conversation to see it at full resolution. "
                    "Returns the cropped region as a new image."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "bbox_2d": {
                            "type": "array",
                            "description": (
                                "The region as 4 numbers [x1, y1, x2, y2] in pixels of the image as you see it: "
                                "(x1, y1) top-left corner, (x2, y2) bottom-right corner, origin at the image's "
                                "top-left."
                            ),
                        },
                        "image_index": {
                            "type": "integer",
                            "description": (
                                "0-based index of the image to zoom into, among the images in the conversation "
                                "so far: the question's images first, then the zoomed-in images in the order they "
                                "were returned. Default 0 (the first image of the question)."
                            ),
                        },
                        "label": {
                            "type": "string",
                            "description": "Optional: what you are looking for in this region.",
                        },
                    },
                    "required": ["bbox_2d"],
                },
            },
        }
    )


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning("image_zoom_in_tool: %s", message)


def _pixels(value: Any) -> int:
    """A pixel count from a processor kwarg: a positive integer (float integers accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(value)
    if value != int(value) or value < 1:
        raise ValueError(value)
    return int(value)


class _ToolError(Exception):
    """An error whose message goes to the model (prefixed with 'Error: ')."""


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - pathological __repr__
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _fmt_box(box) -> str:
    return "[" + ", ".join(_fmt(v) for v in box) + "]"


def _positive_int(config: Mapping[str, Any], key: str, *, allow_none: bool = False) -> int | None:
    value = config.get(key, _DEFAULTS[key])
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
        or value < 1
    ):
        raise ValueError(f"ZoomInTool config {key!r} must be a positive integer, got {value!r}")
    return int(value)


def _valid_provenance(entry: Any, index: int) -> dict[str, Any] | None:
    """A copy of a crop's provenance entry if well-formed for position ``index``, else None."""
    if not isinstance(entry, Mapping):
        return None
    root, box = entry.get("root"), entry.get("box")
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < index:
        return None
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    try:
        box = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in box) or not (box[2] > box[0] and box[3] > box[1]):
        return None
    out = dict(entry)
    out["box"] = box
    return out


def image_provenance(image_data: list[Any]) -> list[dict[str, Any]]:
    """Provenance of every image in ``image_data`` (see the module docstring)."""
    out = []
    for index, img in enumerate(image_data):
        info = getattr(img, "info", None)
        entry = _valid_provenance(info.get(PROVENANCE_INFO_KEY), index) if isinstance(info, dict) else None
        out.append(entry if entry is not None else {"root": index, "box": None})
    return out


class ZoomInTool(BaseTool):
    """veRL ``BaseTool`` that crops a region of an image in the conversation (see the module docstring).

    Config keys (the YAML ``config:`` dict; all optional): ``patch_size`` (14), ``merge_size`` (2),
    ``min_pixels`` (3136), ``max_pixels`` (12845056) -- these must match the processor of the policy
    model when the agent loop passes it no ``min_pixels`` / ``max_pixels`` pair (see "Pixel budget");
    ``min_crop_side`` (28, at least 1) -- shorter side a returned crop is scaled up to;
    ``max_calls_per_trajectory`` (none) -- calls beyond it get an error text; ``max_image_pixels``
    (absent: Pillow's ``Image.MAX_IMAGE_PIXELS``; null: no limit) -- images with more pixels are
    refused without decoding them (decompression-bomb guard).
    """

    def __init__(self, config: dict | None = None, tool_schema: OpenAIFunctionToolSchema | None = None):
        config = dict(config or {})
        unknown = sorted(set(config) - _KNOWN_KEYS)
        if unknown:
            logger.warning("ZoomInTool: ignoring unknown config keys %s", unknown)
        self.patch_size = _positive_int(config, "patch_size")
        self.merge_size = _positive_int(config, "merge_size")
        self.factor = self.patch_size * self.merge_size
        self.min_pixels = _positive_int(config, "min_pixels")
        self.max_pixels = _positive_int(config, "max_pixels")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"ZoomInTool config: min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        self.min_crop_side = _positive_int(config, "min_crop_side")
        self.max_calls_per_trajectory = _positive_int(config, "max_calls_per_trajectory", allow_none=True)
        self.max_image_pixels = config.get("max_image_pixels", USE_PIL_LIMIT)
        resolve_pixel_limit(self.max_image_pixels)  # validate now
        super().__init__(config, tool_schema)

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return getattr(self, "tool_schema", None) or default_tool_schema()

    def model_size(self, width: int, height: int, budget: tuple[int, int] | None = None) -> tuple[int, int]:
        """Size the model sees for an image of ``width x height`` under ``budget`` ``(min_pixels,
        max_pixels)`` (default: this tool's config; see :meth:`pixel_budget`)."""
        min_pixels, max_pixels = budget or (self.min_pixels, self.max_pixels)
        return model_input_size(width, height, factor=self.factor, min_pixels=min_pixels, max_pixels=max_pixels)

    def pixel_budget(self, agent_data: Any = None) -> tuple[int, int]:
        """``(min_pixels, max_pixels)`` the processor applies in this trajectory: the agent loop's
        ``mm_processor_kwargs`` pair when it passes one, else this tool's config (module docstring)."""
        kwargs = getattr(agent_data, "mm_processor_kwargs", None) if agent_data is not None else None
        if not isinstance(kwargs, Mapping) or not kwargs:
            return self.min_pixels, self.max_pixels
        lo, hi = kwargs.get("min_pixels"), kwargs.get("max_pixels")
        if lo is None or hi is None:
            if lo is not None or hi is not None:
                _warn_once(
                    "mm_processor_kwargs has only one of min_pixels / max_pixels: transformers' Qwen2-VL "
                    "processor ignores it (it applies them only as a pair), so the zoom tool does too"
                )
            size = kwargs.get("size")
            if not isinstance(size, Mapping) or size.get("shortest_edge") is None or size.get("longest_edge") is None:
                return self.min_pixels, self.max_pixels
            lo, hi = size["shortest_edge"], size["longest_edge"]
        try:
            lo, hi = _pixels(lo), _pixels(hi)
        except ValueError:
            _warn_once(
                f"mm_processor_kwargs pixel budget {lo!r} / {hi!r} is not two positive integers; using the config's"
            )
            return self.min_pixels, self.max_pixels
        if lo > hi:
            _warn_once(f"mm_processor_kwargs min_pixels {lo} > max_pixels {hi}; using the config's")
            return self.min_pixels, self.max_pixels
        return lo, hi

    # ---------------------------------------------------------------------------------------------
    # execute
    # ---------------------------------------------------------------------------------------------

    @rollout_trace_op
    async def execute(
        self, instance_id: str, parameters: dict[str, Any], agent_data: Any = None, **kwargs
    ) -> tuple[ToolResponse, float, dict]:
        """Crop the requested region; see the module docstring. Never raises (except cancellation)."""
        record: dict[str, Any] = {
            "call_index": None,
            "image_index": None,
            "label": None,
            "bbox_model": None,
            "bbox_original": None,
            "root_image_index": None,
            "bbox_root": None,
            "crop_box": None,
            "crop_size": None,
            "image_size": None,
            "model_size": None,
            "valid": False,
            "error": "call did not complete",
        }
        try:
            # Synchronous part (before the first await): records keep the order the calls were made.
            extra_fields = self._extra_fields(agent_data)
            records = None
            if extra_fields is not None:
                records = extra_fields.get(CALLS_KEY)
                if not isinstance(records, list):
                    records = extra_fields[CALLS_KEY] = []
                record["call_index"] = len(records)
                records.append(record)
            plan = self._plan(parameters, agent_data, extra_fields, record)
            crop, result = await asyncio.get_running_loop().run_in_executor(None, self._render, plan)
        except _ToolError as exc:
            return self._fail(record, str(exc))
        except Exception as exc:  # anything else (Pillow, numpy, ...) also becomes an error text
            logger.warning("image_zoom_in_tool failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            return self._fail(record, f"could not zoom into the image ({type(exc).__name__}: {exc}).")

        record.update(result)
        record["valid"] = True
        record["error"] = None
        text = f"Zoomed into {_fmt_box(record['bbox_model'])} of image {record['image_index']}."
        metrics = {"valid": True, "image_index": record["image_index"], "crop_size": record["crop_size"]}
        return ToolResponse(image=[crop], text=text), 0.0, metrics

    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _extra_fields(agent_data: Any) -> dict | None:
        if agent_data is None:
            return None
        extra = getattr(agent_data, "extra_fields", None)
        if extra is None:
            try:
                agent_data.extra_fields = extra = {}
            except Exception:
                return None
        return extra if isinstance(extra, dict) else None

    @staticmethod
    def _fail(record: dict[str, Any], message: str) -> tuple[ToolResponse, float, dict]:
        text = "Error: " + message
        record["valid"] = False
        record["error"] = text
        return ToolResponse(text=text), 0.0, {"valid": False}

    def _plan(
        self, parameters: Any, agent_data: Any, extra_fields: dict | None, record: dict[str, Any]
    ) -> dict[str, Any]:
        """Validate the arguments and pick the image (cheap; runs in the event loop)."""
        if not isinstance(parameters, Mapping):
            record["bbox_model"] = _short_repr(parameters)
            raise _ToolError(
                f"the arguments must be a JSON object such as "
                f'{{"bbox_2d": [x1, y1, x2, y2], "image_index": 0}}, got {_short_repr(parameters)}.'
            )
        label = parameters.get("label")
        if label is not None:
            label = label if isinstance(label, str) else _short_repr(label)
            record["label"] = label[:_MAX_REPR]
        raw_bbox = parameters.get("bbox_2d")
        record["bbox_model"] = _short_repr(raw_bbox)

        image_data = getattr(agent_data, "image_data", None) if agent_data is not None else None
        if isinstance(image_data, Image.Image):
            image_data = [image_data]
        if not isinstance(image_data, (list, tuple)) or len(image_data) == 0:
            raise _ToolError("there is no image in this conversation to zoom into.")
        n_images = len(image_data)
        if extra_fields is not None:
            extra_fields[PROVENANCE_KEY] = provenance = image_provenance(list(image_data))
        else:
            provenance = image_provenance(list(image_data))

        limit = self.max_calls_per_trajectory
        if limit is not None and record["call_index"] is not None and record["call_index"] >= limit:
            raise _ToolError(
                f"the zoom-in limit of {self.max_calls_per_trajectory} calls is reached; "
                "answer with what you have seen."
            )

        index = parameters.get("image_index", None)
        if index is None:
            index = DEFAULT_IMAGE_INDEX
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_images:
            raise _ToolError(
                f"image_index must be an integer from 0 to {n_images - 1} "
                f"(there {'is' if n_images == 1 else 'are'} {n_images} image{'s' if n_images != 1 else ''} "
                f"in the conversation), got {_short_repr(index)}."
            )
        record["image_index"] = index
        if "bbox_2d" not in parameters or raw_bbox is None:
            raise _ToolError('missing required argument "bbox_2d": give the region as [x1, y1, x2, y2].')
        img = image_data[index]
        if not isinstance(img, Image.Image):
            raise _ToolError(f"image {index} is not a decoded image and cannot be zoomed into.")
        # A prompt image is cropped from its stored original when the agent loop keeps one
        # (medvr_agent: agent_data.medvr_originals); veRL's own copy is already downsized.
        # Decoding it is CPU work: _render does it, in the executor, never on the event loop.
        originals = getattr(agent_data, ORIGINALS_ATTR, None)
        return {
            "img": img,
            "originals": originals if provenance[index].get("box") is None else None,
            "index": index,
            "raw_bbox": raw_bbox,
            "provenance": provenance[index],
            "record": record,
            "budget": self.pixel_budget(agent_data),
        }

    def _render(self, plan: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]]:
        """Map, crop, convert and resize (CPU work; runs in the executor). Raises _ToolError."""
        index: int = plan["index"]
        record: dict[str, Any] = plan["record"]
        seen_w, seen_h = plan["img"].size  # the copy the processor turns into the model's input
        originals = plan.get("originals")
        source = originals.get(index) if originals is not None else None  # decoded once per prompt
        img: Image.Image = source or plan["img"]  # what is cropped: the original when kept
        width, height = img.size
        record["image_size"] = [int(width), int(height)]
        try:
            check_pixel_budget((width, height), self.max_image_pixels)
            check_pixel_budget((seen_w, seen_h), None)  # the copy the model sees must not be empty either
        except ImageTooLargeError as exc:
            raise _ToolError(f"image {index} is too large to zoom into: {exc}.") from None
        except EmptyImageError as exc:
            raise _ToolError(f"image {index} cannot be zoomed into: {exc}.") from None
        budget = plan.get("budget") or (self.min_pixels, self.max_pixels)
        try:
            model_w, model_h = self.model_size(seen_w, seen_h, budget)
        except (ValueError, ZeroDivisionError) as exc:
            raise _ToolError(f"image {index} cannot be zoomed into ({exc}).") from None
        record["model_size"] = [model_w, model_h]

        try:
            box_model = parse_bbox(plan["raw_bbox"], model_w, model_h)
        except BoxError as exc:
            raise _ToolError(
                f"invalid bbox_2d for image {index}, which you see as {model_w}x{model_h} pixels: "
                f"{str(exc).rstrip('. ')}. Give [x1, y1, x2, y2] with x1 < x2 and y1 < y2 inside the image."
            ) from None
        box_model = [float(v) for v in box_model]
        record["bbox_model"] = box_model
        box_orig = [float(v) for v in scale_box(tuple(box_model), (model_w, model_h), (width, height))]
        record["bbox_original"] = box_orig

        # Root-image mapping (provenance of image `index`).
        prov = plan["provenance"]
        if prov.get("box") is None:
            root, to_root = index, (lambda b: list(b))
        else:
            root = prov["root"]
            rx1, ry1, rx2, ry2 = prov["box"]
            sx, sy = (rx2 - rx1) / width, (ry2 - ry1) / height

            def to_root(b, rx1=rx1, ry1=ry1, sx=sx, sy=sy):
                return [rx1 + b[0] * sx, ry1 + b[1] * sy, rx1 + b[2] * sx, ry1 + b[3] * sy]

        record["root_image_index"] = root
        record["bbox_root"] = to_root(box_orig)

        # Integer box containing the float box (tolerant to float noise), clamped to the image.
        eps = 1e-6
        x1 = min(max(math.floor(box_orig[0] + eps), 0), width - 1)
        y1 = min(max(math.floor(box_orig[1] + eps), 0), height - 1)
        x2 = max(min(math.ceil(box_orig[2] - eps), width), x1 + 1)
        y2 = max(min(math.ceil(box_orig[3] - eps), height), y1 + 1)
        crop_w, crop_h = x2 - x1, y2 - y1
        if max(crop_w, crop_h) / min(crop_w, crop_h) > MAX_ASPECT_RATIO:
            raise _ToolError(
                f"the region {_fmt_box(box_model)} is too thin ({crop_w}x{crop_h} pixels in the full-resolution "
                f"image; the aspect ratio must be at most {MAX_ASPECT_RATIO}:1). Choose a wider box."
            )

        ensure_loaded(img)
        window = intensity_window(img) if is_high_bit_depth(img.mode) else None
        crop = crop_to_rgb8(img, (x1, y1, x2, y2), window)  # crop first: memory bounded by the region
        crop = self._fit(crop, budget[1])
        out_w, out_h = crop.size
        if max(out_w, out_h) / min(out_w, out_h) > MAX_ASPECT_RATIO:
            raise _ToolError(f"the region {_fmt_box(box_model)} is too thin; choose a wider box.")

        crop_root = to_root([x1, y1, x2, y2])
        crop_prov = {
            "root": root,
            "box": crop_root,
            "scale": [(crop_root[2] - crop_root[0]) / out_w, (crop_root[3] - crop_root[1]) / out_h],
            "parent": index,
        }
        crop.info[PROVENANCE_INFO_KEY] = crop_prov
        return crop, {"crop_box": [x1, y1, x2, y2], "crop_size": [out_w, out_h]}

    def _fit(self, crop: Image.Image, max_pixels: int | None = None) -> Image.Image:
        """Scale down to ``max_pixels`` (default: the config's), then up to a shorter side of
        ``min_crop_side`` (aspect kept)."""
        max_pixels = max_pixels or self.max_pixels
        w, h = crop.size
        if w * h > max_pixels:
            s = math.sqrt(max_pixels / (w * h))
            w, h = max(1, math.floor(w * s)), max(1, math.floor(h * s))
            crop = crop.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        if min(w, h) < self.min_crop_side:
            s = self.min_crop_side / min(w, h)
            w, h = max(self.min_crop_side, round(w * s)), max(self.min_crop_side, round(h * s))
            crop = crop.resize((w, h), Image.Resampling.BICUBIC)
        return crop
