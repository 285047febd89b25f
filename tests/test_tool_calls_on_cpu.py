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
