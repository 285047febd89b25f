"""CPU tests of the zoom-in tool (medvr_verl.tools.ZoomInTool) and medical image I/O."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from verl.tools.schemas import ToolResponse
from verl.tools.tool_registry import initialize_tools_from_config

import medvr_verl
from medvr_verl.tools import ZoomInTool
from medvr_verl.tools.image_io import ImageTooLargeError, load_medical_image, to_8bit
from medvr_verl.tools.zoom import (
    CALLS_KEY,
    PROVENANCE_INFO_KEY,
    PROVENANCE_KEY,
    TOOL_NAME,
    model_input_size,
    to_rgb8,
)

YAML_PATH = Path(medvr_verl.__file__).resolve().parent.parent / "recipes" / "medvr" / "zoom_tool.yaml"

ALL_MODES = [
    "1",
    "L",
    "P",
    "LA",
    "PA",
    "La",
    "RGBa",
    "RGBA",
    "RGBX",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I;16",
    "I;16L",
    "I;16B",
    "I;16N",
    "I",
    "F",
    "RGB",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def make_agent_data(*images):
    """The parts of veRL's AgentData the tool reads (image_data, extra_fields)."""
    return SimpleNamespace(image_data=list(images), extra_fields={}, messages=[], metrics={})


def call(tool, params, agent_data):
    return asyncio.run(tool.execute("instance", params, agent_data=agent_data))


def zoom(tool, agent_data, params, *, append=True):
    """Execute like ToolAgentLoop: returned crops are appended to agent_data.image_data."""
    response, reward, metrics = call(tool, params, agent_data)
    assert isinstance(response, ToolResponse) and reward == 0.0 and isinstance(metrics, dict)
    if append and response.image:
        agent_data.image_data.extend(response.image)
    return response, agent_data.extra_fields[CALLS_KEY][-1]


def pattern_rgb(width, height):
    """RGB image whose pixel (x, y) encodes x and y: R = x % 256, G = y % 256, B = 16*(x//256) + y//256."""
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    arr = np.stack([x % 256, y % 256, 16 * (x // 256) + y // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def image_of_mode(mode, size=(40, 30)):
    w, h = size
    ramp = (np.arange(w * h).reshape(h, w) % 251).astype(np.uint8)
    if mode == "1":
        return Image.fromarray(ramp > 120).convert("1")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = (np.arange(w * h).reshape(h, w) * 37 % 4096).astype(np.uint16)
        dtype = ">u2" if mode == "I;16B" else "<u2" if mode in ("I;16", "I;16L") else "=u2"
        return Image.frombytes(mode, size, arr.astype(dtype).tobytes())
    if mode == "I":
        return Image.fromarray((np.arange(w * h).reshape(h, w) * 1000 - 50000).astype(np.int32))
    if mode == "F":
        arr = np.linspace(-3.0, 7.0, w * h, dtype=np.float32).reshape(h, w)
        arr[0, 0], arr[0, 1], arr[0, 2] = np.nan, np.inf, -np.inf
        return Image.fromarray(arr)
    if mode == "P":
        img = Image.fromarray(ramp).convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        return img
    base = Image.fromarray(np.stack([ramp, 255 - ramp, ramp // 2, 200 - ramp // 2], -1).astype(np.uint8), "RGBA")
    if mode in ("RGBA", "RGBa", "CMYK"):
        return Image.frombytes(mode, size, base.tobytes())
    if mode in ("LA", "La"):
        return Image.frombytes(mode, size, np.stack([ramp, 200 - ramp // 2], -1).astype(np.uint8).tobytes())
    if mode == "PA":
        return image_of_mode("P", size).convert("PA")
    return base.convert("RGB").convert(mode)


def png_header_only(width, height):
    """A PNG whose header claims width x height but holds no pixel data (a decompression bomb stand-in)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tool():
    tools = initialize_tools_from_config(str(YAML_PATH))
    assert len(tools) == 1
    return tools[0]


# --------------------------------------------------------------------------------------------------
# loading, schema, smart_resize
# --------------------------------------------------------------------------------------------------


def test_yaml_loads_through_verl_registry(tool):
    assert isinstance(tool, ZoomInTool)
    assert tool.name == TOOL_NAME == "image_zoom_in_tool"
    assert (tool.patch_size, tool.merge_size, tool.factor) == (14, 2, 28)
    assert (tool.min_pixels, tool.max_pixels, tool.min_crop_side) == (3136, 12845056, 28)
    schema = tool.tool_schema.model_dump(exclude_unset=True, exclude_none=True)
    params = schema["function"]["parameters"]
    assert params["required"] == ["bbox_2d"]
    assert params["properties"]["bbox_2d"]["type"] == "array"
    assert params["properties"]["image_index"]["type"] == "integer"
    assert "Default 0" in params["properties"]["image_index"]["description"]
    assert params["properties"]["label"]["type"] == "string"
    # create/release follow BaseTool; the tool is stateless.
    instance_id, response = asyncio.run(tool.create())
    assert isinstance(instance_id, str) and response.is_empty()
    asyncio.run(tool.release(instance_id))


def test_bad_config_is_rejected_at_construction():
    with pytest.raises(ValueError):
        ZoomInTool(config={"type": "native", "min_crop_side": 0}, tool_schema=None)
    with pytest.raises(ValueError):
        ZoomInTool(config={"type": "native", "min_pixels": 10_000, "max_pixels": 100}, tool_schema=None)
    with pytest.raises(ValueError):
        ZoomInTool(config={"type": "native", "max_image_pixels": -5}, tool_schema=None)


def _transformers_smart_resize():
    for module in (
        "transformers.models.qwen2_vl.image_processing_qwen2_vl",
        "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
    ):
        try:
            return __import__(module, fromlist=["smart_resize"]).smart_resize
        except Exception:
            continue
    return None


def test_model_input_size_matches_transformers_smart_resize():
    smart_resize = _transformers_smart_resize()
    if smart_resize is None:
        pytest.skip("transformers' Qwen2-VL smart_resize is not importable")
    rng = np.random.default_rng(0)
    sizes = [
        (1000, 600),
        (28, 28),
        (1, 1),
        (13, 27),
        (56, 56),
        (4096, 4096),
        (5000, 3000),
        (9000, 9000),
        (199 * 10, 10),
        (100, 20000),
        (641, 479),
        (27, 2000),
    ]
    sizes += [tuple(int(v) for v in rng.integers(1, 6000, size=2)) for _ in range(300)]
    configs = [(28, 3136, 12845056), (28, 3136, 1003520), (28, 256 * 28 * 28, 1280 * 28 * 28), (32, 1024, 65536)]
    for factor, lo, hi in configs:
        for w, h in sizes:
            try:
                expected = smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi)
            except ValueError:
                with pytest.raises(ValueError):
                    model_input_size(w, h, factor=factor, min_pixels=lo, max_pixels=hi)
                continue
            got = model_input_size(w, h, factor=factor, min_pixels=lo, max_pixels=hi)
            assert got == (expected[1], expected[0]), (w, h, factor, lo, hi)


def test_model_input_size_known_values():
    assert model_input_size(1000, 600) == (1008, 588)
    assert model_input_size(10, 10) == (56, 56)  # min_pixels
    w, h = model_input_size(8000, 8000)
    assert w * h <= 12845056 and w % 28 == 0 and h % 28 == 0
    with pytest.raises(ValueError):
        model_input_size(201, 1)


# --------------------------------------------------------------------------------------------------
# crop geometry
# --------------------------------------------------------------------------------------------------


def test_crop_maps_model_box_to_original_pixels(tool):
    original = pattern_rgb(1000, 600)
    ad = make_agent_data(original)
    mw, mh = tool.model_size(1000, 600)
    assert (mw, mh) == (1008, 588)
    sx, sy = 1000 / mw, 600 / mh
    box_model = [100 / sx, 60 / sy, 600 / sx, 360 / sy]  # = [100.8, 58.8, 604.8, 352.8]
    response, record = zoom(tool, ad, {"bbox_2d": box_model, "label": "lesion"})
    crop = response.image[0]
    assert crop.mode == "RGB" and crop.size == (500, 300)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(original.crop((100, 60, 600, 360))))
    assert response.text.startswith("Zoomed into [100.8, 58.8, 604.8, 352.8] of image 0")
    assert record["valid"] is True and record["error"] is None
    assert record["image_index"] == 0 and record["root_image_index"] == 0
    assert record["label"] == "lesion"
    assert record["image_size"] == [1000, 600] and record["model_size"] == [1008, 588]
    np.testing.assert_allclose(record["bbox_model"], box_model)
    np.testing.assert_allclose(record["bbox_original"], [100, 60, 600, 360], atol=1e-9)
    np.testing.assert_allclose(record["bbox_root"], [100, 60, 600, 360], atol=1e-9)
    assert record["crop_box"] == [100, 60, 600, 360] and record["crop_size"] == [500, 300]
    assert ad.extra_fields[PROVENANCE_KEY] == [{"root": 0, "box": None}]
    assert crop.info[PROVENANCE_INFO_KEY]["box"] == [100, 60, 600, 360]


def test_crop_rounds_outward_and_clamps(tool):
    original = pattern_rgb(1000, 600)
    ad = make_agent_data(original)
    # Partly outside the model's 1008x588 view, reversed corners, fractional original coordinates.
    response, record = zoom(tool, ad, {"bbox_2d": [1100, 700, 950.3, 500.5]})
    assert record["valid"], record["error"]
    np.testing.assert_allclose(record["bbox_model"], [950.3, 500.5, 1008, 588])
    x1, y1, x2, y2 = record["bbox_original"]
    assert x2 == pytest.approx(1000) and y2 == pytest.approx(600)
    assert record["crop_box"] == [math.floor(x1), math.floor(y1), 1000, 600]
    cx1, cy1, cx2, cy2 = record["crop_box"]
    crop = response.image[0]
    assert crop.size == (max(cx2 - cx1, 28), max(cy2 - cy1, 28)) or min(crop.size) >= 28
    if min(cx2 - cx1, cy2 - cy1) >= 28:
        np.testing.assert_array_equal(np.asarray(crop), np.asarray(original.crop(tuple(record["crop_box"]))))


def test_tiny_crop_is_upsampled_keeping_aspect(tool):
    ad = make_agent_data(pattern_rgb(1000, 600))
    response, record = zoom(tool, ad, {"bbox_2d": [10, 20, 15, 30]})
    assert record["valid"], record["error"]
    cx1, cy1, cx2, cy2 = record["crop_box"]
    cw, ch = cx2 - cx1, cy2 - cy1
    assert min(cw, ch) < 28
    w, h = response.image[0].size
    assert min(w, h) == 28
    assert w / h == pytest.approx(cw / ch, rel=0.05)
    assert record["crop_size"] == [w, h]


def test_large_crop_is_capped_at_max_pixels():
    max_pixels = 28 * 28 * 16
    small = ZoomInTool(config={"type": "native", "max_pixels": max_pixels}, tool_schema=None)
    original = pattern_rgb(1000, 600)
    ad = make_agent_data(original)
    mw, mh = small.model_size(1000, 600)
    assert mw * mh <= max_pixels
    response, record = zoom(small, ad, {"bbox_2d": [0, 0, mw, mh]})
    assert record["valid"], record["error"]
    assert record["crop_box"] == [0, 0, 1000, 600]
    w, h = response.image[0].size
    assert w * h <= max_pixels and min(w, h) >= 28
    assert w / h == pytest.approx(1000 / 600, rel=0.03)


def test_too_thin_region_is_refused(tool):
    ad = make_agent_data(pattern_rgb(5000, 100))
    mw, _ = tool.model_size(5000, 100)
    response, record = zoom(tool, ad, {"bbox_2d": [0, 0, mw, 10]})  # ~5000 x 9 original pixels
    assert response.text.startswith("Error:") and "too thin" in response.text and response.image is None
    assert record["valid"] is False


# --------------------------------------------------------------------------------------------------
# image modes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_to_rgb8_every_mode(mode):
    img = image_of_mode(mode)
    assert img.mode == mode
    out = to_rgb8(img)
    assert out.mode == "RGB" and out.size == img.size
    assert np.asarray(out).dtype == np.uint8


def test_to_rgb8_values():
    # alpha is composited on black
    rgba = Image.new("RGBA", (2, 1), (200, 100, 50, 0))
    rgba.putpixel((1, 0), (200, 100, 50, 255))
    assert np.asarray(to_rgb8(rgba)).tolist() == [[[0, 0, 0], [200, 100, 50]]]
    la = Image.new("LA", (1, 1), (200, 128))
    assert to_8bit(la).mode == "L" and to_8bit(la).getpixel((0, 0)) == round(200 * 128 / 255)
    # 1-bit: 0 / 255
    assert to_rgb8(Image.new("1", (1, 1), 1)).getpixel((0, 0)) == (255, 255, 255)
    # 16-bit: min-max window
    arr = np.array([[1000, 2000, 3000]], dtype=np.uint16)
    out = np.asarray(to_rgb8(Image.fromarray(arr)))[..., 0]
    assert out.tolist() == [[0, 128, 255]]
    # explicit window (the tool passes the full image's)
    out = np.asarray(to_rgb8(Image.fromarray(arr), window=(0.0, 4000.0)))[..., 0]
    assert out.tolist() == [[64, 128, 191]]
    # float with NaN / inf
    f = Image.fromarray(np.array([[np.nan, np.inf, -np.inf, 0.0, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb8(f))[..., 0].tolist() == [[0, 255, 0, 0, 255]]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_constant_high_bit_depth_image_does_not_divide_by_zero(mode, tool):
    size = (3, 2)
    if mode in ("I;16", "I;16B"):
        img = Image.frombytes(mode, size, np.full(6, 1234, dtype=">u2" if mode == "I;16B" else "<u2").tobytes())
    elif mode == "I":
        img = Image.fromarray(np.full((2, 3), 77, dtype=np.int32))
    else:
        img = Image.fromarray(np.full((2, 3), 0.5, dtype=np.float32))
    out = to_rgb8(img)
    assert out.mode == "RGB" and np.asarray(out).max() == 0
    response, record = zoom(tool, make_agent_data(img), {"bbox_2d": [0, 0, 56, 56]})
    assert record["valid"], record["error"]
    assert response.image[0].mode == "RGB"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_tool_returns_rgb_crop_for_every_mode(mode, tool):
    img = image_of_mode(mode, (120, 90))
    ad = make_agent_data(img)
    mw, mh = tool.model_size(*img.size)
    response, record = zoom(tool, ad, {"bbox_2d": [mw * 0.25, mh * 0.25, mw * 0.75, mh * 0.75]})
    assert record["valid"], record["error"]
    crop = response.image[0]
    assert crop.mode == "RGB" and np.asarray(crop).dtype == np.uint8
    assert img.mode == mode  # the source image is untouched


def test_16bit_crop_keeps_the_full_image_window(tool):
    arr = (np.arange(200)[None, :].repeat(100, 0) * 20).astype(np.uint16)  # 0 .. 3980 along x
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    ad = make_agent_data(img)
    mw, mh = tool.model_size(200, 100)
    response, record = zoom(tool, ad, {"bbox_2d": [0, 0, mw / 2, mh]})
    x1, y1, x2, y2 = record["crop_box"]
    expected = np.rint(arr[y1:y2, x1:x2] * (255.0 / 3980)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(response.image[0])[..., 0], expected)


# --------------------------------------------------------------------------------------------------
# bad arguments: error text, invalid record, never an exception
# --------------------------------------------------------------------------------------------------

BAD_PARAMS = [
    ({}, "missing required argument"),
    ({"bbox_2d": None}, "missing required argument"),
    ({"bbox_2d": [1, 2, 3]}, "invalid bbox_2d"),
    ({"bbox_2d": [1, 2, 3, 4, 5]}, "invalid bbox_2d"),
    ({"bbox_2d": [float("nan"), 0, 10, 10]}, "invalid bbox_2d"),
    ({"bbox_2d": [0, 0, float("inf"), 10]}, "invalid bbox_2d"),
    ({"bbox_2d": ["a", "b", "c", "d"]}, "invalid bbox_2d"),
    ({"bbox_2d": [True, 0, 10, 10]}, "invalid bbox_2d"),
    ({"bbox_2d": [5000, 5000, 6000, 6000]}, "invalid bbox_2d"),
    ({"bbox_2d": [10, 10, 10, 50]}, "invalid bbox_2d"),
    ({"bbox_2d": "x" * 100_000}, "invalid bbox_2d"),
    ({"bbox_2d": {"x1": 0}}, "invalid bbox_2d"),
    ({"bbox_2d": [[[1, 2, 3, 4]]]}, "invalid bbox_2d"),
    ({"bbox_2d": [0, 0, 10**400, 10]}, "invalid bbox_2d"),
    ({"bbox_2d": [0, 0, 10, 10], "image_index": True}, "image_index"),
    ({"bbox_2d": [0, 0, 10, 10], "image_index": -1}, "image_index"),
    ({"bbox_2d": [0, 0, 10, 10], "image_index": 1}, "image_index"),
    ({"bbox_2d": [0, 0, 10, 10], "image_index": 1.0}, "image_index"),
    ({"bbox_2d": [0, 0, 10, 10], "image_index": "0"}, "image_index"),
    ({"bbox_2d": [0, 0, 10, 10], "image_index": 10**30}, "image_index"),
    ([0, 0, 10, 10], "JSON object"),
    ("bbox_2d", "JSON object"),
    (None, "JSON object"),
]


@pytest.mark.parametrize("params,needle", BAD_PARAMS, ids=[str(i) for i in range(len(BAD_PARAMS))])
def test_bad_arguments_give_error_text_and_invalid_record(params, needle, tool):
    ad = make_agent_data(pattern_rgb(200, 100))
    response, reward, metrics = call(tool, params, ad)
    assert response.text.startswith("Error: ") and needle in response.text, response.text
    assert response.image is None and reward == 0.0 and metrics["valid"] is False
    (record,) = ad.extra_fields[CALLS_KEY]
    assert record["valid"] is False and record["error"] == response.text
    assert record["bbox_original"] is None and record["bbox_root"] is None
    assert isinstance(record["bbox_model"], str) and len(record["bbox_model"]) <= 200


def test_extra_parameters_are_ignored(tool):
    ad = make_agent_data(pattern_rgb(200, 100))
    response, record = zoom(tool, ad, {"bbox_2d": "[0, 0, 56, 56]", "zoom": 3, "thought": {"a": 1}})
    assert record["valid"] and response.image


@pytest.mark.parametrize(
    "agent_data",
    [
        None,
        SimpleNamespace(),
        SimpleNamespace(image_data=None, extra_fields={}),
        SimpleNamespace(image_data=[], extra_fields={}),
        SimpleNamespace(image_data=["/not/an/image.png"], extra_fields={}),
    ],
)
def test_missing_images_give_error_text(agent_data, tool):
    response, reward, _ = call(tool, {"bbox_2d": [0, 0, 10, 10]}, agent_data)
    assert response.text.startswith("Error: ") and response.image is None and reward == 0.0
    if getattr(agent_data, "extra_fields", None) is not None:
        assert agent_data.extra_fields[CALLS_KEY][-1]["valid"] is False


def test_image_decode_failure_gives_error_text(tool, tmp_path):
    buf = io.BytesIO()
    pattern_rgb(300, 200).save(buf, format="PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    lazy = Image.open(path)  # header only; decoding fails later
    ad = make_agent_data(lazy)
    response, record = zoom(tool, ad, {"bbox_2d": [0, 0, 100, 100]})
    assert response.text.startswith("Error: could not zoom") and response.image is None
    assert record["valid"] is False and record["image_size"] == [300, 200]


def test_max_calls_per_trajectory():
    limited = ZoomInTool(config={"type": "native", "max_calls_per_trajectory": 2}, tool_schema=None)
    ad = make_agent_data(pattern_rgb(200, 100))
    results = [zoom(limited, ad, {"bbox_2d": [0, 0, 56, 56]}, append=False)[1]["valid"] for _ in range(3)]
    assert results == [True, True, False]
    assert "limit of 2" in ad.extra_fields[CALLS_KEY][-1]["error"]


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
four_numbers = st.lists(
    st.one_of(st.integers(-100, 400), st.floats(-100, 400, allow_nan=False)), min_size=4, max_size=4
)
param_dicts = st.dictionaries(
    st.sampled_from(["bbox_2d", "image_index", "label", "extra"]) | st.text(max_size=8),
    st.one_of(json_value, four_numbers, st.integers(-3, 3)),
    max_size=5,
)


likely_valid = st.fixed_dictionaries(
    {"bbox_2d": four_numbers}, optional={"image_index": st.integers(-1, 3), "label": json_value, "extra": json_value}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.one_of(likely_valid, param_dicts, json_value))
def test_fuzz_execute_never_raises(params, tool):
    ad = make_agent_data(pattern_rgb(120, 80), Image.new("I;16", (30, 60), 7))
    response, reward, _ = call(tool, params, ad)
    assert isinstance(response, ToolResponse) and reward == 0.0
    (record,) = ad.extra_fields[CALLS_KEY]
    if record["valid"]:
        assert response.image and response.image[0].mode == "RGB" and min(response.image[0].size) >= 28
        assert record["error"] is None and len(record["bbox_root"]) == 4
    else:
        assert response.image is None and response.text.startswith("Error: ")
        assert record["error"] == response.text


# --------------------------------------------------------------------------------------------------
# image selection and provenance
# --------------------------------------------------------------------------------------------------


def test_image_index_selects_the_image(tool):
    first, second = Image.new("RGB", (300, 200), (255, 0, 0)), Image.new("RGB", (640, 480), (0, 0, 255))
    ad = make_agent_data(first, second)
    response, record = zoom(tool, ad, {"bbox_2d": [0, 0, 100, 100], "image_index": 1})
    assert response.image[0].getpixel((5, 5)) == (0, 0, 255)
    assert record["image_index"] == 1 and record["root_image_index"] == 1
    assert record["image_size"] == [640, 480] and record["model_size"] == list(tool.model_size(640, 480))
    response, record = zoom(tool, ad, {"bbox_2d": [0, 0, 100, 100]})  # default: image 0
    assert response.image[0].getpixel((5, 5)) == (255, 0, 0) and record["image_index"] == 0
    assert "of image 0" in response.text


def test_crop_of_crop_maps_back_to_the_root_image(tool):
    root = pattern_rgb(1000, 600)
    other = Image.new("RGB", (50, 50))
    ad = make_agent_data(other, root)  # two prompt images; zoom into the second
    sx, sy = 1000 / 1008, 600 / 588
    _, r1 = zoom(tool, ad, {"bbox_2d": [200 / sx, 100 / sy, 520 / sx, 340 / sy], "image_index": 1})
    assert r1["crop_box"] == [200, 100, 520, 340]
    crop1 = ad.image_data[2]
    assert crop1.size == (320, 240)
    # Crop 1 is image 2; zoom into it (model sees it as smart_resize(320, 240)).
    mw, mh = tool.model_size(320, 240)
    box_in_crop = [40, 20, 120, 100]  # crop-1 pixels
    box_model = [
        box_in_crop[0] * mw / 320,
        box_in_crop[1] * mh / 240,
        box_in_crop[2] * mw / 320,
        box_in_crop[3] * mh / 240,
    ]
    response, r2 = zoom(tool, ad, {"bbox_2d": box_model, "image_index": 2})
    assert r2["valid"], r2["error"]
    assert r2["image_index"] == 2 and r2["root_image_index"] == 1
    np.testing.assert_allclose(r2["bbox_original"], box_in_crop, atol=1e-9)
    np.testing.assert_allclose(r2["bbox_root"], [240, 120, 320, 200], atol=1e-9)
    np.testing.assert_array_equal(np.asarray(response.image[0]), np.asarray(root.crop((240, 120, 320, 200))))
    prov = ad.extra_fields[PROVENANCE_KEY]
    assert prov[:2] == [{"root": 0, "box": None}, {"root": 1, "box": None}]
    assert prov[2]["root"] == 1 and prov[2]["box"] == [200, 100, 520, 340] and prov[2]["parent"] == 1

    # A third level through an upsampled crop: scale != 1.
    _, r3 = zoom(tool, ad, {"bbox_2d": [0, 0, 10, 10], "image_index": 3})  # tiny -> upsampled
    crop3 = ad.image_data[4]
    p3 = crop3.info[PROVENANCE_INFO_KEY]
    assert p3["root"] == 1 and p3["parent"] == 3 and p3["scale"][0] < 1
    mw3, mh3 = tool.model_size(*crop3.size)
    _, r4 = zoom(tool, ad, {"bbox_2d": [0, 0, mw3, mh3], "image_index": 4})  # whole crop 3
    assert r4["root_image_index"] == 1
    np.testing.assert_allclose(r4["bbox_root"], p3["box"], atol=1e-6)
    np.testing.assert_allclose(
        p3["box"],
        [240 + r3["crop_box"][0], 120 + r3["crop_box"][1], 240 + r3["crop_box"][2], 120 + r3["crop_box"][3]],
        atol=1e-9,
    )
    # Rebuilt at every call from the images present then: crop 5 (from r4) is not listed yet.
    assert [p["root"] for p in ad.extra_fields[PROVENANCE_KEY]] == [0, 1, 1, 1, 1]
    zoom(tool, ad, {"bbox_2d": [0, 0, 56, 56], "image_index": 0})
    assert [p["root"] for p in ad.extra_fields[PROVENANCE_KEY]] == [0, 1, 1, 1, 1, 1]


def test_parallel_calls_keep_call_order_and_provenance(tool):
    ad = make_agent_data(pattern_rgb(1000, 600))

    async def turn():
        # Like ToolAgentLoop: gather the calls, then append the images in call order.
        results = await asyncio.gather(
            tool.execute("a", {"bbox_2d": [0, 0, 800, 500]}, agent_data=ad),  # big crop (slower)
            tool.execute("b", {"bbox_2d": [0, 0, 1, 1]}, agent_data=ad),  # 1 px: upsampled to 28
            tool.execute("c", {"bbox_2d": "oops"}, agent_data=ad),
            tool.execute("d", {"bbox_2d": [500, 300, 600, 400]}, agent_data=ad),
        )
        for response, _, _ in results:
            ad.image_data.extend(response.image or [])
        return results

    results = asyncio.run(turn())
    records = ad.extra_fields[CALLS_KEY]
    assert [r["call_index"] for r in records] == [0, 1, 2, 3]
    assert [r["valid"] for r in records] == [True, True, False, True]
    assert [r["error"] is None for r in records] == [True, True, False, True]
    zoom(tool, ad, {"bbox_2d": [0, 0, 56, 56]})
    prov = ad.extra_fields[PROVENANCE_KEY]
    assert len(prov) == 4
    for img_index, rec in zip((1, 2, 3), (records[0], records[1], records[3])):
        assert prov[img_index]["box"] == [float(v) for v in rec["crop_box"]]
    assert results[2][0].text.startswith("Error:")


# --------------------------------------------------------------------------------------------------
# decompression bombs
# --------------------------------------------------------------------------------------------------


def test_decompression_bomb_refused_without_decoding(tmp_path):
    guarded = ZoomInTool(config={"type": "native", "max_image_pixels": 1_000_000}, tool_schema=None)
    path = tmp_path / "big.png"
    Image.new("1", (2000, 2000)).save(path)
    lazy = Image.open(path)

    def no_load(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    lazy.load = no_load
    ad = make_agent_data(lazy)
    response, record = zoom(guarded, ad, {"bbox_2d": [0, 0, 100, 100]})
    assert response.text.startswith("Error: image 0 is too large") and response.image is None
    assert record["valid"] is False and record["image_size"] == [2000, 2000]


def test_default_limit_follows_pillow(monkeypatch, tool):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    default = ZoomInTool(config={"type": "native"}, tool_schema=None)
    response, _ = zoom(default, make_agent_data(Image.new("RGB", (101, 100))), {"bbox_2d": [0, 0, 50, 50]})
    assert "too large" in response.text
    response, _ = zoom(default, make_agent_data(Image.new("RGB", (100, 100))), {"bbox_2d": [0, 0, 50, 50]})
    assert response.image
    unlimited = ZoomInTool(config={"type": "native", "max_image_pixels": None}, tool_schema=None)
    response, _ = zoom(unlimited, make_agent_data(Image.new("RGB", (101, 100))), {"bbox_2d": [0, 0, 50, 50]})
    assert response.image


def test_load_medical_image_refuses_bombs():
    bomb = png_header_only(40_000, 40_000)
    with pytest.raises(ImageTooLargeError):
        load_medical_image(bomb)
    with pytest.raises(ImageTooLargeError):
        load_medical_image(png_header_only(2000, 2000), max_image_pixels=1_000_000)


# --------------------------------------------------------------------------------------------------
# load_medical_image: PIL formats and DICOM
# --------------------------------------------------------------------------------------------------


def test_load_png_16bit_and_rgba(tmp_path):
    arr = np.array([[100, 200], [400, 500]], dtype=np.uint16)
    path = tmp_path / "ct16.png"
    Image.fromarray(arr).save(path)
    img = load_medical_image(path)
    assert img.mode == "L" and np.asarray(img).tolist() == [[0, 64], [191, 255]]
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (255, 255, 255, 0)).save(buf, format="PNG")
    img = load_medical_image(buf.getvalue())
    assert img.mode == "RGB" and np.asarray(img).max() == 0


def _dicom(name):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} unavailable")
    return path


def test_dicom_ct_rescale_and_minmax():
    path = _dicom("CT_small.dcm")
    img = load_medical_image(path)
    assert img.mode == "L" and img.size == (128, 128)
    arr = np.asarray(img)
    assert arr.min() == 0 and arr.max() == 255
    import pydicom

    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.rint((hu - hu.min()) * 255.0 / (hu.max() - hu.min())).astype(np.uint8)
    np.testing.assert_array_equal(arr, expected)
    # bytes and file objects work too
    data = Path(path).read_bytes()
    np.testing.assert_array_equal(np.asarray(load_medical_image(data)), arr)
    np.testing.assert_array_equal(np.asarray(load_medical_image(io.BytesIO(data))), arr)


def test_dicom_window_and_monochrome1(tmp_path):
    path = _dicom("MR_small.dcm")
    import pydicom

    ds = pydicom.dcmread(path)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    raw = ds.pixel_array.astype(np.float64)
    expected = np.rint(np.clip(((raw - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0, 255)).astype(np.uint8)
    img = load_medical_image(path)
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), expected)
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = tmp_path / "mono1.dcm"
    ds.save_as(out)
    np.testing.assert_array_equal(np.asarray(load_medical_image(out)), 255 - expected)


@pytest.mark.parametrize("name", ["examples_palette.dcm", "examples_rgb_color.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_dicom_color(name):
    img = load_medical_image(_dicom(name))
    assert img.mode == "RGB" and np.asarray(img).dtype == np.uint8
    assert np.asarray(img).std() > 0


def test_dicom_multiframe_and_errors():
    path = _dicom("rtdose.dcm")
    frames = [np.asarray(load_medical_image(path, frame=i)) for i in (0, 5)]
    assert frames[0].shape == (10, 10)
    with pytest.raises(ValueError):
        load_medical_image(path, frame=99)
    with pytest.raises(ImageTooLargeError):
        load_medical_image(_dicom("CT_small.dcm"), max_image_pixels=100)


def test_dicom_goes_through_the_tool(tool):
    img = load_medical_image(_dicom("CT_small.dcm"))
    response, record = zoom(tool, make_agent_data(img), {"bbox_2d": [10, 10, 60, 60]})
    assert record["valid"] and response.image[0].mode == "RGB"


def test_missing_pydicom_gives_install_hint(monkeypatch):
    path = _dicom("CT_small.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match="pip install pydicom"):
        load_medical_image(path)


# --------------------------------------------------------------------------------------------------
# Bounded memory and degenerate images (issue 10)
# --------------------------------------------------------------------------------------------------


def _reference_to_8bit(img, window=None):
    """The whole-array computation the block-wise code must reproduce pixel for pixel."""
    from medvr_verl.tools import image_io

    if not image_io.is_high_bit_depth(img.mode):
        return to_8bit(img, window)
    arr = np.asarray(img)
    if window is None:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        window = (float(finite.min()), float(finite.max())) if finite.size else None
    lo, hi = window if window is not None else (None, None)
    out = np.zeros(arr.shape, dtype=np.uint8)
    if lo is not None and hi > lo:
        a = np.nan_to_num(arr.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
        out[...] = np.rint(np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)
    return Image.fromarray(out)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(ALL_MODES),
    st.integers(1, 40),
    st.integers(1, 30),
    st.data(),
    st.integers(1, 64),
)
def test_crop_to_rgb8_equals_crop_then_convert_in_small_blocks(mode, w, h, data, block):
    """Block-wise windowing/compositing (any block size) gives the pixels of the whole-array path."""
    from medvr_verl.tools import image_io

    img = image_of_mode(mode, (40, 30))
    x1 = data.draw(st.integers(0, 40 - w))
    y1 = data.draw(st.integers(0, 30 - h))
    box = (x1, y1, x1 + w, y1 + h)
    window = image_io.intensity_window(img) if image_io.is_high_bit_depth(mode) else None
    old = image_io._BLOCK_PIXELS
    image_io._BLOCK_PIXELS = block
    try:
        got = image_io.crop_to_rgb8(img, box, window)
        whole = to_8bit(img)
        if window is not None:
            assert image_io.intensity_window(img) == window
    finally:
        image_io._BLOCK_PIXELS = old
    expected = to_rgb8(_reference_to_8bit(img.crop(box), window) if window else img.crop(box))
    assert got.mode == "RGB" and got.size == (w, h)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(_reference_to_8bit(img)))


@pytest.mark.parametrize("size", [(0, 10), (10, 0)])
def test_empty_image_gives_a_clear_error(size, tool):
    response, reward, _ = call(tool, {"bbox_2d": [0, 0, 5, 5]}, make_agent_data(Image.new("L", size)))
    assert response.text.startswith("Error: ") and "empty" in response.text
    assert "division" not in response.text and response.image is None and reward == 0.0


def test_model_input_size_refuses_empty_sizes():
    for w, h in ((0, 10), (10, 0), (0, 0), (math.nan, 5)):
        with pytest.raises(ValueError, match="empty"):
            model_input_size(w, h)


# --------------------------------------------------------------------------------------------------
# pixel budget (issue 13 item 9): the agent loop's mm_processor_kwargs pair governs mapping and crops
# --------------------------------------------------------------------------------------------------

BUDGET = {"min_pixels": 3136, "max_pixels": 28 * 28 * 64}  # 64 visual tokens


def _budget_data(*images, kwargs=BUDGET):
    ad = make_agent_data(*images)
    ad.mm_processor_kwargs = dict(kwargs) if kwargs is not None else None
    return ad


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (None, (3136, 12845056)),
        ({}, (3136, 12845056)),
        (BUDGET, (3136, 28 * 28 * 64)),
        ({"min_pixels": 6272.0, "max_pixels": 100352.0}, (6272, 100352)),
        ({"size": {"shortest_edge": 3136, "longest_edge": 200704}}, (3136, 200704)),
        # transformers applies min/max only as a pair: a lone max_pixels changes nothing
        ({"max_pixels": 100352}, (3136, 12845056)),
        ({"min_pixels": 3136}, (3136, 12845056)),
        # malformed pairs: the processor would refuse them; the tool keeps its config
        ({"min_pixels": 0, "max_pixels": 100352}, (3136, 12845056)),
        ({"min_pixels": 200704, "max_pixels": 100352}, (3136, 12845056)),
        ({"min_pixels": "3136", "max_pixels": 100352}, (3136, 12845056)),
        ({"min_pixels": True, "max_pixels": 100352}, (3136, 12845056)),
    ],
)
def test_pixel_budget_follows_the_processor_kwargs(tool, kwargs, expected):
    assert tool.pixel_budget(_budget_data(kwargs=kwargs)) == expected
    assert tool.pixel_budget(None) == (3136, 12845056)


def test_budget_pair_sets_the_mapping_and_caps_the_crop(tool):
    original = pattern_rgb(1000, 600)
    ad = _budget_data(original)
    mw, mh = tool.model_size(1000, 600, (BUDGET["min_pixels"], BUDGET["max_pixels"]))
    assert mw * mh <= BUDGET["max_pixels"] and (mw, mh) != tool.model_size(1000, 600)
    response, record = zoom(tool, ad, {"bbox_2d": [0, 0, mw, mh]})
    assert record["valid"], record["error"]
    assert record["model_size"] == [mw, mh] and record["crop_box"] == [0, 0, 1000, 600]
    w, h = response.image[0].size
    assert w * h <= BUDGET["max_pixels"]
    # a box in the budgeted view maps to the same original pixels as in the full view
    sx, sy = 1000 / mw, 600 / mh
    _, record = zoom(tool, _budget_data(original), {"bbox_2d": [100 / sx, 60 / sy, 600 / sx, 360 / sy]})
    assert record["crop_box"] == [100, 60, 600, 360]


def test_tool_budget_equals_the_processors_view(tool, tiny_model_path):
    """Under the recipe's mm_processor_kwargs the processor's image grid is the tool's model size, and
    a crop of any region never exceeds the budget's visual tokens."""
    from verl.utils import hf_processor
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    processor = hf_processor(str(tiny_model_path))
    kwargs = {"min_pixels": 3136, "max_pixels": 28 * 28 * 300}
    budget = (kwargs["min_pixels"], kwargs["max_pixels"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def grid(image):
        out = build_multimodal_processor_inputs(processor, text=[text], images=[image], mm_processor_kwargs=kwargs)
        t, gh, gw = out["image_grid_thw"][0].tolist()
        return gw * 14, gh * 14  # (w, h) in pixels the model sees

    for size in [(1000, 600), (4000, 3000), (300, 7000), (90, 60)]:
        image = pattern_rgb(*size)
        assert grid(image) == tool.model_size(*size, budget), size
        ad = _budget_data(image, kwargs=kwargs)
        mw, mh = tool.model_size(*size, budget)
        response, record = zoom(tool, ad, {"bbox_2d": [0, 0, mw, mh]})
        assert record["valid"], record["error"]
        cw, ch = grid(response.image[0])
        assert cw * ch <= kwargs["max_pixels"], (size, (cw, ch))
