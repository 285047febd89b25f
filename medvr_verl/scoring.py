"""Answer extraction, format reward and accuracy for medical VQA. Pure: no veRL, no torch.

A response looks like::

    <think>...</think><tool_call>{"name": "zoom_in", ...}</tool_call>
    user
    <tool_response>
    ...
    </tool_response>
    assistant
    <think>...</think><answer>B</answer>

(a multi-turn response decoded with special tokens skipped: the role words of the chat template
stay between turns). All scanning is ``str.find``-based and linear in the text length; there is no
regex that could backtrack on adversarial model output.

:func:`compute_score` is a plain callable usable as veRL's ``custom_reward_function``.

Accuracy: normalised exact match (the reward and the evaluation use the same rule)
--------------------------------------------------------------------------------------
Open and closed answers are compared as token lists after one normalisation
(:func:`normalize_tokens`), applied to prediction and ground truth alike:

1. Unicode NFKC, lowercase; a leading "the answer is" / "answer:" (and similar) is dropped;
2. punctuation becomes a space (apostrophes vanish, a decimal point between digits stays);
3. articles ``a``, ``an``, ``the`` are dropped; whitespace collapses;
4. numbers are canonical decimals ("3.50" -> "3.5", "03" -> "3"), never split or rounded;
5. simple plurals fold to the singular ("kidneys" -> "kidney", "arteries" -> "artery",
   "masses" -> "mass"; words ending in "ss", "us", "is" and words under 4 letters are kept).

Then the token lists must be **equal**. Nothing is accepted by containment, so hedging cannot pay:
a list of candidates ("liver, lung or heart", "liver lung heart"), an alternative ("yes or no"), a
negation ("no pneumonia", "not left", "without pneumonia") and a number fragment ("3.5" or "0.3"
for "3", "0.5 mm" for "5 mm") are all wrong. Closed (yes/no) questions accept a one-word answer
from the yes or no synonym set (``yes y yeah yep true correct`` / ``no n nope false incorrect``);
"Yes, there is a mass" is wrong for the reward (put the explanation in ``<think>``). A non-answer
("n/a", "na", "none", "unknown", "not sure", "I don't know", ... :data:`NON_ANSWERS`, compared
before articles are dropped, so "n/a" never becomes the "no" synonym "n") has no polarity: it is
never "yes" or "no", for a prediction or a ground truth; it scores 0.0 against any closed ground
truth and in the lenient column. Multiple
choice accepts the option letter or exactly one option's text, nothing that names two options.

:func:`lenient_accuracy` keeps the older bounded-containment rule of LLaVA-Med-style evaluators
("left lung" inside "mass in left lung") for an extra evaluation column only; it is never used in
the reward.

Format: a small penalty, switchable
-------------------------------------
``R_format`` is the paper's "small format penalty": by default (``format_mode="penalty"``,
``format_weight=0.1``) a response without the required format loses 0.1, so
``score = acc - 0.1 * (1 - format)``: a correct answer always outscores a wrong one whatever the
format. ``format_mode="bonus"`` gives the older ``acc + format_weight * format`` (with
``format_weight=1.0`` a wrong, well-formatted answer ties a correct, badly formatted one).

Size (over 500 lines): answer extraction, normalisation, the three accuracy rules and the format
reward are one contract that the reward and evaluation must share, so they stay together; much of
the length is the documented normalisation rules.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_FORMAT_MODE",
    "DEFAULT_FORMAT_WEIGHT",
    "FORMAT_MODES",
    "NON_ANSWERS",
    "NO_WORDS",
    "QUESTION_TYPES",
    "YES_WORDS",
    "accuracy",
    "compute_score",
    "extract_answer",
    "format_reward",
    "is_non_answer",
    "infer_question_type",
    "lenient_accuracy",
    "normalize_text",
    "normalize_tokens",
    "score_closed",
    "score_multiple_choice",
    "score_open",
]

QUESTION_TYPES = ("multiple_choice", "closed", "open")
FORMAT_MODES = ("penalty", "bonus")
DEFAULT_FORMAT_MODE = "penalty"
DEFAULT_FORMAT_WEIGHT = 0.1

_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_TOOL_RESPONSE_CLOSE = "</tool_response>"
_TOOL_CALL_OPEN = "<tool_call>"
# Chat-template pieces that may sit between a tool response and the next assistant turn, or at the
# very end, depending on whether special tokens were skipped while decoding.
_TURN_HEADER = ("<|im_end|>", "<|im_start|>", "assistant")
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")

# ----------------------------------------------------------------------------------------------
# Extraction and format
# ----------------------------------------------------------------------------------------------


def extract_answer(text: str | None) -> str | None:
    """Stripped content of the last ``<answer>...</answer>``.

    The last ``<answer>`` opening counts; None when there is none or when it is never closed (a
    truncated final answer does not fall back to an earlier one).
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(_ANSWER_OPEN)
    if start < 0:
        return None
    start += len(_ANSWER_OPEN)
    end = text.find(_ANSWER_CLOSE, start)
    if end < 0:
        return None
    return text[start:end].strip()


def _final_segment(text: str) -> str:
    """The last assistant turn: text after the last ``</tool_response>`` with the chat template's
    turn header (``assistant`` and, if not skipped, ``<|im_end|>``/``<|im_start|>``) removed, and
    trailing end-of-turn markers removed; the whole text when there was no tool response."""
    cut = text.rfind(_TOOL_RESPONSE_CLOSE)
    segment = text if cut < 0 else text[cut + len(_TOOL_RESPONSE_CLOSE) :]
    segment = segment.strip()
    if cut >= 0:
        segment = _strip_markers(segment, _TURN_HEADER, front=True)
    return _strip_markers(segment, _END_MARKERS, front=False)


def _strip_markers(segment: str, markers: tuple[str, ...], *, front: bool) -> str:
    """Remove up to 4 of ``markers`` (and whitespace) from one end of ``segment``.

    Bounded on purpose: each removal copies the string, and a response stuffed with thousands of
    markers must not cost quadratic time (it fails the format check anyway).
    """
    for _ in range(4):
        for marker in markers:
            if front and segment.startswith(marker):
                segment = segment[len(marker) :].lstrip()
                break
            if not front and segment.endswith(marker):
                segment = segment[: -len(marker)].rstrip()
                break
        else:
            break
    return segment


def format_reward(text: str | None) -> float:
    """1.0 when the response ends in a well-formed final turn, else 0.0.

    Rule:

    - the whole text holds exactly one ``<answer>`` and one ``</answer>`` (no stray answer tags in
      earlier turns or inside the final one);
    - the final segment is the text after the last ``</tool_response>`` (the whole text when the
      model never called a tool), less the chat template's turn header (``assistant``) and a
      trailing ``<|im_end|>``/``<|endoftext|>`` if special tokens were kept;
    - that segment is exactly ``<think>T</think>`` then ``<answer>A</answer>``, with only
      whitespace before, between and after; ``T`` holds no think tags (it may be empty); ``A`` is
      not blank; the segment holds no ``<tool_call>`` (a final turn does not call tools).

    Earlier turns are not checked here: their tool calls are validated by the tool itself.
    """
    if not isinstance(text, str):
        return 0.0
    if text.count(_ANSWER_OPEN) != 1 or text.count(_ANSWER_CLOSE) != 1:
        return 0.0
    segment = _final_segment(text)
    if _TOOL_CALL_OPEN in segment or not segment.startswith(_THINK_OPEN):
        return 0.0
    think_end = segment.find(_THINK_CLOSE)
    if think_end < 0 or _THINK_OPEN in segment[len(_THINK_OPEN) : think_end]:
        return 0.0
    rest = segment[think_end + len(_THINK_CLOSE) :].lstrip()
    if not (rest.startswith(_ANSWER_OPEN) and rest.endswith(_ANSWER_CLOSE)):
        return 0.0
    answer = rest[len(_ANSWER_OPEN) : -len(_ANSWER_CLOSE)]
    if not answer.strip() or _THINK_OPEN in answer or _THINK_CLOSE in answer:
        return 0.0
    return 1.0


# ----------------------------------------------------------------------------------------------
# Normalization
# ----------------------------------------------------------------------------------------------

_ARTICLES = frozenset({"a", "an", "the"})
# Punctuation becomes a space so "t2-weighted" and "t2 weighted" agree; apostrophes vanish so
# "patient's" is one token. Common Unicode quotes and dashes too.
_PUNCT_TABLE = str.maketrans(
    {
        **{ch: " " for ch in string.punctuation if ch != "'"},
        "'": "",
        "\u2019": "",
        "\u2018": "",
        **{ch: " " for ch in "\u201c\u201d\u2013\u2014\u2026\u00b7"},
    }
)


def _tokens(text: str) -> list[str]:
    """Lowercase, punctuation -> space, split, drop articles a/an/the (no plural or number
    folding: the multiple-choice reader and :func:`normalize_text` use this)."""
    return [t for t in text.lower().translate(_PUNCT_TABLE).split() if t not in _ARTICLES]


def normalize_text(text: str) -> str:
    """VQA-style normalization: lowercase, strip punctuation, drop articles (a, an, the),
    collapse whitespace. ``"The X-ray."`` -> ``"x ray"``."""
    return " ".join(_tokens(text))


# "n/a", "N.A.", "n. a": one word "na" (else punctuation -> space and the article rule leave "n").
_N_SLASH_A = re.compile(r"\bn\s*[/.]\s*a\b\.?")
# A '.' between two digits is a decimal point, not punctuation. Fixed-width look-arounds: linear.
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_POINT_MARK = "\x00"  # stands for a kept decimal point while punctuation is translated away
_ANSWER_LEAD_INS = (
    "the final answer is",
    "the correct answer is",
    "the answer is",
    "final answer:",
    "final answer is",
    "answer is",
    "answer:",
)


def _canonical_number(token: str) -> str | None:
    """ "3.50" -> "3.5", "03" -> "3", "3.0" -> "3"; None when ``token`` is not a plain decimal."""
    whole, dot, frac = token.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and not (frac.isdigit() and frac.isascii())):
        return None
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _singular(token: str) -> str:
    """Fold a simple English plural: "kidneys" -> "kidney", "arteries" -> "artery", "masses" ->
    "mass". Words under 4 letters and words ending in "ss", "us", "is" are kept."""
    if len(token) < 4 or not token.isalpha() or not token.endswith("s"):
        return token
    if token.endswith(("ss", "us", "is")):
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith("sses"):
        return token[:-2]
    return token[:-1]


def _strip_answer_lead_in(text: str) -> str:
    lowered = text.lower()
    for lead in _ANSWER_LEAD_INS:
        if lowered.startswith(lead):
            after = text[len(lead) :]
            rest = after.lstrip(" \t\n:-")
            if rest and not after[0].isalnum():
                return rest
    return text


def normalize_tokens(text: str) -> list[str]:
    """The normalised tokens :func:`score_open` and :func:`score_closed` compare (module docstring)."""
    text = unicodedata.normalize("NFKC", str(text)).strip()
    text = _strip_answer_lead_in(text)
    text = _DECIMAL_POINT.sub(_POINT_MARK, _N_SLASH_A.sub("na", text.lower()))
    out = []
    for raw in text.translate(_PUNCT_TABLE).split():
        token = raw.replace(_POINT_MARK, ".")
        if token in _ARTICLES:
            continue
        number = _canonical_number(token)
        out.append(number if number is not None else _singular(token))
    return out


# ----------------------------------------------------------------------------------------------
# Multiple choice
# ----------------------------------------------------------------------------------------------

_LETTERS = string.ascii_uppercase
# Lead-ins stripped before reading a letter: "The answer is (B)", "Option B", "Answer: B".
_LEAD_INS = (
    "the correct answer is",
    "the correct option is",
    "the answer is",
    "correct answer:",
    "correct answer",
    "answer is",
    "answer:",
    "answer",
    "option",
    "choice",
)
_STRONG_AFTER = ".:)"  # a letter followed by one of these is unmistakably a choice ("B." "B:")
_CLOSE_FOR = {"(": ")", "[": "]"}
_CONJUNCTIONS = frozenset({"and", "or", "&"})


def _strip_lead_ins(text: str) -> str:
    """Remove leading phrases like 'The answer is' / 'Option' (case-insensitive, whole words)."""
    for _ in range(3):  # "Answer: option B" needs two rounds; bounded
        lowered = text.lower()
        for lead in _LEAD_INS:
            if lowered.startswith(lead):
                after = text[len(lead) :]
                if not after or not after[0].isalnum():
                    text = after.lstrip(" \t\n:-")
                    break
        else:
            break
    return text


def _options_map(options: Mapping | Sequence | None) -> dict[str, str]:
    """Options as ``{LETTER: normalized text}``; list options get A, B, ... in order.

    Dict keys like "a", "(A)", "A." become "A"; None values (parquet structs fill absent letters
    with None) are dropped. An option text that starts with its own letter marker ("A: CT",
    PMC-VQA style) loses it.
    """
    if options is None:
        return {}
    if isinstance(options, Mapping):
        pairs = [(str(k).strip().strip("().:[] ").upper(), v) for k, v in options.items() if v is not None]
    else:
        items = list(options)
        if len(items) > len(_LETTERS):
            raise ValueError(f"at most {len(_LETTERS)} options are supported, got {len(items)}")
        pairs = list(zip(_LETTERS, items))
    out: dict[str, str] = {}
    for letter, text in pairs:
        text = str(text).strip()
        parsed = _leading_letter(text, {letter})
        if parsed is not None and parsed[2] and parsed[1]:
            text = parsed[1]
        out[letter] = normalize_text(text)
    return out


def _leading_letter(text: str, letters: set[str] | frozenset[str]) -> tuple[str, str, bool] | None:
    """Read a choice letter at the start of ``text``.

    Returns ``(LETTER, rest, strong)`` or None. Strong forms leave no doubt that a letter was
    meant: "(B)", "[B]", "B", "B.", "B:", "B)" with anything after. A letter followed by a space
    and more text ("B MRI", but also "A CT scan", where "A" is an article) is weak: it only counts
    when the rest names that same option.
    """
    if not text:
        return None
    if text[0] in _CLOSE_FOR:
        if len(text) >= 3 and text[2] == _CLOSE_FOR[text[0]] and text[1].upper() in letters:
            return text[1].upper(), text[3:].strip(), True
        return None
    letter = text[0].upper()
    if letter not in letters or not text[0].isascii():
        return None
    if len(text) == 1:
        return letter, "", True
    nxt = text[1]
    if nxt in _STRONG_AFTER:
        return letter, text[2:].strip(), True
    if nxt.isspace():
        rest = text[1:].strip()
        # "B - MRI" / "B : MRI": a separator after the space is as clear as "B:".
        if rest[:1] in "-:":
            return letter, rest[1:].strip(), True
        return letter, rest, False
    return None


def _only_letters(text: str, letters: set[str] | frozenset[str]) -> bool:
    """True when ``text`` is nothing but more choice letters ("B", "and (C)", ", D.")."""
    words = [w for w in text.translate(_PUNCT_TABLE).split() if w.lower() not in _CONJUNCTIONS]
    return bool(words) and all(len(w) == 1 and w.upper() in letters for w in words)


def _resolve_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter that ``text`` denotes, or None (unreadable, ambiguous or several).

    ``options`` maps letters to normalized texts; when empty, any letter A-Z is accepted and text
    matching is impossible.
    """
    letters = set(options) if options else set(_LETTERS)
    body = _strip_lead_ins(text.strip())
    parsed = _leading_letter(body, letters)
    if parsed is not None:
        letter, rest, strong = parsed
        if rest and _only_letters(rest, letters):
            return None  # "A, B" / "(A) and (C)" / "B A": several letters is a wrong answer
        rest_norm = normalize_text(rest)
        if not rest_norm or rest_norm == options.get(letter):
            return letter
        if strong:
            named = [k for k, v in options.items() if v == rest_norm and k != letter]
            return None if named else letter  # "B: CT" when CT is option A contradicts itself
        # Weak: fall through and read the whole text as an option's text.
    wanted = {normalize_text(body), normalize_text(text)}
    matches = [k for k, v in options.items() if v and v in wanted]
    return matches[0] if len(matches) == 1 else None


def score_multiple_choice(pred: str, gt: str, options: Mapping[str, object] | Sequence[object] | None) -> float:
    """1.0 when ``pred`` and ``gt`` denote the same option, else 0.0.

    Args:
        pred: the model's answer: a letter ("B", "(B)", "B.", "Option B", "The answer is B",
            "B: MRI") or an option's text (case- and punctuation-insensitive).
        gt: a letter or an option's text.
        options: dict letter -> text ({"A": "CT", "B": "MRI"}), or a list (letters A, B, ... in
            order), or None (letters only).

    A prediction naming several letters ("A, B", "A and C", "AB") is wrong; so is a letter whose
    attached text names a different option ("B: CT" when CT is option A). When ``gt`` resolves to
    no option, normalized texts are compared.
    """
    if pred is None or gt is None:
        return 0.0
    opts = _options_map(options)
    gt_letter = _resolve_choice(str(gt), opts)
    if gt_letter is None:
        return float(normalize_text(str(pred)) == normalize_text(str(gt)) != "")
    return float(_resolve_choice(str(pred), opts) == gt_letter)


# ----------------------------------------------------------------------------------------------
# Closed (yes/no) and open questions
# ----------------------------------------------------------------------------------------------

_YES_NO = frozenset({"yes", "no"})
YES_WORDS = frozenset({"yes", "y", "yeah", "yep", "true", "correct"})
NO_WORDS = frozenset({"no", "n", "nope", "false", "incorrect"})
NON_ANSWERS = frozenset(
    {
        "na", "nan", "none", "nil", "null", "nothing", "unknown", "unk", "unclear",
        "uncertain", "unsure", "not sure", "undetermined", "indeterminate", "cannot determine",
        "cannot be determined", "can not be determined", "cannot tell", "can not tell", "cant tell",
        "cant determine", "cant say", "cannot say", "not known", "not applicable", "not available",
        "not determinable", "dont know", "i dont know", "do not know", "i do not know", "idk",
        "no answer", "no idea", "not enough information", "insufficient information", "unanswerable",
    }
)  # fmt: skip
"""Non-answers, as :func:`is_non_answer` compares them (lowercase, punctuation -> space, articles kept)."""


def is_non_answer(text: str | None) -> bool:
    """Whether ``text`` says it gives no answer ("n/a", "N.A.", "None.", "Unknown", "I don't know").

    Compared before articles are dropped: :func:`normalize_tokens` turns "n/a" into "n", a "no" synonym.
    """
    if text is None:
        return False
    raw = _strip_answer_lead_in(unicodedata.normalize("NFKC", str(text)).strip())
    return " ".join(_N_SLASH_A.sub("na", raw.lower()).translate(_PUNCT_TABLE).split()) in NON_ANSWERS


def _starts_with_non_answer(text: str) -> bool:
    """Whether the first words of ``text`` (up to 6, split at whitespace) are a non-answer."""
    words = unicodedata.normalize("NFKC", str(text)).split()
    return any(is_non_answer(" ".join(words[:k])) for k in range(1, min(len(words), 6) + 1))


def _polarity(tokens: list[str]) -> str | None:
    """ "yes" / "no" for a one-word answer from either synonym set, else None."""
    if len(tokens) != 1:
        return None
    if tokens[0] in YES_WORDS:
        return "yes"
    if tokens[0] in NO_WORDS:
        return "no"
    return None


def score_closed(pred: str, gt: str) -> float:
    """Yes/no questions (VQA-RAD, SLAKE, PathVQA closed): exact match of the polarity.

    A ground truth that normalizes (:func:`normalize_tokens`) to one yes/no word needs a
    prediction that is one word of the same synonym set ("Yes.", "true"); anything longer ("yes
    or no", "yes, there is a mass", "not yes") is wrong. If ``gt`` is no yes/no word the
    normalized token lists must be equal. A non-answer (:func:`is_non_answer`: "n/a", "unknown")
    on either side scores 0.0.
    """
    if pred is None or gt is None:
        return 0.0
    if is_non_answer(pred) or is_non_answer(gt):
        return 0.0  # "n/a", "unknown": no polarity, and no answer to match
    gt_tokens = normalize_tokens(gt)
    pred_tokens = normalize_tokens(pred)
    want = _polarity(gt_tokens)
    if want is not None:
        return float(_polarity(pred_tokens) == want)
    return float(bool(gt_tokens) and pred_tokens == gt_tokens)


def score_open(pred: str, gt: str) -> float:
    """Open-ended answers: normalised exact match (see the module docstring for the rule).

    1.0 when :func:`normalize_tokens` gives the same non-empty token list for both, else 0.0.
    Lists, alternatives, negations and number fragments are therefore wrong.
    """
    if pred is None or gt is None:
        return 0.0
    gt_tokens = normalize_tokens(gt)
    return float(bool(gt_tokens) and normalize_tokens(pred) == gt_tokens)


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    """True when ``needle`` occurs as a contiguous run of tokens in ``haystack``."""
    n = len(needle)
    first = needle[0]
    for i in range(len(haystack) - n + 1):  # haystack is short: bounded by the length rule
        if haystack[i] == first and haystack[i : i + n] == needle:
            return True
    return False


def lenient_accuracy(pred: str | None, gt: str, question_type: str | None = None) -> float:
    """Evaluation-only lenient accuracy (an extra column; **never** the reward).

    Open: exact match, or the ground truth's tokens as a contiguous run of a prediction of at most
    ``max(2 * g, g + 3)`` tokens (the LLaVA-Med / MedVLM-R1 recall rule). Closed: the first word's
    polarity. Other types: :func:`accuracy`.
    """
    if pred is None or gt is None:
        return 0.0
    if question_type is None:
        question_type = infer_question_type(gt)
    gt_tokens = normalize_tokens(gt)
    pred_tokens = normalize_tokens(pred)
    if question_type == "closed":
        if is_non_answer(gt) or _starts_with_non_answer(pred):
            return 0.0
        want = _polarity(gt_tokens)
        if want is not None:
            return float(bool(pred_tokens) and _polarity(pred_tokens[:1]) == want)
        return float(bool(gt_tokens) and pred_tokens == gt_tokens)
    if question_type != "open":
        return accuracy(pred, gt, question_type)
    if not gt_tokens or not pred_tokens:
        return 0.0
    if pred_tokens == gt_tokens:
        return 1.0
    g = len(gt_tokens)
    if len(pred_tokens) > max(2 * g, g + 3):
        return 0.0
    return float(_contains_run(pred_tokens, gt_tokens))


# ----------------------------------------------------------------------------------------------
# Dispatch and the veRL entry point
# ----------------------------------------------------------------------------------------------


def _has_options(options: object) -> bool:
    if options is None:
        return False
    try:
        return len(options) > 0  # type: ignore[arg-type]
    except TypeError:
        return False


def infer_question_type(gt: str, options: object = None) -> str:
    """The question type to score ``gt`` with.

    "multiple_choice" when options are given, "closed" when ``gt`` normalizes to exactly "yes" or
    "no", else "open".
    """
    if _has_options(options):
        return "multiple_choice"
    if gt is not None and normalize_text(str(gt)) in _YES_NO:
        return "closed"
    return "open"


def accuracy(
    pred: str | None,
    gt: str,
    question_type: str | None,
    options: Mapping[str, object] | Sequence[object] | None = None,
) -> float:
    """Accuracy of one prediction, 0.0 or 1.0.

    Args:
        pred: extracted answer; None (no answer) scores 0.0.
        gt: ground truth.
        question_type: "multiple_choice", "closed", "open", or None to infer it
            (:func:`infer_question_type`).
        options: the choices, for multiple choice.
    Raises:
        ValueError: unknown ``question_type``.
    """
    if question_type is None:
        question_type = infer_question_type(gt, options)
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"question_type must be one of {QUESTION_TYPES} or None, got {question_type!r}")
    if pred is None:
        return 0.0
    if question_type == "multiple_choice":
        return score_multiple_choice(pred, gt, options)
    if question_type == "closed":
        return score_closed(pred, gt)
    return score_open(pred, gt)


def _as_list(value: object) -> list:
    """A ground truth or an option list as a plain list (numpy arrays from parquet included)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        value = tolist()
        if not isinstance(value, list):
            return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _clean_options(options: object) -> Mapping | list | None:
    """Options from a dataset row: dict stays dict (None values dropped later), anything
    array-like becomes a list, empty becomes None."""
    if options is None:
        return None
    if isinstance(options, Mapping):
        return options if any(v is not None for v in options.values()) else None
    items = _as_list(options)
    return items or None


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: str | Sequence[str],
    extra_info: Mapping[str, object] | None = None,
    **kwargs: object,
) -> dict:
    """veRL ``custom_reward_function``: accuracy plus the format term for one response.

    Args:
        data_source: dataset name (unused; the question type comes from ``extra_info``).
        solution_str: the decoded response.
        ground_truth: one answer or a list of acceptable answers (any match counts).
        extra_info: may hold "question_type" and "options".
        **kwargs: ``format_mode`` ("penalty", default, or "bonus") and ``format_weight`` (default
            0.1, a finite number >= 0); anything else veRL passes is ignored.

    Returns:
        ``{"score": acc + format term, "acc": acc, "format": fmt, "pred": answer or ""}`` where the
        format term is ``-format_weight * (1 - fmt)`` ("penalty") or ``format_weight * fmt``
        ("bonus").

    Never raises on a row's data: an unknown ``question_type`` is inferred, unusable options or
    ground truths score 0.0.

    Raises:
        ValueError: unknown ``format_mode`` or a negative / non-finite ``format_weight`` (settings).
    """
    format_weight = kwargs.get("format_weight", DEFAULT_FORMAT_WEIGHT)
    format_mode = kwargs.get("format_mode", DEFAULT_FORMAT_MODE)
    if format_weight is None:
        format_weight = DEFAULT_FORMAT_WEIGHT
    if format_mode is None:
        format_mode = DEFAULT_FORMAT_MODE
    if format_mode not in FORMAT_MODES:
        raise ValueError(f"format_mode must be one of {FORMAT_MODES}, got {format_mode!r}")
    try:
        format_weight = float(format_weight)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"format_weight must be a finite number >= 0, got {format_weight!r}") from None
    if not (math.isfinite(format_weight) and format_weight >= 0):
        raise ValueError(f"format_weight must be a finite number >= 0, got {format_weight!r}")
    info = extra_info if isinstance(extra_info, Mapping) else {}
    # Parquet/pandas rows may hold None or NaN for a missing type: anything but a non-empty str
    # means "infer it".
    # An unknown type is inferred too: the reward never raises on a row's data (issue 10).
    raw_type = info.get("question_type")
    question_type = raw_type if isinstance(raw_type, str) and raw_type in QUESTION_TYPES else None
    try:
        options = _clean_options(info.get("options"))
    except Exception:  # an options object that cannot even be listed
        options = None

    pred = extract_answer(solution_str)
    fmt = format_reward(solution_str)
    acc = 0.0
    if pred is not None:
        try:
            truths = _as_list(ground_truth)
        except Exception:
            truths = []
        for gt in truths:
            if gt is None:
                continue
            try:
                value = accuracy(pred, str(gt), question_type, options)
            except (ValueError, TypeError):  # e.g. more options than letters: nothing can match
                value = 0.0
            acc = max(acc, value)
            if acc >= 1.0:
                break
    term = format_weight * fmt if format_mode == "bonus" else -format_weight * (1.0 - fmt)
    return {
        "score": acc + term,
        "acc": acc,
        "format": fmt,
        "pred": pred if pred is not None else "",
    }
