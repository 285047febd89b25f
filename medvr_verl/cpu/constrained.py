"""The ``constrained`` policy of the CPU rollout server: the model makes the decisions, a template the rest.

A random-weight model writes no zoom call, so it cannot learn to zoom from its own free text in a
CPU run. Under ``rollout.custom.cpu.policy=constrained`` every assistant turn follows a template:

* a zoom turn (no tool response yet)::

      <think>I zoom into one region.</think><tool_call>
      {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [<BOX>]}}
      </tool_call><|im_end|>

* an answer turn (the turn after a tool response)::

      <think>The zoomed region shows it.</think><answer><ANSWER></answer><|im_end|>

``<BOX>`` is one of the cells of a ``grid x grid`` partition of the first image *as the model sees it*
(``"x1, y1, x2, y2"`` in its pixels) and ``<ANSWER>`` one of ``answers``: the MODEL samples them,
token by token, from its own next-token distribution restricted to the tokens that continue some
candidate (a token trie over the tokenized candidates; a position where one token is left is
forced). So which region to zoom and what to answer are the model's decisions and training moves
them; the template text is fixed. An EVR fork (a request cut inside a zoom call, right before its
coordinates) gets the rest of the zoom turn from where the cut left it, so it samples a new box.

This module is the template and the trie (no torch); :class:`medvr_verl.cpu.server.CPURolloutServer`
runs the model. Options under ``rollout.custom.cpu.constrained``: ``grid`` (cells per side, default
2), ``answers`` (default ``[A, B]``), ``entropy`` (what goes to EVR, see the server),
``train_forced`` (default false: template tokens get ``response_mask`` 0, see the server).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

ZOOM_PREFIX = (
    '<think>I zoom into one region.</think><tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": ['
)
ZOOM_SUFFIX = "]}}\n</tool_call>"
ANSWER_PREFIX = "<think>The zoomed region shows it.</think><answer>"
ANSWER_SUFFIX = "</answer>"
ASSISTANT_START = "<|im_start|>assistant\n"
TURN_START = "<|im_start|>"
ENTROPY_MODES = ("policy", "model")


@dataclass(frozen=True)
class Choice:
    """A decision: one of ``candidates`` (strings), sampled by the model."""

    candidates: tuple[str, ...]


Segment = str | Choice


@dataclass(frozen=True)
class ConstrainedOptions:
    """``rollout.custom.cpu.constrained``: ``grid`` cells per side, ``answers``, ``entropy`` mode."""

    grid: int = 2
    answers: tuple[str, ...] = ("A", "B")
    entropy: str = "policy"
    train_forced: bool = False

    def __post_init__(self):
        if int(self.grid) < 1:
            raise ValueError(f"rollout.custom.cpu.constrained.grid must be >= 1, got {self.grid}")
        if len(self.answers) < 1 or any(not isinstance(a, str) or not a for a in self.answers):
            raise ValueError(f"rollout.custom.cpu.constrained.answers must be non-empty strings, got {self.answers}")
        if self.entropy not in ENTROPY_MODES:
            raise ValueError(
                f"rollout.custom.cpu.constrained.entropy must be one of {ENTROPY_MODES}, got {self.entropy!r}"
            )

    @classmethod
    def from_dict(cls, options) -> ConstrainedOptions:
        options = dict(options or {})
        unknown = sorted(set(options) - {"grid", "answers", "entropy", "train_forced"})
        if unknown:
            raise ValueError(f"rollout.custom.cpu.constrained: unknown options {unknown}")
        if "answers" in options:
            options["answers"] = tuple(str(a) for a in options["answers"])
        if "grid" in options:
            options["grid"] = int(options["grid"])
        if "train_forced" in options:
            options["train_forced"] = bool(options["train_forced"])
        return cls(**options)


def grid_boxes(width: int, height: int, grid: int) -> list[list[int]]:
    """The ``grid x grid`` cells of a ``width x height`` image, row-major, as integer pixel boxes."""
    xs = [round(width * i / grid) for i in range(grid + 1)]
    ys = [round(height * j / grid) for j in range(grid + 1)]
    return [[xs[i], ys[j], xs[i + 1], ys[j + 1]] for j in range(grid) for i in range(grid)]


def box_text(box: Sequence[int]) -> str:
    return ", ".join(str(int(v)) for v in box)


def current_turn(context: str) -> tuple[str, bool]:
    """``(text already written in the open assistant turn, whether a tool response came before it)``.

    ``context`` is the decoded request (prompt and earlier turns, special tokens kept). Raises
    ``ValueError`` when the request does not end inside an assistant turn.
    """
    start = context.rfind(ASSISTANT_START)
    if start < 0:
        raise ValueError("constrained policy: the request holds no open assistant turn")
    written = context[start + len(ASSISTANT_START) :]
    if TURN_START in written:
        raise ValueError("constrained policy: the request does not end inside an assistant turn")
    previous = context.rfind(TURN_START, 0, start)
    after_tool = previous >= 0 and "<tool_response>" in context[previous:start]
    return written, after_tool


def plan_turn(context: str, image_size: tuple[int, int] | None, options: ConstrainedOptions) -> list[Segment]:
    """The segments of the rest of the open assistant turn (fixed text and :class:`Choice`).

    A turn after a tool response answers; any other turn zooms. Text already written in the turn (an
    EVR fork's cut prefix) must be a prefix of the template up to the decision it stops before.
    """
    written, after_tool = current_turn(context)
    if after_tool:
        prefix, choice, suffix = ANSWER_PREFIX, Choice(tuple(options.answers)), ANSWER_SUFFIX
    else:
        if image_size is None:
            raise ValueError("constrained policy: a zoom turn needs an image in the request")
        boxes = grid_boxes(image_size[0], image_size[1], options.grid)
        prefix, choice, suffix = ZOOM_PREFIX, Choice(tuple(box_text(b) for b in boxes)), ZOOM_SUFFIX
    if not prefix.startswith(written):
        # an EVR fork is cut right before the coordinates; the tokenizer may have split differently
        # around the cut, so compare without surrounding whitespace as well
        stripped = written.rstrip()
        if not prefix.rstrip().startswith(stripped):
            raise ValueError(f"constrained policy: the turn so far is not the template's: {written[-80:]!r}")
        rest = prefix[len(stripped) :]
    else:
        rest = prefix[len(written) :]
    return [s for s in (rest, choice, suffix) if s != ""]


class TokenTrie:
    """The tokenized candidates of a :class:`Choice`: which tokens may come next after a prefix."""

    def __init__(self, candidates: Sequence[str], encode: Callable[[str], list[int]]):
        self.sequences = [tuple(encode(c)) for c in candidates]
        if any(not s for s in self.sequences):
            raise ValueError("constrained policy: a candidate encodes to no tokens")
        for i, a in enumerate(self.sequences):
            for j, b in enumerate(self.sequences):
                if i != j and len(a) <= len(b) and b[: len(a)] == a:
                    raise ValueError(f"constrained policy: candidate {candidates[i]!r} is a token prefix of another")

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Next tokens after ``prefix`` (sorted); ``[]`` when ``prefix`` is a whole candidate."""
        prefix = tuple(prefix)
        if prefix in self.sequences:
            return []
        return sorted({s[len(prefix)] for s in self.sequences if len(s) > len(prefix) and s[: len(prefix)] == prefix})
