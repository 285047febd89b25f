"""Tests for medvr_verl.boxes: parsing a model's bbox_2d, scaling, exact union areas."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvr_verl import boxes as boxes_mod
from medvr_verl.boxes import (
    BoxError,
    intersection_area,
    iou,
    parse_bbox,
    scale_box,
    union_area,
)

REPO = Path(__file__).resolve().parents[1]
SIDE = 40  # raster side for the property tests


def raster(boxes, width=SIDE, height=SIDE) -> np.ndarray:
    """The obvious definition: a box covers mask[y1:y2, x1:x2] (empty when reversed)."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


coord = st.integers(min_value=0, max_value=SIDE)
int_box = st.tuples(coord, coord, coord, coord)  # reversed and degenerate boxes included
box_list = st.lists(int_box, max_size=6)


# ----------------------------------------------------------------------------------------------
# parse_bbox: accepted forms
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        [10, 20, 30, 40],
        (10, 20, 30, 40),
        [10.0, 20.0, 30.0, 40.0],
        ["10", "20", "30", "40"],
        [" 10 ", "2e1", "30.0", "40"],
        np.array([10, 20, 30, 40]),
        np.array([10.0, 20.0, 30.0, 40.0], dtype=np.float32),
        [np.int64(10), np.float32(20), np.int8(30), np.float64(40)],
        "[10, 20, 30, 40]",
        "  [10,20,30,40]  ",
        '["10", "20", "30", "40"]',
        "10, 20, 30, 40",
        "10,20,30,40",
        "(10 20 30 40)",
        "(10, 20, 30, 40)",
        "[10 20 30 40]",
        "10 20 30 40",
        [[10, 20, 30, 40]],
        ([10, 20, 30, 40],),
        "[[10, 20, 30, 40]]",
        np.array([[10, 20, 30, 40]]),
        [(10, 20, 30, 40)],
    ],
)
def test_parse_accepted_forms(value):
    assert parse_bbox(value, 100, 100) == (10.0, 20.0, 30.0, 40.0)


def test_parse_returns_floats():
    box = parse_bbox([1, 2, 3, 4], 10, 10)
    assert all(type(v) is float for v in box)


def test_parse_fractional_values_kept():
    assert parse_bbox(["12.5", 3.25, 40, "50.75"], 100, 100) == (12.5, 3.25, 40.0, 50.75)


@pytest.mark.parametrize(
    "value, expected",
    [
        ([30, 40, 10, 20], (10.0, 20.0, 30.0, 40.0)),  # both corners swapped
        ([30, 20, 10, 40], (10.0, 20.0, 30.0, 40.0)),  # x only
        ([10, 40, 30, 20], (10.0, 20.0, 30.0, 40.0)),  # y only
    ],
)
def test_parse_reorders_reversed_corners(value, expected):
    assert parse_bbox(value, 100, 100) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ([-10, -5, 30, 40], (0.0, 0.0, 30.0, 40.0)),
        ([50, 60, 250, 300], (50.0, 60.0, 100.0, 80.0)),
        ([-1e9, -1e9, 1e9, 1e9], (0.0, 0.0, 100.0, 80.0)),
        ([0, 0, 100, 80], (0.0, 0.0, 100.0, 80.0)),
    ],
)
def test_parse_clamps_to_image(value, expected):
    assert parse_bbox(value, 100, 80) == expected


def test_parse_min_size():
    assert parse_bbox([10, 10, 10.5, 20], 100, 100, min_size=0.5) == (10.0, 10.0, 10.5, 20.0)
    with pytest.raises(BoxError, match="too small"):
        parse_bbox([10, 10, 10.5, 20], 100, 100)  # default min_size 1 px
    with pytest.raises(BoxError, match="too small"):
        parse_bbox([10, 10, 20, 13], 100, 100, min_size=4)
    # Clamping can make an acceptable box too small: only 0.5 px of it is inside.
    with pytest.raises(BoxError, match="too small"):
        parse_bbox([99.5, 10, 150, 20], 100, 100)
    assert parse_bbox([10, 10, 10.001, 10.001], 100, 100, min_size=0) == (10, 10, 10.001, 10.001)


# ----------------------------------------------------------------------------------------------
# parse_bbox: rejections (each kind), messages readable by the model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        ([1, 2, 3], "must have 4 numbers [x1, y1, x2, y2], got 3"),
        ([1, 2, 3, 4, 5], "got 5"),
        ([], "got 0"),
        ("1, 2, 3", "got 3"),
        ("[1, 2]", "got 2"),
        ("5", "got 1"),
        (list(range(1000)), "got 1000"),
        (np.arange(1000), "got an array of 1000"),
        (None, "got NoneType"),
        ({"x1": 1, "y1": 2, "x2": 3, "y2": 4}, "got dict"),
        ('{"bbox_2d": [1, 2, 3, 4]}', "got dict"),
        ({1, 2, 3, 4}, "got set"),
        (b"[1, 2, 3, 4]", "got bytes"),
        (7, "got int"),
        (3.5, "got float"),
        (True, "got bool"),
        (np.float64(3.0), "got float64"),
        (np.array(5), "got ndarray"),
        ([1, 2, "abc", 4], "must be numbers, got 'abc' at position 2"),
        ([1, 2, "", 4], "must be numbers"),
        ("1, 2, , 4", "must be numbers"),
        ("1, 2 3, 4", "got 3"),
        ("x1=1, y1=2, x2=3, y2=4", "must be numbers"),
        ([1, True, 3, 4], "got a boolean at position 1"),
        ([np.bool_(True), 2, 3, 4], "boolean"),
        ([1, None, 3, 4], "got NoneType at position 1"),
        ([1, 2, {"a": 1}, 4], "nested"),
        ([1, 2, [3], 4], "nested"),
        ([[[1, 2, 3, 4]]], "nested"),
        ("[[[1, 2, 3, 4]]]", "nested"),
        ([[1, 2], [3, 4]], "nested"),
        ([["1, 2, 3, 4"]], "got 1"),
        ([float("nan"), 2, 3, 4], "finite"),
        ([1, float("inf"), 3, 4], "finite"),
        ([1, 2, float("-inf"), 4], "finite"),
        (["nan", 2, 3, 4], "finite"),
        (["1", "2", "inf", "4"], "finite"),
        ("[NaN, 1, 2, 3]", "finite"),
        ("[1, 2, Infinity, 3]", "finite"),
        ([10**400, 2, 3, 4], "not a usable number"),
        (["1" * 100, 2, 3, 4], "too long"),
        ("[" + "1, " * 500 + "1]", "too long"),
        ("", "empty"),
        ("   ", "empty"),
        ("[1, 2, 3, 4", "could not read"),
        ("((1, 2, 3, 4))", "could not read"),
    ],
)
def test_parse_rejects(value, message):
    with pytest.raises(BoxError) as info:
        parse_bbox(value, 100, 100)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "value, message",
    [
        ([10, 20, 10, 40], "zero width"),
        ([10, 20, 30, 20], "zero height"),
        (["5", "5", "5", "5"], "zero width"),
        ([150, 20, 200, 40], "outside the image"),  # right of the image
        ([10, 120, 30, 140], "outside the image"),  # below
        ([-50, 10, -10, 40], "outside the image"),  # left
        ([10, -40, 30, -1], "outside the image"),  # above
        ([100, 10, 130, 40], "outside the image"),  # touches the right edge only: no overlap
        ([10, 0, 30, 0.0001], "too small"),
    ],
)
def test_parse_rejects_geometry(value, message):
    with pytest.raises(BoxError, match=message):
        parse_bbox(value, 100, 100)


def test_outside_message_states_image_size():
    with pytest.raises(BoxError) as info:
        parse_bbox([5000, 10, 5100, 50], 1000, 800)
    text = str(info.value)
    assert "[5000, 10, 5100, 50]" in text and "width 1000" in text and "height 800" in text


def test_box_error_is_value_error():
    assert issubclass(BoxError, ValueError)


@pytest.mark.parametrize(
    "width, height",
    [
        (0, 10),
        (10, 0),
        (-5, 10),
        (float("nan"), 10),
        (10, float("-inf")),
        (True, 10),
        ("100", 100),
        (None, 10),
    ],
)
def test_parse_bad_image_size_is_programmer_error(width, height):
    with pytest.raises(ValueError) as info:
        parse_bbox([1, 2, 3, 4], width, height)
    assert not isinstance(info.value, BoxError)


def test_parse_with_unknown_image_size_validates_without_clamping():
    inf = float("inf")
    assert parse_bbox([5000, 20, 10, 9000], inf, inf) == (10.0, 20.0, 5000.0, 9000.0)
    assert parse_bbox([-5, -5, 10, 10], inf, inf) == (0.0, 0.0, 10.0, 10.0)
    with pytest.raises(BoxError):
        parse_bbox([1, 1, 1, 5], inf, inf)


@pytest.mark.parametrize("min_size", [-1, float("nan"), float("inf"), True, "1"])
def test_parse_bad_min_size(min_size):
    with pytest.raises(ValueError) as info:
        parse_bbox([1, 2, 3, 4], 10, 10, min_size=min_size)
    assert not isinstance(info.value, BoxError)


def test_parse_hostile_repr_still_box_error():
    class Weird:
        def __repr__(self):
            raise RuntimeError("boom")

    with pytest.raises(BoxError):
        parse_bbox([1, 2, Weird(), 4], 10, 10)


def test_parse_deep_json_nesting_is_box_error():
    with pytest.raises(BoxError):
        parse_bbox("[" * 1020, 10, 10)
    with pytest.raises(BoxError):
        parse_bbox("[" * 500 + "]" * 500, 10, 10)


# Arbitrary JSON-ish values: whatever the model sends, only BoxError (or a valid box) comes back.
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["1", "2.5", "-3", "nan", "inf", "1e308", "1e309", " 4 ", "0x10"])
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=6)
        | st.tuples(children, children, children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=20,
)


def _check_parse_outcome(value, width, height, min_size=1.0):
    try:
        box = parse_bbox(value, width, height, min_size=min_size)
    except BoxError as exc:
        assert str(exc)  # a message for the model
        return None
    x1, y1, x2, y2 = box
    assert all(math.isfinite(v) for v in box)
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert x2 - x1 >= min_size and y2 - y1 >= min_size
    return box


@settings(deadline=None, max_examples=300)
@given(json_value)
def test_fuzz_json_values_only_box_error(value):
    _check_parse_outcome(value, 64, 48)


@settings(deadline=None, max_examples=200)
@given(json_value)
def test_fuzz_json_text_only_box_error(value):
    try:
        text = json.dumps(value, allow_nan=True)
    except (ValueError, TypeError):
        return
    _check_parse_outcome(text, 64, 48)


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=60) | st.text(alphabet="[](){},. 0123456789-eE+naifNI", max_size=40))
def test_fuzz_text_only_box_error(text):
    _check_parse_outcome(text, 64, 48)


@settings(deadline=None, max_examples=200)
@given(
    st.lists(st.floats(min_value=-200, max_value=200, allow_nan=False), min_size=4, max_size=4),
    st.sampled_from(["list", "json", "plain", "paren", "nested", "strings", "array"]),
)
def test_fuzz_numeric_forms_agree(nums, form):
    """Every accepted spelling of the same 4 numbers parses to the same box (or the same error)."""
    spelled = {
        "list": nums,
        "json": json.dumps(nums),
        "plain": ", ".join(repr(v) for v in nums),
        "paren": "(" + " ".join(repr(v) for v in nums) + ")",
        "nested": [nums],
        "strings": [repr(v) for v in nums],
        "array": np.array(nums),
    }[form]
    try:
        expected = parse_bbox(nums, 64, 48)
    except BoxError:
        with pytest.raises(BoxError):
            parse_bbox(spelled, 64, 48)
        return
    assert parse_bbox(spelled, 64, 48) == expected


@settings(deadline=None, max_examples=200)
@given(st.lists(st.integers(-100, 200), min_size=4, max_size=4))
def test_parse_matches_clamped_raster(nums):
    """A valid integer box from parse_bbox covers exactly the image pixels of the ordered box."""
    width, height = 30, 20
    try:
        box = parse_bbox(nums, width, height)
    except BoxError:
        x1, x2 = sorted(nums[0::2])
        y1, y2 = sorted(nums[1::2])
        inside = max(0, min(x2, width) - max(x1, 0)) * max(0, min(y2, height) - max(y1, 0))
        assert inside == 0
        return
    x1, x2 = sorted(nums[0::2])
    y1, y2 = sorted(nums[1::2])
    full = np.zeros((height + 400, width + 400), dtype=bool)
    full[y1 + 200 : y2 + 200, x1 + 200 : x2 + 200] = True
    inside = full[200 : 200 + height, 200 : 200 + width]
    assert (box[2] - box[0]) * (box[3] - box[1]) == inside.sum()


def test_parse_long_text_is_refused_before_parsing():
    for text in ("1" * 10**6, "[" * 10**6, "(" + "1 " * 10**5 + ")"):
        with pytest.raises(BoxError, match="too long"):
            parse_bbox(text, 10, 10)


# ----------------------------------------------------------------------------------------------
# scale_box
# ----------------------------------------------------------------------------------------------


def test_scale_box_qwen_resized_to_original():
    # Qwen2.5-VL saw a 4032x3024 photo resized to 1008x756 (a factor 4 per axis).
    assert scale_box((100, 50, 300, 200), (1008, 756), (4032, 3024)) == (400, 200, 1200, 800)


def test_scale_box_per_axis():
    assert scale_box((10, 10, 20, 20), (100, 100), (200, 50)) == (20, 5, 40, 10)


@settings(deadline=None, max_examples=200)
@given(
    st.tuples(*[st.floats(0, 5000, allow_nan=False)] * 4),
    st.tuples(st.floats(1, 5000), st.floats(1, 5000)),
    st.tuples(st.floats(1, 5000), st.floats(1, 5000)),
)
def test_scale_box_round_trip(box, from_size, to_size):
    back = scale_box(scale_box(box, from_size, to_size), to_size, from_size)
    assert back == pytest.approx(box, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "from_size, to_size",
    [
        ((0, 10), (10, 10)),
        ((10, 10), (10, -1)),
        ((10,), (10, 10)),
        (10, (10, 10)),
        ((10, float("nan")), (10, 10)),
    ],
)
def test_scale_box_bad_sizes(from_size, to_size):
    with pytest.raises(ValueError):
        scale_box((1, 2, 3, 4), from_size, to_size)


# ----------------------------------------------------------------------------------------------
# Exact areas
# ----------------------------------------------------------------------------------------------


def test_union_area_examples():
    assert union_area([]) == 0.0
    assert union_area([(0, 0, 10, 10)]) == 100.0
    assert union_area([(0, 0, 10, 10), (5, 5, 15, 15)]) == 175.0
    assert union_area([(0, 0, 10, 10), (0, 0, 10, 10)]) == 100.0
    assert union_area([(0, 0, 10, 10), (10, 0, 20, 10)]) == 200.0  # half-open: no overlap
    assert union_area([(0, 0, 10, 10), (3, 3, 3, 8), (9, 9, 2, 2)]) == 100.0  # degenerate ignored
    assert union_area([(0.5, 0.5, 1.75, 2.0)]) == pytest.approx(1.875)
    assert union_area(np.array([[0, 0, 4, 4], [2, 2, 6, 6]])) == 28.0


def test_union_area_large_image_exact():
    boxes = [(0, 0, 4096, 4096), (1000, 1000, 5000, 2000)]
    assert union_area(boxes) == 4096 * 4096 + (5000 - 4096) * 1000


@pytest.mark.parametrize("bad", [[(1, 2, 3)], [(0, 0, float("nan"), 1)], [(0, 0, 1, math.inf)], [[1, 2, 3, 4, 5]]])
def test_area_functions_reject_malformed(bad):
    for fn in (union_area, lambda b: intersection_area(b, [(0, 0, 1, 1)]), lambda b: iou(b, b)):
        with pytest.raises(ValueError):
            fn(bad)


def test_intersection_and_iou_examples():
    a = [(0, 0, 10, 10)]
    b = [(5, 0, 15, 10)]
    assert intersection_area(a, b) == 50.0
    assert iou(a, b) == 50.0 / 150.0
    assert iou(a, a) == 1.0
    assert iou(a, [(20, 20, 30, 30)]) == 0.0
    assert iou([], []) == 0.0
    assert iou(a, []) == 0.0
    assert intersection_area([], b) == 0.0
    # unions on both sides
    assert intersection_area([(0, 0, 4, 4), (4, 0, 8, 4)], [(2, 0, 6, 4)]) == 16.0


@settings(deadline=None, max_examples=200)
@given(box_list)
def test_union_area_matches_raster(boxes):
    assert union_area(boxes) == raster(boxes).sum()


@settings(deadline=None, max_examples=200)
@given(box_list, box_list)
def test_intersection_and_iou_match_raster(a, b):
    ma, mb = raster(a), raster(b)
    inter, union = int((ma & mb).sum()), int((ma | mb).sum())
    assert intersection_area(a, b) == inter
    assert iou(a, b) == (inter / union if union else 0.0)


@settings(deadline=None, max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 3), int_box), max_size=12))
def test_group_cover_paths_agree(tagged):
    """The batched-matmul path and the prefix-sum path of group_cover give the same cells."""
    arr_all = np.array([b for _, b in tagged], dtype=np.float64).reshape(-1, 4)
    groups_all = np.array([g for g, _ in tagged], dtype=np.intp)
    keep = (arr_all[:, 2] > arr_all[:, 0]) & (arr_all[:, 3] > arr_all[:, 1])
    arr, groups = arr_all[keep], groups_all[keep]
    if len(arr) == 0:
        return
    xs, ys = boxes_mod.grid_edges(arr)
    fast = boxes_mod.group_cover(arr, groups, 4, xs, ys)
    rows, cols = len(ys) - 1, len(xs) - 1
    ix1, ix2 = np.searchsorted(xs, arr[:, 0]), np.searchsorted(xs, arr[:, 2])
    iy1, iy2 = np.searchsorted(ys, arr[:, 1]), np.searchsorted(ys, arr[:, 3])
    slow = boxes_mod._group_cover_prefix(groups, 4, ix1, ix2, iy1, iy2, rows, cols)
    np.testing.assert_array_equal(fast, slow)


def test_union_area_many_boxes_uses_prefix_path():
    rng = np.random.default_rng(1)
    corners = rng.integers(0, SIDE, size=(200, 2, 2))
    boxes = [(int(a[0, 0]), int(a[0, 1]), int(a[1, 0]), int(a[1, 1])) for a in corners]
    assert union_area(boxes) == raster(boxes).sum()  # 200 boxes in one group > matmul cap


# ----------------------------------------------------------------------------------------------
# Purity: the pure modules must not pull in veRL or torch
# ----------------------------------------------------------------------------------------------


def test_pure_modules_import_neither_verl_nor_torch():
    code = (
        "import sys, medvr_verl.boxes, medvr_verl.consensus, medvr_verl.scoring; "
        "assert 'verl' not in sys.modules and 'torch' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('verl', 'torch'))"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
