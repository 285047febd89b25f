"""Scripts for the ``scripted`` policy of the CPU rollout server -- A STAND-IN FOR RANDOM WEIGHTS.

A random-weight model never writes a zoom call or an answer, so a demo or CI run of MedVR with the
tiny model would exercise no tool, no fork and no consensus. Under ``rollout.custom.cpu.policy=
scripted`` the server takes each turn's TEXT from a script (through
:class:`medvr_verl.cpu.scripted_client.ScriptedLLMClient`, which applies vLLM's token budget and
eos rules) and scores it with a real forward pass of the synced weights. Outputs say so
(``extra_fields["medvr_cpu_policy"] == "scripted"``).

A script is a callable ``f(ctx: ScriptContext) -> str | ScriptedTurn`` (``rollout.custom.cpu.script``
names its class by fully qualified name; it is built with no arguments).
"""

from __future__ import annotations

import contextvars
import importlib
import json
import re

_BOX = re.compile(r'"bbox_2d": \[([^\]]*)\]')
#: (width, height) of each image of the request being answered, as the model sees it (set by the
#: rollout server around each scripted call; a script reads it). Here, not in the server module, so
#: that the server imports its scripts and no script imports the server.
IMAGE_SIZES: contextvars.ContextVar[list[tuple[int, int]]] = contextvars.ContextVar("medvr_cpu_image_sizes")


class ZoomThenAnswer:
    """Zoom into one of three regions, then answer: right when the zoom covers the image centre.

    The prompt's script marker ``[script:RIGHT_WRONG]`` (e.g. ``[script:A_B]``, ``[script:yes_no]``)
    gives the answer text for a zoom that covers the centre of the image and for one that misses it;
    without a marker the answers are ``A`` / ``B``. Base trajectories take the regions round-robin
    (centre, top-left corner, bottom-right corner); an EVR fork (a request cut right before the zoom
    coordinates) writes new coordinates, also round-robin, offset so forks differ from their bases.
    Regions are fractions of the first image's side as the model sees it (its processed size).
    """

    REGIONS = ((0.2, 0.2, 0.8, 0.8), (0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 1.0, 1.0))

    def __init__(self):
        self._counters: dict[str, int] = {}

    def __call__(self, ctx):
        from medvr_verl.cpu.scripted_client import ScriptedTurn, is_fork_request, zoom_call

        sizes = IMAGE_SIZES.get([])
        width, height = sizes[0] if sizes else (56, 56)
        right, _, wrong = ctx.key.partition("_") if ctx.key != "default" else ("A", "_", "B")
        if is_fork_request(ctx.text):
            k = self._next(ctx.key + "/fork") + 2
            return ScriptedTurn(" " + json.dumps(self._region(k, width, height)) + "}}</tool_call>")
        if ctx.turn == 0:
            k = self._next(ctx.key)
            return f"<think>Let me look closer at region {k % 3}.</think>" + zoom_call(self._region(k, width, height))
        boxes = _BOX.findall(ctx.text)
        if not boxes:
            return f"<think>No zoom.</think><answer>{wrong}</answer>"
        x1, y1, x2, y2 = (float(v) for v in boxes[-1].split(","))
        sees = x1 <= width / 2 <= x2 and y1 <= height / 2 <= y2
        answer = right if sees else (wrong or right)
        return f"<think>The region {'shows' if sees else 'misses'} the finding.</think><answer>{answer}</answer>"

    def _region(self, k: int, width: int, height: int) -> list[int]:
        fx1, fy1, fx2, fy2 = self.REGIONS[k % 3]
        return [round(fx1 * width), round(fy1 * height), round(fx2 * width), round(fy2 * height)]

    def _next(self, key: str) -> int:
        self._counters[key] = self._counters.get(key, -1) + 1
        return self._counters[key]


class AnswerAfterHashes:
    """GSM8K-style answers for text-only runs: ``<reasoning>\n#### <number>``, right and wrong in turn.

    The prompt's marker ``[script:RIGHT_WRONG]`` (e.g. ``[script:72_96]``) gives both numbers; the
    calls of each key alternate right, wrong, right, ... so every GRPO group of an even size holds both
    (rewards differ, the advantage is not zero). The format is the one veRL's GSM8K scorer reads
    (``verl/utils/reward_score/gsm8k.py``: the number after ``#### ``).
    """

    def __init__(self):
        self._counters: dict[str, int] = {}

    def __call__(self, ctx):
        right, _, wrong = ctx.key.partition("_") if ctx.key != "default" else ("0", "_", "1")
        k = self._counters[ctx.key] = self._counters.get(ctx.key, -1) + 1
        answer = right if k % 2 == 0 else (wrong or right)
        return f"Working it out step by step, the total is {answer}.\n#### {answer}"


def load_script(fqn: str):
    module, _, name = fqn.rpartition(".")
    return getattr(importlib.import_module(module), name)()


def build_scripted_client(rollout_config, model_config, script_fqn: str):
    """A :class:`ScriptedLLMClient` choosing text with the script, budgeted like the rollout config."""
    from omegaconf import OmegaConf

    from medvr_verl.cpu.scripted_client import ScriptedLLMClient

    config = OmegaConf.create(
        {
            "actor_rollout_ref": {
                "model": {
                    "path": model_config.local_path,
                    "tokenizer_path": model_config.local_tokenizer_path or model_config.local_path,
                    "trust_remote_code": bool(model_config.trust_remote_code),
                },
                "rollout": {
                    "prompt_length": int(rollout_config.prompt_length),
                    "response_length": int(rollout_config.response_length),
                    "max_model_len": rollout_config.max_model_len,
                },
            }
        }
    )
    return ScriptedLLMClient(config, script=load_script(script_fqn))
