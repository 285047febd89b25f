"""Whether a row's ground truth can ever be matched by an answer (pure: no veRL, no torch).

:func:`medvr_verl.scoring.compute_score` compares text: a ground truth that is not text (the integer
``0`` for option A), is empty, or names no option of a multiple-choice question scores every answer
0.0, and GRPO then learns nothing from the row without anyone being told. :func:`ground_truth_problem`
names the problem and the fix; the data check before Ray (:mod:`medvr_verl.data_check`) and
``medvr_cca`` during training (``medvr/gt_unusable/count``) use it.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from typing import NamedTuple

from medvr_verl.scoring import _as_list as _truths  # a ground truth or options as a plain list
from medvr_verl.scoring import score_multiple_choice


class GroundTruthProblem(NamedTuple):
    kind: str
    """One cause: ``missing`` | ``not_text`` | ``empty`` | ``no_option``."""
    message: str
    """What is wrong and how to fix it, one sentence."""


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def option_letters(options: object) -> list[str]:
    """The letters a multiple-choice row offers (``{"A": ..., "B": None}`` -> ``["A"]``)."""
    if options is None:
        return []
    if isinstance(options, Mapping):
        return [str(k).strip().strip("().:[] ").upper() for k, v in options.items() if v is not None]
    try:
        items = _truths(options)
    except Exception:
        return []
    return list(string.ascii_uppercase[: len(items)])


def ground_truth_problem(ground_truth: object, extra_info: object = None) -> GroundTruthProblem | None:
    """Why no answer can ever be scored correct against ``ground_truth``, or ``None`` when one can.

    Args:
        ground_truth: ``reward_model.ground_truth`` of a row (text, or a list of acceptable texts).
        extra_info: the row's ``extra_info`` (``question_type``, ``options``), or None.
    """
    try:
        truths = [t for t in _truths(ground_truth) if not _is_missing(t)]
    except Exception:
        truths = []
    if not truths:
        return GroundTruthProblem("missing", "reward_model.ground_truth is missing: write the correct answer as text")
    not_text = [t for t in truths if not isinstance(t, str)]
    if not_text:
        value = not_text[0]
        return GroundTruthProblem(
            "not_text",
            f"reward_model.ground_truth {value!r} is a {type(value).__name__}, not text: the scorer compares "
            "text, so no answer ever matches; write the answer as a string (the option letter, e.g. 'A', for a "
            "multiple-choice question)",
        )
    if not any(t.strip() for t in truths):
        return GroundTruthProblem("empty", "reward_model.ground_truth is an empty string: write the correct answer")
    info = extra_info if isinstance(extra_info, Mapping) else {}
    options = info.get("options")
    letters = option_letters(options)
    if letters and info.get("question_type") in (None, "multiple_choice"):
        if not any(score_multiple_choice(letter, t, options) == 1.0 for t in truths for letter in letters):
            return GroundTruthProblem(
                "no_option",
                f"reward_model.ground_truth {truths[0]!r} names none of the options {letters}: write the "
                "correct option's letter or its text",
            )
    return None
