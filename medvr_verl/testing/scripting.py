"""Pieces of scripted MedVR rollouts shared by the tests, the benchmarks and the demo -- TEST FIXTURES.

A scripted server (:mod:`medvr_verl.testing.scripted_server`) decides each assistant turn from the
context; these helpers write the zoom calls, recognise an EVR fork's request, shape per-token
entropies, and compose veRL's trainer config with the recipe's zoom tool, chat template and
``medvr_cca``.
"""

from __future__ import annotations

from collections.abc import Sequence

# the CPU backend's scripted policy writes these too; re-exported for the tests and benchmarks
from medvr_verl.cpu.scripted_client import _COORDINATES_KEY, is_fork_request, zoom_call  # noqa: F401

ZOOM_TOOL_YAML = "${medvr.pkg_file:medvr_verl.recipes.medvr/zoom_tool.yaml}"
TOOL_CHAT_TEMPLATE = "${medvr.pkg_text:medvr_verl.recipes.medvr/qwen2_5_vl_tool_chat_template.jinja}"
CCA_REWARD_KWARGS = "{tool_reward: consensus, eta: 0.5, w_tool: 1.0, group_timeout_s: 120, scorer: medvr}"


def coordinate_spike(tokenizer, token_ids: Sequence[int], low: float, spike: float) -> list[float]:
    """Per-token entropies: ``low`` up to the zoom coordinates, ``spike`` from the token reaching them on."""
    values = [low] * len(token_ids)
    text = tokenizer.decode(token_ids)
    key = text.find(_COORDINATES_KEY)
    if key < 0:
        return values
    start = key + len(_COORDINATES_KEY)
    for i in range(len(token_ids)):
        if len(tokenizer.decode(token_ids[: i + 1])) > start:
            values[i:] = [spike] * (len(token_ids) - i)
            break
    return values


def medvr_config(model_path, overrides: Sequence[str] = (), *, reward_workers: int = 2, **kwargs):
    """veRL's trainer config with the recipe's zoom tool and tool chat template and ``medvr_cca``.

    ``kwargs`` go to :func:`medvr_verl.testing.harness.make_trainer_config` (``n``, ``num_workers``,
    ``response_length``, ``max_assistant_turns`` default 3, ...); ``overrides`` come last.
    """
    from medvr_verl.testing.harness import make_trainer_config

    return make_trainer_config(
        model_path,
        [
            "reward.reward_manager.name=medvr_cca",
            f"reward.num_workers={reward_workers}",
            f"+reward.reward_kwargs={CCA_REWARD_KWARGS}",
            f"+actor_rollout_ref.model.custom_chat_template={TOOL_CHAT_TEMPLATE}",
            *overrides,
        ],
        tool_config_path=ZOOM_TOOL_YAML,
        **{"max_assistant_turns": 3, **kwargs},
    )


class SpikeEntropies:
    """``ScriptedTurn.extra_fields`` makers: per-token entropies, flat or spiking on the coordinates.

    Picklable into Ray actors; the tokenizer (of ``model_path``) loads on first use in each process.
    """

    def __init__(self, model_path, low: float, spike: float):
        self.model_path = str(model_path)
        self.low, self.spike = low, spike
        self._tokenizer = None

    def turn(self, spike: bool):
        """``f(token_ids, ctx) -> {"token_entropy": [...]}`` for one scripted turn."""

        def per_token(token_ids, ctx):
            high = self.spike if spike else self.low
            return {"token_entropy": coordinate_spike(self.tokenizer, token_ids, self.low, high)}

        return per_token

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    def __getstate__(self):
        return {**self.__dict__, "_tokenizer": None}


class HoldAnswers:
    """:class:`medvr_verl.cpu.script.ZoomThenAnswer` whose answer turns first block the rollout
    server for :attr:`HOLD_S` seconds -- a FAULT-INJECTION FIXTURE.

    Select with ``rollout.custom.cpu.script=medvr_verl.testing.scripting.HoldAnswers``. Every
    trajectory's first turn (the zoom call) comes at once; its second turn (the answer) stalls the
    server's event loop, so a test that kills the server once generation started kills it while
    requests are in flight, however slowly the server's log reaches the test.
    """

    HOLD_S = 30.0

    def __init__(self):
        from medvr_verl.cpu.script import ZoomThenAnswer

        self._script = ZoomThenAnswer()

    def __call__(self, ctx):
        import time

        if ctx.turn > 0 and not is_fork_request(ctx.text):
            time.sleep(self.HOLD_S)  # blocks the server: no request completes meanwhile
        return self._script(ctx)
