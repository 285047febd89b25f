"""medvr_verl.tool_calls: boxes from tool records and from hermes tool calls in response text."""

import json

from medvr_verl.tool_calls import boxes_from_records, boxes_from_text, coordinate_char_spans, trajectory_boxes


def _call(args, name="image_zoom_in_tool"):
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


def test_boxes_from_text_reads_valid_calls_and_counts_invalid_ones():
    text = (
        "<think>look left</think>"
        + _call({"bbox_2d": [10, 20, 110, 220]})
        + "\nuser\n<tool_response>crop</tool_response>\nassistant\n"
        + _call({"bbox_2d": [300, 300, 200, 200], "image_index": 1})  # reversed corners are reordered
        + _call({"bbox_2d": [1, 2, 3]})  # wrong length
        + _call({"bbox_2d": [1, 2, 3, 4], "image_index": -1})  # bad image index
        + _call({"bbox_2d": [0, 0, 5, 5]}, name="other_tool")  # another tool: ignored
        + "<tool_call>{not json}</tool_call>"  # malformed: ignored
    )
    boxes, invalid = boxes_from_text(text)
    assert boxes == [(0, (10.0, 20.0, 110.0, 220.0)), (1, (200.0, 200.0, 300.0, 300.0))]
    assert invalid == 2


def test_double_encoded_arguments_are_accepted():
    text = (
        "<tool_call>"
        + json.dumps({"name": "image_zoom_in_tool", "arguments": json.dumps({"bbox_2d": [1, 1, 9, 9]})})
        + "</tool_call>"
    )
    assert boxes_from_text(text)[0] == [(0, (1.0, 1.0, 9.0, 9.0))]


def test_records_take_precedence_and_map_to_the_root_image():
    records = [
        {
            "valid": True,
            "image_index": 1,
            "root_image_index": 0,
            "bbox_original": [0, 0, 5, 5],
            "bbox_root": [10, 10, 15, 15],
        },
        {"valid": False, "image_index": 0, "bbox_original": None, "error": "bad"},
    ]
    assert boxes_from_records(records) == ([(0, (10.0, 10.0, 15.0, 15.0))], 1)
    boxes, invalid, source = trajectory_boxes({"medvr_zoom_calls": records}, _call({"bbox_2d": [0, 0, 1, 1]}))
    assert source == "records" and invalid == 1 and len(boxes) == 1
    assert trajectory_boxes(None, _call({"bbox_2d": [0, 0, 1, 1]}))[2] == "text"


def test_coordinate_spans_point_at_the_arrays():
    text = "<think>x</think>" + _call({"bbox_2d": [10, 20, 30, 40]}) + _call({"label": "no box"})
    spans = coordinate_char_spans(text)
    assert [text[s:e] for s, e in spans] == ["[10, 20, 30, 40]"]


def test_adversarial_text_finds_nothing():
    # unclosed and nested tags: each scan is a single left-to-right pass of str.find
    for text in ("<tool_call>" * 200_000, "<tool_call>" + "[" * 100_000 + "</tool_call>"):
        assert boxes_from_text(text) == ([], 0)
        assert coordinate_char_spans(text) == []


# ------------------------------------------------------------------------------------------------
# Hostile records (issue 10): every malformed record is one invalid zoom, never an exception
# ------------------------------------------------------------------------------------------------

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medvr_verl.tool_calls import (  # noqa: E402
    MAX_BOXES_PER_TRAJECTORY,
    MAX_COORDINATE,
    MAX_IMAGE_INDEX,
)

_GOOD = {
    "valid": True,
    "image_index": 0,
    "root_image_index": 0,
    "bbox_original": [1, 2, 3, 4],
    "bbox_root": [1, 2, 3, 4],
}


@pytest.mark.parametrize(
    "bad",
    [
        {**_GOOD, "bbox_root": [math.nan, 0, 5, 5]},
        {**_GOOD, "bbox_root": [0, 0, math.inf, 5]},
        {**_GOOD, "bbox_root": [0, 0, None, 5]},
        {**_GOOD, "bbox_root": "left lung"},
        {**_GOOD, "bbox_root": [0, 0, 5]},
        {**_GOOD, "bbox_root": [0, 0, 5, 5, 6]},
        {**_GOOD, "bbox_root": [[0, 0], [5, 5]]},
        {**_GOOD, "bbox_root": [0, 0, 0, 5]},
        {**_GOOD, "bbox_root": [0, 0, 1e300, 5]},
        {**_GOOD, "bbox_root": {"x1": 0}},
        {**_GOOD, "bbox_root": [True, 0, 5, 5]},
        {**_GOOD, "root_image_index": None},
        {**_GOOD, "root_image_index": -1},
        {**_GOOD, "root_image_index": "0"},
        {**_GOOD, "root_image_index": 10**30},
        {**_GOOD, "root_image_index": MAX_IMAGE_INDEX + 1},
        {**_GOOD, "root_image_index": 1.5},
        {**_GOOD, "root_image_index": math.nan},
        {**_GOOD, "root_image_index": True},
        {**_GOOD, "root_image_index": [0]},
        {**_GOOD, "valid": "true"},
        {**_GOOD, "valid": 1},
        {**_GOOD, "bbox_root": None, "bbox_original": None},
        {**_GOOD, "bbox_root": None, "image_index": None},
        "a record that is a string",
        ["valid", True],
        None,
        42,
        {"valid": True},
    ],
)
def test_malformed_record_is_one_invalid_zoom(bad):
    boxes, invalid = boxes_from_records([_GOOD, bad, _GOOD])
    assert invalid == 1
    assert boxes == [(0, (1.0, 2.0, 3.0, 4.0))] * 2


def test_record_containers_and_numpy_values():
    assert boxes_from_records("not a list") == ([], 1)
    assert boxes_from_records({"valid": True}) == ([], 1)
    assert boxes_from_records(12) == ([], 1)
    arr = np.array([_GOOD, {**_GOOD, "root_image_index": np.int64(2), "bbox_root": np.array([0.0, 0.0, 2.0, 2.0])}])
    assert boxes_from_records(arr) == ([(0, (1.0, 2.0, 3.0, 4.0)), (2, (0.0, 0.0, 2.0, 2.0))], 0)
    # a pandas round trip turns ints into floats: integral floats are still indices
    assert boxes_from_records([{**_GOOD, "root_image_index": 1.0}]) == ([(1, (1.0, 2.0, 3.0, 4.0))], 0)
    # numpy bool from a dump
    assert boxes_from_records([{**_GOOD, "valid": np.bool_(True)}])[1] == 0


def test_trajectory_boxes_with_hostile_containers():
    assert trajectory_boxes("not a mapping", None) == ([], 0, "text")
    assert trajectory_boxes({"medvr_zoom_calls": "junk"}, "") == ([], 1, "records")
    assert trajectory_boxes(None, 12345) == ([], 0, "text")


def test_boxes_past_the_cap_count_as_invalid():
    records = [_GOOD] * (MAX_BOXES_PER_TRAJECTORY + 5)
    boxes, invalid = boxes_from_records(records)
    assert len(boxes) == MAX_BOXES_PER_TRAJECTORY and invalid == 5
    text = _call({"bbox_2d": [0, 0, 1, 1]}) * (MAX_BOXES_PER_TRAJECTORY + 3)
    boxes, invalid = boxes_from_text(text)
    assert len(boxes) == MAX_BOXES_PER_TRAJECTORY and invalid == 3


def test_text_calls_with_huge_index_or_coordinates_are_invalid():
    assert boxes_from_text(_call({"bbox_2d": [0, 0, 1, 1], "image_index": MAX_IMAGE_INDEX + 1})) == ([], 1)
    assert boxes_from_text(_call({"bbox_2d": [0, 0, 1e300, 1]})) == ([], 1)


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=20,
)
_record_keys = st.sampled_from(["valid", "image_index", "root_image_index", "bbox_original", "bbox_root", "error"])
_near_records = st.dictionaries(
    _record_keys,
    st.one_of(
        _json,
        st.just(True),
        st.integers(min_value=-3, max_value=3),
        st.lists(st.one_of(st.integers(-5, 50), st.floats(allow_nan=True, allow_infinity=True), st.none()), max_size=6),
    ),
    max_size=6,
)


def _check_boxes(boxes):
    for index, box in boxes:
        assert type(index) is int and 0 <= index <= MAX_IMAGE_INDEX
        assert len(box) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in box)
        assert all(abs(v) <= MAX_COORDINATE for v in box)
        assert box[0] < box[2] and box[1] < box[3]


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, st.lists(st.one_of(_near_records, _json), max_size=8)))
def test_any_json_like_records_never_raise(records):
    boxes, invalid = boxes_from_records(records)
    _check_boxes(boxes)
    n = len(records) if isinstance(records, list) else 1
    assert len(boxes) + invalid == n


@settings(max_examples=200, deadline=None)
@given(st.one_of(_json, st.dictionaries(st.just("medvr_zoom_calls"), _json)), st.one_of(st.text(max_size=50), _json))
def test_trajectory_boxes_never_raises(extra_fields, text):
    boxes, invalid, source = trajectory_boxes(extra_fields, text)
    _check_boxes(boxes)
    assert invalid >= 0 and source in ("records", "text")
