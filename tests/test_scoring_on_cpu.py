"""Tests for medvr_verl.scoring: answer extraction, format reward, accuracy, compute_score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvr_verl.scoring import (
    DEFAULT_FORMAT_WEIGHT,
    NO_WORDS,
    NON_ANSWERS,
    YES_WORDS,
    accuracy,
    compute_score,
    extract_answer,
    format_reward,
    infer_question_type,
    is_non_answer,
    lenient_accuracy,
    normalize_text,
    normalize_tokens,
    score_closed,
    score_multiple_choice,
    score_open,
)

TOOL_TURN = (
    '<think>The lesion is small; zoom in.</think><tool_call>{"name": "zoom_in", "arguments": '
    '{"bbox_2d": [10, 20, 200, 220]}}</tool_call>user\n<tool_response>\nZoomed image.\n'
    "</tool_response>\nassistant\n"
)
GOOD_SINGLE = "<think>An MRI shows soft tissue well.</think><answer>B</answer>"
GOOD_MULTI = TOOL_TURN + "<think>Now it is clear.</think><answer>B</answer>"


# ----------------------------------------------------------------------------------------------
# extract_answer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD_SINGLE, "B"),
        (GOOD_MULTI, "B"),
        ("<answer>  left lung \n</answer>", "left lung"),
        ("<answer>A</answer> then <answer>C</answer>", "C"),
        ("<answer></answer>", ""),
        ("no tags at all", None),
        ("<answer>B", None),  # unclosed
        ("<answer>A</answer><answer>B", None),  # the last answer is unclosed: no fallback
        ("</answer>B<answer>", None),
        ("<answer><answer>B</answer>", "B"),
        ("<think>x</think><answer>Yes, there is.</answer><|im_end|>", "Yes, there is."),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# ----------------------------------------------------------------------------------------------
# format_reward
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        GOOD_SINGLE,
        GOOD_MULTI,
        "  \n<think>\nreasoning\n</think>\n\n<answer> B </answer>\n ",
        "<think></think><answer>B</answer>",  # empty thinking is allowed
        GOOD_SINGLE + "<|im_end|>",  # decoded with special tokens kept
        GOOD_SINGLE + "<|im_end|>\n<|endoftext|>",
        TOOL_TURN.replace("assistant\n", "<|im_end|>\n<|im_start|>assistant\n") + "<think>ok</think><answer>B</answer>",
        TOOL_TURN + TOOL_TURN + "<think>two zooms</think><answer>left lung</answer>",
        TOOL_TURN.replace("\nassistant\n", "") + "<think>no role word</think><answer>B</answer>",
    ],
)
def test_format_good(text):
    assert format_reward(text) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "<answer>B</answer>",  # no think
        "B",
        "",
        "<think>x</think>",  # no answer
        "<think>x</think><answer>   </answer>",  # blank answer
        "<think>x</think><answer>B</answer> trailing words",
        "preamble <think>x</think><answer>B</answer>",
        "<think>x</think> text between <answer>B</answer>",
        "<think>x<answer>B</answer>",  # think never closed
        "<think>a<think>b</think><answer>B</answer>",  # nested think
        "<think>x</think><answer>A</answer><answer>B</answer>",  # two answers
        "<think>x</think><answer>B",  # unclosed answer
        "<think>x</think><answer>B</think></answer>",
        "<answer>A</answer>" + TOOL_TURN + "<think>x</think><answer>B</answer>",  # stray answer
        TOOL_TURN,  # ends after a tool response
        TOOL_TURN + "<think>x</think><tool_call>{}</tool_call><answer>B</answer>",
        TOOL_TURN + "<think>x</think><answer>B</answer><tool_call>{}</tool_call>",
        "<think>x</think><tool_call>{}</tool_call><think>y</think><answer>B</answer>",
        "<THINK>x</THINK><ANSWER>B</ANSWER>",
        "<think>x</think><answer>B</answer></answer>",
    ],
)
def test_format_bad(text):
    assert format_reward(text) == 0.0


def test_format_non_string():
    assert format_reward(None) == 0.0
    assert format_reward(b"<think></think><answer>B</answer>") == 0.0


# ----------------------------------------------------------------------------------------------
# Multiple choice
# ----------------------------------------------------------------------------------------------

OPTIONS = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}


@pytest.mark.parametrize(
    "pred",
    [
        "B",
        "b",
        "(B)",
        "[B]",
        "B.",
        "B)",
        "B:",
        "Option B",
        "option (b)",
        "Choice B",
        "The answer is B",
        "The answer is (B).",
        "Answer: B",
        "Answer: option B",
        "The correct answer is B: MRI",
        "B: MRI",
        "B. MRI",
        "(B) MRI",
        "B) mri",
        "B - MRI",
        "B MRI",
        "MRI",
        "mri",
        "MRI.",
        " Mri ",
        "The MRI",
    ],
)
def test_mc_correct(pred):
    assert score_multiple_choice(pred, "B", OPTIONS) == 1.0
    assert score_multiple_choice(pred, "MRI", OPTIONS) == 1.0  # ground truth as text
    assert score_multiple_choice(pred, "(B)", OPTIONS) == 1.0


@pytest.mark.parametrize(
    "pred",
    [
        "A",
        "C",
        "E",
        "(C)",
        "CT",
        "x ray",
        "A, B",
        "A and B",
        "B or C",
        "(A) and (B)",
        "AB",
        "A/B",
        "B, C",
        "B. C.",
        "B: CT",
        "(B) Ultrasound",
        "",
        "   ",
        "Magnetic",
        "I think B",
        "BB",
        "B-mode",
    ],
)
def test_mc_wrong(pred):
    assert score_multiple_choice(pred, "B", OPTIONS) == 0.0


def test_mc_list_options_and_letter_prefixed_texts():
    options = ["CT", "MRI", "PET"]
    assert score_multiple_choice("C", "PET", options) == 1.0
    assert score_multiple_choice("PET", "C", options) == 1.0
    assert score_multiple_choice("B", "C", options) == 0.0
    assert score_multiple_choice("D", "C", options) == 0.0  # no option D
    # A ground truth outside the options is compared as normalized text.
    assert score_multiple_choice("D", "D", options) == 1.0
    # PMC-VQA style choices carry their letter.
    pmc = ["A:CT scan", "B:MRI scan", "C: PET", "D. Biopsy"]
    assert score_multiple_choice("MRI scan", "B", pmc) == 1.0
    assert score_multiple_choice("B", "B:MRI scan", pmc) == 1.0
    assert score_multiple_choice("Biopsy", "D", pmc) == 1.0


def test_mc_dict_key_forms_and_none_values():
    options = {"a": "Benign", "(B)": "Malignant", "C.": None}
    assert score_multiple_choice("B", "Malignant", options) == 1.0
    assert score_multiple_choice("A", "a", options) == 1.0
    assert score_multiple_choice("C", "A", options) == 0.0  # option C is absent
    assert score_multiple_choice("C", "Benign", options) == 0.0


def test_mc_texts_starting_with_a_letter():
    # "B cell lymphoma" is option A's text, not "option B" with a description.
    options = ["B cell lymphoma", "T cell lymphoma"]
    assert score_multiple_choice("B cell lymphoma", "A", options) == 1.0
    assert score_multiple_choice("T cell lymphoma", "B", options) == 1.0
    # "A CT scan": "A" is an article here.
    assert score_multiple_choice("A CT scan", "B", ["MRI", "CT scan"]) == 1.0
    assert score_multiple_choice("A CT scan", "A", ["MRI", "CT scan"]) == 0.0


def test_mc_without_options_compares_letters():
    assert score_multiple_choice("(C)", "C", None) == 1.0
    assert score_multiple_choice("C. something", "C", None) == 1.0
    assert score_multiple_choice("D", "C", None) == 0.0
    assert score_multiple_choice("A, C", "C", None) == 0.0
    # Ground truth that is no letter: normalized text equality.
    assert score_multiple_choice("the MRI.", "MRI", None) == 1.0
    assert score_multiple_choice("CT", "MRI", []) == 0.0


def test_mc_unresolvable_gt_falls_back_to_text():
    assert score_multiple_choice("Fibroadenoma", "fibroadenoma", OPTIONS) == 1.0
    assert score_multiple_choice("", "", OPTIONS) == 0.0


def test_mc_too_many_options():
    with pytest.raises(ValueError):
        score_multiple_choice("A", "A", [str(i) for i in range(27)])


def test_mc_none_inputs():
    assert score_multiple_choice(None, "A", OPTIONS) == 0.0


# ----------------------------------------------------------------------------------------------
# Closed (yes/no)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ("yes", "yes", 1.0),
        ("Yes", "yes", 1.0),
        ("YES.", "Yes", 1.0),
        ("Yes, there is a mass in the left lung.", "yes", 0.0),  # exact match: one word only
        ("No; the heart is normal", "no", 0.0),
        ("yes or no", "yes", 0.0),  # hedges never pay
        ("yes or no", "no", 0.0),
        ("yes and no", "yes", 0.0),
        ("not yes", "yes", 0.0),
        ("yes yes", "yes", 0.0),
        ("no", "No.", 1.0),
        ("yes", "no", 0.0),
        ("No, but maybe", "yes", 0.0),
        ("True", "yes", 1.0),  # yes/no synonyms
        ("false", "no", 1.0),
        ("Correct.", "yes", 1.0),
        ("true", "no", 0.0),
        ("The answer is: yes", "yes", 1.0),
        ("There is no mass", "no", 0.0),  # first word decides
        ("", "yes", 0.0),
        ("yes", "", 0.0),
        ("  \n yes", "yes", 1.0),
        ("yes-ish", "yes", 0.0),  # punctuation splits words: two words
        ("Left", "left", 1.0),  # not a yes/no gt: normalized equality
        ("Left lung", "left", 0.0),
    ],
)
def test_closed(pred, gt, expected):
    assert score_closed(pred, gt) == expected


# ----------------------------------------------------------------------------------------------
# Open
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ("left lung", "left lung", 1.0),
        ("Left Lung.", "left lung", 1.0),
        ("The left lung", "left lung", 1.0),
        ("left-lung", "left lung", 1.0),
        ("T2-weighted", "t2 weighted", 1.0),
        ("patient's liver", "patients liver", 1.0),
        ("mass in the left lung", "left lung", 0.0),  # exact match only
        ("a mass in the left lung", "left lung", 0.0),
        ("there is mass in left lung", "left lung", 0.0),  # 6 tokens > max(4, 5)
        ("there is a mass in the left lung", "left lung", 0.0),
        ("there is a large mass in the left upper lung", "left lung", 0.0),  # not contiguous
        ("left lung right lung heart liver spleen kidney", "left lung", 0.0),  # too long
        ("lung left", "left lung", 0.0),
        ("liver", "liver", 1.0),
        ("liver and spleen", "liver", 0.0),  # lists never pay
        ("liver spleen kidney heart", "liver", 0.0),
        ("liver lung heart kidney", "liver", 0.0),
        ("lung, liver or heart", "liver", 0.0),
        ("not liver", "liver", 0.0),
        ("no pneumonia", "pneumonia", 0.0),  # negations are wrong
        ("not pneumonia", "pneumonia", 0.0),
        ("without pneumonia", "pneumonia", 0.0),
        ("not left", "left", 0.0),
        ("3.5", "3", 0.0),  # number fragments are wrong
        ("0.3", "3", 0.0),
        ("0.5 mm", "5 mm", 0.0),
        ("3", "3.5", 0.0),
        ("3.0", "3", 1.0),  # canonical decimals
        ("3.50 cm", "3.5 cm", 1.0),
        ("The answer is: liver", "liver", 1.0),
        ("kidneys", "kidney", 1.0),  # simple plurals fold
        ("arteries", "artery", 1.0),
        ("masses", "mass", 1.0),
        ("pelvis", "pelvi", 0.0),
        ("Ｌｉｖｅｒ", "liver", 1.0),  # NFKC
        ("liver spleen kidney heart lung", "liver", 0.0),  # 5 > 4
        ("the liver is enlarged", "liver", 0.0),
        ("livers", "liver", 1.0),
        ("", "liver", 0.0),
        ("liver", "", 0.0),
        ("a", "the", 0.0),  # both empty after normalization
        ("chest x-ray", "X-ray", 0.0),
        ("X ray", "X-ray", 1.0),
        ("ct", "mri", 0.0),
        ("pneumothorax", "Pneumothorax", 1.0),
        ("right pleural effusion", "pleural effusion", 0.0),
        ("2.5 cm", "2.5 cm", 1.0),
        ("25 cm", "2.5 cm", 0.0),
    ],
)
def test_open(pred, gt, expected):
    assert score_open(pred, gt) == expected


def test_normalize_text():
    assert normalize_text("  The X-ray, of AN   apple!  ") == "x ray of apple"
    assert normalize_text("“Quoted” — dash…") == "quoted dash"


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=40))
def test_open_exact_self_match(text):
    expected = 1.0 if normalize_tokens(text) else 0.0
    assert score_open(text, text) == expected


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from(["closed", "open", None]))
def test_accuracy_is_binary_and_total(pred, gt, qtype):
    assert accuracy(pred, gt, qtype) in (0.0, 1.0)


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=30), st.lists(st.text(max_size=10), min_size=1, max_size=6))
def test_mc_is_binary_and_total(pred, options):
    assert score_multiple_choice(pred, "A", options) in (0.0, 1.0)
    assert score_multiple_choice(pred, options[0], options) in (0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# accuracy / infer_question_type
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gt, options, expected",
    [
        ("B", {"A": "x", "B": "y"}, "multiple_choice"),
        ("yes", ["yes", "no"], "multiple_choice"),
        ("yes", None, "closed"),
        ("No.", None, "closed"),
        ("yes, there is", None, "open"),
        ("left lung", None, "open"),
        ("B", [], "open"),
        ("B", {}, "open"),
    ],
)
def test_infer_question_type(gt, options, expected):
    assert infer_question_type(gt, options) == expected


def test_accuracy_dispatch():
    assert accuracy("B", "MRI", "multiple_choice", OPTIONS) == 1.0
    assert accuracy("Yes.", "yes", "closed") == 1.0
    assert accuracy("Yes, it is.", "yes", "closed") == 0.0
    assert accuracy("Yes, it is.", "yes", "open") == 0.0
    assert accuracy("No, it is not there.", "no", "closed") == 0.0
    assert accuracy("it is not, no", "no", "open") == 0.0
    assert accuracy("mass in left lung", "left lung", "open") == 0.0
    assert accuracy(None, "yes", "closed") == 0.0
    # Inferred types
    assert accuracy("(B)", "B", None, OPTIONS) == 1.0
    assert accuracy("no", "no", None) == 1.0
    assert accuracy("left lung", "left lung", None) == 1.0


def test_lenient_accuracy_is_the_old_recall_rule_for_evaluation():
    assert lenient_accuracy("mass in left lung", "left lung", "open") == 1.0
    assert lenient_accuracy("there is a large mass in the left upper lung", "left lung", "open") == 0.0
    assert lenient_accuracy("Yes, it is.", "yes", "closed") == 1.0
    assert lenient_accuracy("no", "yes", "closed") == 0.0
    assert lenient_accuracy("(B)", "B", "multiple_choice") == 1.0
    assert lenient_accuracy(None, "yes") == 0.0


@pytest.mark.parametrize("qtype", ["yes/no", "mc", "", "OPEN"])
def test_accuracy_unknown_type(qtype):
    with pytest.raises(ValueError, match="question_type"):
        accuracy("a", "a", qtype)
    with pytest.raises(ValueError):
        accuracy(None, "a", qtype)


# ----------------------------------------------------------------------------------------------
# compute_score
# ----------------------------------------------------------------------------------------------


def test_compute_score_full_marks():
    out = compute_score("pmc_vqa", GOOD_MULTI, "B", {"question_type": "multiple_choice", "options": OPTIONS})
    assert out == {"score": 1.0, "acc": 1.0, "format": 1.0, "pred": "B"}


def test_compute_score_keywords_as_verl_calls_it():
    out = compute_score(
        data_source="vqa_rad",
        solution_str="<think>x</think><answer>No</answer>",
        ground_truth="no",
        extra_info={"question_type": "closed", "index": 3},
    )
    assert out["score"] == 1.0


def test_compute_score_format_weight_and_wrong_answer():
    text = "<think>x</think><answer>yes</answer>"
    assert compute_score("d", text, "no", None, format_weight=0.5, format_mode="bonus") == {
        "score": 0.5,
        "acc": 0.0,
        "format": 1.0,
        "pred": "yes",
    }
    assert compute_score("d", text, "yes", None, format_weight=0.0)["score"] == 1.0
    assert compute_score("d", text, "no", None, format_weight=0.5)["score"] == 0.0  # penalty: no bonus


def test_compute_score_no_answer():
    out = compute_score("d", "I am not sure", "yes")
    assert out == {"score": -0.1, "acc": 0.0, "format": 0.0, "pred": ""}


def test_compute_score_correct_but_badly_formatted():
    out = compute_score("d", "<answer>left lung</answer>", "left lung")
    assert out == {"score": 0.9, "acc": 1.0, "format": 0.0, "pred": "left lung"}


@pytest.mark.parametrize("mode, weight", [("penalty", None), ("penalty", 0.1), ("penalty", 0.9), ("bonus", 0.5)])
def test_accuracy_dominates_format(mode, weight):
    """A correct answer in bad format outscores a wrong one in perfect format (issue 13 item 2)."""
    kwargs = {"format_mode": mode} if weight is None else {"format_mode": mode, "format_weight": weight}
    right_bad = compute_score("d", "<answer>liver</answer>", "liver", **kwargs)["score"]
    wrong_good = compute_score("d", "<think>x</think><answer>lung</answer>", "liver", **kwargs)["score"]
    right_good = compute_score("d", "<think>x</think><answer>liver</answer>", "liver", **kwargs)["score"]
    wrong_bad = compute_score("d", "lung", "liver", **kwargs)["score"]
    assert right_good > right_bad > wrong_good > wrong_bad


def test_format_defaults_and_bad_settings():
    good = "<think>x</think><answer>liver</answer>"
    assert compute_score("d", "<answer>liver</answer>", "liver")["score"] == pytest.approx(1.0 - DEFAULT_FORMAT_WEIGHT)
    assert compute_score("d", good, "liver", format_mode="bonus", format_weight=1.0)["score"] == 2.0
    assert compute_score("d", good, "liver", format_mode=None, format_weight=None)["score"] == 1.0
    bads = ({"format_mode": "bonus!"}, {"format_weight": -1}, {"format_weight": float("nan")}, {"format_weight": "x"})
    for bad in bads:
        with pytest.raises(ValueError):
            compute_score("d", good, "liver", **bad)


def test_compute_score_list_ground_truth():
    text = "<think>x</think><answer>lungs</answer>"
    assert compute_score("d", text, ["lung", "lungs"])["acc"] == 1.0
    assert compute_score("d", text, np.array(["lung", "lungs"]))["acc"] == 1.0
    assert compute_score("d", text, ("liver", None))["acc"] == 0.0
    assert compute_score("d", text, [])["acc"] == 0.0


def test_compute_score_options_from_parquet_shapes():
    text = "<think>x</think><answer>MRI</answer>"
    assert compute_score("d", text, "B", {"options": np.array(["CT", "MRI"])})["acc"] == 1.0
    assert compute_score("d", text, "B", {"options": {"A": "CT", "B": "MRI", "C": None}})["acc"] == 1.0
    # Empty options: not multiple choice; "MRI" vs "B" as open text is wrong.
    assert compute_score("d", text, "B", {"options": []})["acc"] == 0.0
    assert compute_score("d", text, "MRI", {"options": None, "question_type": None})["acc"] == 1.0


def test_compute_score_missing_question_type_from_pandas():
    text = "<think>x</think><answer>yes</answer>"
    assert compute_score("d", text, "yes", {"question_type": float("nan")})["acc"] == 1.0
    # an unknown type in the data is inferred: the reward never raises on a row's data
    assert compute_score("d", text, "yes", {"question_type": "yes_no"})["acc"] == 1.0
    with pytest.raises(ValueError):
        accuracy("yes", "yes", "yes_no")  # the direct API still refuses it


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True), st.text(max_size=6)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=4), inner, max_size=5),
    max_leaves=40,
)


@settings(deadline=None, max_examples=300)
@given(
    st.one_of(
        st.text(max_size=60), _json, st.builds(lambda a: f"<think>x</think><answer>{a}</answer>", st.text(max_size=20))
    ),
    _json,
    st.one_of(_json, st.fixed_dictionaries({"question_type": _json, "options": _json})),
)
def test_compute_score_never_raises_on_data(solution, ground_truth, extra_info):
    out = compute_score("d", solution, ground_truth, extra_info)
    assert out["acc"] in (0.0, 1.0) and out["format"] in (0.0, 1.0)
    assert np.isfinite(out["score"])


def test_compute_score_numeric_ground_truth():
    assert compute_score("d", "<think>x</think><answer>3</answer>", 3)["acc"] == 1.0


# ----------------------------------------------------------------------------------------------
# Adversarial inputs complete fast
# ----------------------------------------------------------------------------------------------

ADVERSARIAL = [
    "<answer>" * 100_000,
    "</answer>" * 100_000,
    "<answer>x</answer>" * 50_000,
    "<think>" * 100_000 + "</think><answer>B</answer>",
    "</tool_response>" * 100_000,
    "</tool_response>" + "<|im_end|>" * 100_000 + "<think>x</think><answer>B</answer>",
    "<think>x</think><answer>B</answer>" + "<|im_end|>" * 100_000,
    "<think>x</think><answer>" + "B " * 200_000 + "</answer>",
    "<think>" + "a" * 1_000_000 + "</think><answer>" + "(A) and " * 50_000 + "</answer>",
    "<think>x</think><answer>" + "left " * 100_000 + "lung</answer>",
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_text_is_scored(text):
    for qtype, options in (("open", None), ("closed", None), ("multiple_choice", OPTIONS)):
        out = compute_score("d", text, "left lung", {"question_type": qtype, "options": options})
        assert out["acc"] in (0.0, 1.0) and out["format"] in (0.0, 1.0)


def test_adversarial_scorers_direct():
    long = "A, " * 200_000
    assert score_multiple_choice(long, "A", OPTIONS) == 0.0
    assert score_open(long, "a a") == 0.0
    assert score_closed("yes " * 200_000, "yes") == 0.0
    assert score_closed("yes", "yes " * 200_000) == 0.0


# ----------------------------------------------------------------------------------------------
# Hedges never pay (issues 10 and 13): property tests over answers
# ----------------------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_phrase = st.lists(_word, min_size=1, max_size=3).map(" ".join)
_yes_no = st.sampled_from(sorted(YES_WORDS | NO_WORDS))
_HEDGES = (
    "{gt} or {other}",
    "{other} or {gt}",
    "{gt}, {other}",
    "{other}, {gt} or {more}",
    "{gt} and {other}",
    "{gt} {other}",
    "{other} {gt} {more}",
    "{gt}/{other}",
    "no {gt}",
    "not {gt}",
    "without {gt}",
    "{gt} not {other}",
    "either {gt} or {other}",
)


@settings(deadline=None, max_examples=400)
@given(_phrase, _phrase, _phrase, st.sampled_from(_HEDGES), st.sampled_from(["open", "closed", None]))
def test_no_hedged_answer_is_ever_correct(gt, other, more, template, qtype):
    pred = template.format(gt=gt, other=other, more=more)
    if normalize_tokens(pred) == normalize_tokens(gt):  # e.g. the gt itself is "x or y"
        return
    assert accuracy(pred, gt, qtype) == 0.0
    text = f"<think>x</think><answer>{pred}</answer>"
    assert compute_score("d", text, gt, {"question_type": qtype})["acc"] == 0.0


@settings(deadline=None, max_examples=200)
@given(_yes_no, _yes_no, st.sampled_from(_HEDGES))
def test_closed_hedges_are_wrong(gt, other, template):
    pred = template.format(gt=gt, other=other, more="maybe")
    for truth in ("yes", "no"):
        assert score_closed(pred, truth) == 0.0


@settings(deadline=None, max_examples=200)
@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from(["{a}.{b}", "0.{a}", "{a}{b}", "{a} {b}", "-{a}", "{a}.{b} mm", "0.{a} mm"]),
)
def test_number_fragments_are_wrong(a, b, template):
    pred = template.format(a=a, b=b)
    for gt in (str(a), f"{a} mm"):
        if normalize_tokens(pred) != normalize_tokens(gt):
            assert score_open(pred, gt) == 0.0


@settings(deadline=None, max_examples=200)
@given(
    st.lists(st.sampled_from("ABCDE"), min_size=2, max_size=4, unique=True),
    st.sampled_from([", ", " or ", " and ", " "]),
)
def test_multiple_choice_naming_two_options_is_wrong(letters, sep):
    options = {k: f"option {k.lower()}" for k in "ABCDE"}
    pred = sep.join(letters)
    for gt in letters:
        assert score_multiple_choice(pred, gt, options) == 0.0


# ------------------------------------------------------------------------------------------------
# Non-answers (issue 20 item 5): "n/a" is no answer, never "no" ("n a" -> article "a" dropped -> "n")
# ------------------------------------------------------------------------------------------------

NON_ANSWER_TEXTS = [
    "n/a", "N/A", "n.a.", "N. A.", "na", "NA.", "none", "None.", "unknown", "Unknown", "not sure",
    "I don't know", "idk", "not applicable", "cannot be determined", "The answer is n/a", "Answer: unknown",
    "nan", "null", "no idea", "uncertain",
]  # fmt: skip


@pytest.mark.parametrize("text", NON_ANSWER_TEXTS)
def test_non_answers_are_never_yes_or_no(text):
    assert is_non_answer(text)
    for gt in ("no", "yes", "No", "YES"):
        assert score_closed(text, gt) == 0.0
        assert accuracy(text, gt, None) == 0.0 and accuracy(text, gt, "closed") == 0.0
        assert lenient_accuracy(text, gt, "closed") == 0.0
        assert lenient_accuracy(f"{text}, it is not visible", gt, "closed") == 0.0
        answer = f"<think>hard to say</think><answer>{text}</answer>"
        assert compute_score("vqa_rad", answer, gt, {"question_type": "closed"})["acc"] == 0.0
        assert compute_score("vqa_rad", answer, gt, None)["acc"] == 0.0
    # a non-answer ground truth pays nothing either, a non-answer prediction included
    assert score_closed("no", text) == 0.0 and score_closed("yes", text) == 0.0 and score_closed(text, text) == 0.0


def test_n_slash_a_is_one_word():
    assert normalize_tokens("n/a") == normalize_tokens("N.A.") == normalize_tokens("na") == ["na"]
    # "n" alone stays the "no" synonym, and a comma is no slash
    assert score_closed("n", "no") == 1.0 and score_closed("N.", "no") == 1.0
    assert normalize_tokens("N, a mass") == ["n", "mass"]


@pytest.mark.parametrize("text", ["no", "No.", "yes", "nope", "none of the above", "nodule", "Nan Li", "unknown mass"])
def test_answers_are_not_non_answers(text):
    assert not is_non_answer(text)


def test_non_answer_list_is_normalised():
    # the set holds is_non_answer's own normal form, so every entry is reachable
    assert all(is_non_answer(entry) for entry in NON_ANSWERS)


def test_open_and_multiple_choice_keep_exact_match():
    # an open question whose answer is "none" ("Which lesion is present?") still scores by exact match
    assert score_open("None.", "none") == 1.0 and score_open("n/a", "no") == 0.0
    # an option whose text is a non-answer stays a choice
    options = {"A": "CT", "B": "None of the above"}
    assert score_multiple_choice("None of the above", "B", options) == 1.0
    assert score_multiple_choice("n/a", "A", options) == 0.0
