"""A scripted EVR group: base trajectories that are sure or unsure where to look, and forks.

Base trajectories alternate per prompt: even ones write their zoom coordinates with flat, low
entropy; odd ones with an entropy spike on the coordinate tokens. A fork's request ends inside a
zoom call, right before the coordinates; the script then continues with other coordinates.
"""

from __future__ import annotations

import itertools
import re

from cca_script import BOTTOM_RIGHT, TOP_LEFT

from medvr_verl.testing.scripted_server import ScriptedTurn
from medvr_verl.testing.scripting import SpikeEntropies, is_fork_request, zoom_call

LOW, SPIKE = 0.1, 3.0
ANSWER = "<think>seen it</think><answer>A</answer>"
_BASE = re.compile(r"base (\d+)")


class EVRScript:
    """``ScriptedLLMClient`` script; ``entropy=False`` models a server that returns none."""

    def __init__(self, model_path: str, entropy: bool = True):
        self.entropies = SpikeEntropies(model_path, LOW, SPIKE) if entropy else None
        self._counters: dict[str, itertools.count] = {}

    def __call__(self, ctx):
        if is_fork_request(ctx.text):  # a fork: resample the coordinates
            return ScriptedTurn(" " + str(BOTTOM_RIGHT) + "}}</tool_call>", extra_fields=self._entropies(False))
        if ctx.turn == 0:
            k = next(self._counters.setdefault(ctx.key, itertools.count()))
            text = f"<think>base {k}: where is the lesion?</think>" + zoom_call(TOP_LEFT)
            return ScriptedTurn(text, extra_fields=self._entropies(k % 2 == 1))
        return ScriptedTurn(ANSWER, extra_fields=self._entropies(False))

    def _entropies(self, spike: bool):
        return self.entropies.turn(spike) if self.entropies is not None else None


def base_index(text: str) -> int | None:
    found = _BASE.search(text)
    return int(found.group(1)) if found else None
