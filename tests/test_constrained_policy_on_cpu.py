"""The ``constrained`` CPU policy's template and trie, the stripes set, and the consensus-vs-gt monitor.

Fast unit checks (seconds); the end-to-end learning run is ``tests/test_learning_on_cpu.py``.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from medvr_verl.consensus import gt_agreement
from medvr_verl.cpu.constrained import (
    ANSWER_PREFIX,
    ANSWER_SUFFIX,
    ZOOM_PREFIX,
    ZOOM_SUFFIX,
    Choice,
    ConstrainedOptions,
    TokenTrie,
    current_turn,
    grid_boxes,
    plan_turn,
)
from medvr_verl.entropy import plan_forks, plan_forks_counted

SYSTEM = (
    "<|im_start|>system\nTools.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
)
OPTS = ConstrainedOptions()


def test_grid_boxes_partition_the_image():
    assert grid_boxes(112, 112, 2) == [[0, 0, 56, 56], [56, 0, 112, 56], [0, 56, 56, 112], [56, 56, 112, 112]]
    assert grid_boxes(84, 56, 1) == [[0, 0, 84, 56]]


def test_first_turn_zooms_into_a_grid_cell():
    segments = plan_turn(SYSTEM + "<|im_start|>assistant\n", (112, 112), OPTS)
    assert segments[0] == ZOOM_PREFIX and segments[2] == ZOOM_SUFFIX
    assert segments[1] == Choice(("0, 0, 56, 56", "56, 0, 112, 56", "0, 56, 56, 112", "56, 56, 112, 112"))


def test_turn_after_a_tool_response_answers():
    context = (
        SYSTEM
        + "<|im_start|>assistant\n"
        + ZOOM_PREFIX
        + "0, 0, 56, 56"
        + ZOOM_SUFFIX
        + "<|im_end|>\n<|im_start|>user\n<tool_response>\nZoomed.\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert current_turn(context) == ("", True)
    assert plan_turn(context, (112, 112), OPTS) == [ANSWER_PREFIX, Choice(("A", "B")), ANSWER_SUFFIX]


@pytest.mark.parametrize("cut", ['"bbox_2d":', '"bbox_2d": ', '"bbox_2d": ['])
def test_an_evr_fork_continues_the_zoom_call_from_its_cut(cut):
    """A fork's request stops inside the zoom call; the policy writes the rest from there."""
    written = ZOOM_PREFIX[: ZOOM_PREFIX.index('"bbox_2d":')] + cut
    segments = plan_turn(SYSTEM + "<|im_start|>assistant\n" + written, (112, 112), OPTS)
    assert written + segments[0] == ZOOM_PREFIX if isinstance(segments[0], str) else written == ZOOM_PREFIX
    assert isinstance(segments[-2], Choice) and segments[-1] == ZOOM_SUFFIX


def test_foreign_text_in_the_turn_is_refused():
    with pytest.raises(ValueError, match="not the template"):
        plan_turn(SYSTEM + "<|im_start|>assistant\nHello", (112, 112), OPTS)
    with pytest.raises(ValueError, match="no open assistant turn"):
        plan_turn(SYSTEM, (112, 112), OPTS)
    with pytest.raises(ValueError, match="needs an image"):
        plan_turn(SYSTEM + "<|im_start|>assistant\n", None, OPTS)


def test_options_are_validated():
    assert ConstrainedOptions.from_dict({"grid": 3, "answers": ["yes", "no"]}).answers == ("yes", "no")
    with pytest.raises(ValueError, match="unknown options"):
        ConstrainedOptions.from_dict({"grdi": 2})
    with pytest.raises(ValueError, match="entropy"):
        ConstrainedOptions.from_dict({"entropy": "exact"})
    with pytest.raises(ValueError, match="grid"):
        ConstrainedOptions.from_dict({"grid": 0})


def test_token_trie_branches_only_where_candidates_differ():
    encode = lambda text: [ord(c) for c in text]  # noqa: E731  one token per character
    trie = TokenTrie(["0, 0", "0, 5", "56, 0"], encode)
    assert trie.allowed([]) == [ord("0"), ord("5")]
    assert trie.allowed(encode("0")) == [ord(",")]  # forced
    assert trie.allowed(encode("0, ")) == [ord("0"), ord("5")]
    assert trie.allowed(encode("0, 5")) == []  # a whole candidate
    with pytest.raises(ValueError, match="prefix"):
        TokenTrie(["1", "12"], encode)


def test_gt_agreement_scores_consensus_and_zooms_against_annotations():
    gt = [[56.0, 56.0, 112.0, 112.0]]
    on, off = (0, (56, 56, 112, 112)), (0, (0, 0, 56, 56))
    result = gt_agreement([on], [on, off], gt, eta=0.5)
    assert result == {"cca_gt_iou": 1.0, "cca_gt_hit": 1.0, "zoom_gt_iou": 0.5, "zoom_gt_hit": 0.5}
    half = gt_agreement([(0, (56, 56, 112, 84))], [], gt, eta=0.5)
    assert half["cca_gt_iou"] == pytest.approx(0.5) and half["cca_gt_hit"] == 0.0  # strictly above eta
    assert math.isnan(half["zoom_gt_iou"]) and math.isnan(half["zoom_gt_hit"])
    # nothing to check: no consensus (no correct zoom), or no annotation; other images ignored
    empty = gt_agreement([], [(1, (56, 56, 112, 112))], gt, eta=0.5)
    assert all(math.isnan(v) for v in empty.values())
    assert all(math.isnan(v) for v in gt_agreement([on], [on], [], eta=0.5).values())


def test_reward_manager_reads_gt_boxes_as_parquet_gives_them():
    from medvr_verl.reward_manager import gt_boxes_of

    raw = np.array([np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 5, 5])], dtype=object)
    assert gt_boxes_of({"gt_boxes": raw}) == [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 5.0]]
    assert gt_boxes_of({"gt_boxes": [[1, 2, 3]]}) == [] and gt_boxes_of({}) == [] and gt_boxes_of(None) == []


def test_plan_forks_counted_splits_qualified_from_fallback_slots():
    for seed in range(20):
        dhs = [0.0, 0.4, 0.05, 0.9]
        plan, chosen = plan_forks_counted(
            dhs, 3, p_base=0.2, gamma=0.5, threshold=0.1, rng=random.Random(seed), fallback="fresh"
        )
        again = plan_forks(dhs, 3, p_base=0.2, gamma=0.5, threshold=0.1, rng=random.Random(seed), fallback="fresh")
        assert plan == again  # same draws as plan_forks
        assert all(p is not None and dhs[p] > 0.1 for p in plan[:chosen])  # qualified calls only
        assert all(p is None for p in plan[chosen:])  # fresh: the fallback places no fork
    # nothing qualifies: every fork is the fallback's
    plan, chosen = plan_forks_counted(
        [0.0, 0.0], 2, p_base=0.2, gamma=0.5, threshold=0.1, rng=random.Random(0), fallback="top_dh"
    )
    assert chosen == 0 and all(p is not None for p in plan)


def test_stripes_answer_is_visible_only_in_the_zoomed_cell():
    """At the learning run's pixel budget the whole image hides the lines; a crop of the cell shows them."""
    from transformers import AutoProcessor

    from medvr_verl.cpu.learning import IMAGE_SIZE, PIXELS
    from medvr_verl.data.synthetic import stripes_records
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    processor = AutoProcessor.from_pretrained(tiny_qwen25vl_path()).image_processor
    records = stripes_records(2, seed=0, size=IMAGE_SIZE)
    half, full = IMAGE_SIZE // 2, IMAGE_SIZE
    horizontal, vertical = sorted(records, key=lambda r: r.answer)
    assert (horizontal.answer, vertical.answer) == ("A", "B")
    assert horizontal.gt_boxes == [[half, half, full, full]]

    def view(image):
        out = processor(images=[image], return_tensors="pt", min_pixels=PIXELS, max_pixels=PIXELS)
        return out["pixel_values"].numpy()

    whole = np.abs(view(horizontal.images[0].pil) - view(vertical.images[0].pil)).mean()
    crop = np.abs(
        view(horizontal.images[0].pil.crop((half, half, full, full)))
        - view(vertical.images[0].pil.crop((half, half, full, full)))
    ).mean()
    assert crop > 10 * whole
