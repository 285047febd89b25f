"""A scripted stand-in for veRL's GPU-only vLLM server, behind veRL's own client interface.

Part of the CPU backend: the ``scripted`` policy of rollout ``medvr_cpu`` runs it
(:mod:`medvr_verl.cpu.script`; a stand-in for random weights in demos and CI), and the tests use it as
their server (re-exported by :mod:`medvr_verl.testing.scripted_server` with the test-only call
recorder). :class:`ScriptedLLMClient` subclasses
:class:`verl.workers.rollout.llm_server.LLMServerClient` and overrides ``generate`` only, so veRL's
stock ``AgentLoopWorker`` / agent loops take it exactly where they take the real client
(``AgentLoopWorker(config, llm_client, ...)``). Instead of asking a vLLM replica, it decides the
next assistant turn's TEXT from a script, tokenizes it with the model's tokenizer
(``config.actor_rollout_ref.model.tokenizer_path`` or ``.path``) and answers like
``vLLMHttpServer.generate`` would:

* ``token_ids`` = the tokenized text plus the eos id (``<|im_end|>``) when the turn is finished
  (vLLM keeps the stop token in ``token_ids``); generation stops at the first eos /
  ``sampling_params["stop_token_ids"]`` id (kept), unless ``sampling_params["ignore_eos"]``;
* the same token budget as the real server: ``max_tokens`` (or ``max_new_tokens``) from the
  sampling params, else ``min(response_length, prompt_length + response_length - len(prompt_ids))``,
  clamped to ``[1, max_model_len - len(prompt_ids)]`` (``max_model_len`` = ``rollout.max_model_len``
  or the model's ``max_position_embeddings``, as the vLLM server resolves it); a prompt that leaves
  no room raises ``ValueError`` like the server. Truncation drops the trailing eos, as vLLM does;
* ``log_probs``: one float per token when ``sampling_params["logprobs"]`` is truthy (veRL sets it
  from ``rollout.calculate_log_probs``), ``None`` otherwise -- unless the script gives explicit
  log-probs, which are then always returned;
* ``stop_reason="completed"`` (vLLM maps both ``stop`` and ``length`` to it), ``extra_fields`` with
  ``global_steps`` / ``min_global_steps`` / ``max_global_steps`` / ``num_cached_tokens`` plus
  whatever the script adds (e.g. per-token top-k entropies).

Script format
-------------
``ScriptedLLMClient(config, turns={...})`` -- the usual form for integration tests::

    client = ScriptedLLMClient(
        config,
        turns={
            "default": ["<think>a</think><answer>B</answer>"],
            "zoom": [
                '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 9, 9]}}</tool_call>',
                "<think>now I see it</think><answer>A</answer>",
            ],
        },
    )

* **Which script** -- the *key* is taken from a marker ``[script:KEY]`` anywhere in the prompt
  (e.g. in the user message text); samples without a marker use ``"default"``. A key missing from
  ``turns`` raises ``KeyError``.
* **Which turn** -- the turn index is the number of assistant turns already in the context: the
  count of ``<|im_start|>assistant`` headers after the marker (or in the whole context when there
  is no marker), minus the open generation header at the end. So a multi-turn tool trajectory gets
  ``turns[key][0]``, then ``[1]`` after the first tool response, and so on; put the marker in the
  LAST user message if the prompt holds few-shot assistant turns. The rule reads only the token
  ids, so it is stateless and works in every Ray worker copy.
* **Entries** -- a ``str`` (a finished turn), a :class:`ScriptedTurn` (unfinished turns,
  explicit log-probs, extra fields, raw token ids) or a callable ``f(ctx: ScriptContext)``
  returning either. Past the end of a list, ``on_exhausted`` decides: ``"error"`` (default,
  raises :class:`ScriptExhaustedError`), ``"repeat_last"`` or ``"eos"`` (an empty finished turn).

``ScriptedLLMClient(config, script=f)`` with a callable ``f(ctx) -> str | ScriptedTurn`` takes
full control; ``script=`` also accepts the same mapping / list as ``turns=`` (a list is the
``"default"`` script).

Call records
------------
Every call is appended to ``client.calls`` (a list of dicts: ``request_id``, ``key``, ``turn``,
``prompt_len``, ``num_images``, ``num_videos``, ``sampling_params``, ``max_tokens``,
``response_len``, ``response_text``, ``prompt_text``; with ``record_ids=True`` also ``prompt_ids`` and
``response_ids``, the token id lists). The client is pickled into each Ray
``AgentLoopWorker`` actor, so that list lives in the actor's copy; to get the records back pass
``recorder=create_call_recorder()`` (a small Ray actor, :mod:`medvr_verl.testing.scripted_server`)
and read ``get_call_records(recorder)``
after the run. In-process runs (``run_agent_loop_worker(..., use_ray=False)``) can read
``client.calls`` directly.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from verl.utils.rollout_trace import rollout_trace_op
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

__all__ = [
    "DEFAULT_MARKER_PATTERN",
    "ScriptContext",
    "ScriptExhaustedError",
    "ScriptedLLMClient",
    "ScriptedTurn",
    "is_fork_request",
    "zoom_call",
]

_COORDINATES_KEY = '"bbox_2d":'


def zoom_call(box, **arguments) -> str:
    """A hermes tool call of ``image_zoom_in_tool`` with ``bbox_2d=box`` (and any other arguments)."""
    call = {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": box, **arguments}}
    return "<tool_call>" + json.dumps(call) + "</tool_call>"


def is_fork_request(context: str) -> bool:
    """An EVR fork's request: the context stops inside a zoom call, right before its coordinates."""
    return context.rstrip().endswith(_COORDINATES_KEY)


#: Regex selecting the per-sample script key from the decoded prompt.
DEFAULT_MARKER_PATTERN = r"\[script:([A-Za-z0-9_.\-]+)\]"
_IMAGE_PAD = "<|image_pad|>"
_VIDEO_PAD = "<|video_pad|>"


class ScriptExhaustedError(RuntimeError):
    """The trajectory asked for more assistant turns than its script has."""


@dataclass(frozen=True)
class ScriptedTurn:
    """One scripted assistant turn.

    Attributes:
        text: the assistant text (tokenized with the model tokenizer, ``add_special_tokens=False``).
        finished: append the eos id (``<|im_end|>``) like a turn the model ended itself. ``False``
            mimics a generation cut by the token budget.
        log_probs: ``None`` (the client's ``default_log_prob`` per token when the sampling params
            ask for log-probs), a float repeated for every returned token, a list with at least one
            value per returned token (the appended eos counts; extra values are cut after
            eos/budget handling; too few raise ``ValueError``), or ``f(token_ids) -> list[float]``
            called with the final token ids. Explicit log-probs are returned even when the sampling
            params do not ask for them.
        extra_fields: merged into ``TokenOutput.extra_fields``; a dict or
            ``f(token_ids, ctx) -> dict`` (e.g. per-token top-k entropies of the returned tokens).
        token_ids: raw response token ids used instead of tokenizing ``text`` (eos/budget rules
            still apply).
    """

    text: str = ""
    finished: bool = True
    log_probs: None | float | Sequence[float] | Callable[[list[int]], Sequence[float]] = None
    extra_fields: None | Mapping[str, Any] | Callable[[list[int], ScriptContext], Mapping[str, Any]] = None
    token_ids: Sequence[int] | None = None


@dataclass
class ScriptContext:
    """What a script callable sees for one ``generate`` call."""

    request_id: str
    key: str
    turn: int
    text: str
    """Decoded context (``skip_special_tokens=False``), each run of image/video pad tokens collapsed to one."""
    prompt_ids: list[int]
    num_images: int
    num_videos: int
    sampling_params: dict[str, Any]
    max_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


ScriptEntry = str | ScriptedTurn | Callable[[ScriptContext], str | ScriptedTurn]


class ScriptedLLMClient(LLMServerClient):
    """Scripted replacement for the vLLM-backed :class:`LLMServerClient` (see the module doc).

    Args:
        config: the whole trainer config (as given to ``AgentLoopWorker``); reads
            ``actor_rollout_ref.model.{path,tokenizer_path,trust_remote_code}`` and
            ``actor_rollout_ref.rollout.{prompt_length,response_length,max_model_len}``.
        script: a callable ``f(ctx) -> str | ScriptedTurn``, or the same mapping / list as ``turns``.
        turns: ``{key: [entry, ...]}`` or a list of entries (the ``"default"`` script).
        marker_pattern: regex with one group selecting the script key from the decoded prompt.
        default_key: key used when no marker is found.
        assistant_header: the text that opens an assistant turn in the chat template.
        on_exhausted: ``"error"`` | ``"repeat_last"`` | ``"eos"`` when a list runs out.
        default_log_prob: the log-prob reported per token when log-probs are requested and the
            script gives none.
        recorder: optional actor handle with a ``record`` method that receives every call record
            (:class:`medvr_verl.testing.scripted_server.CallRecorder`).
        global_steps: reported in ``extra_fields["global_steps"]`` like the real server.
        record_ids: also put the token id lists ``prompt_ids`` / ``response_ids`` into each call record.
    """

    def __init__(
        self,
        config,
        script: None
        | Callable[[ScriptContext], str | ScriptedTurn]
        | Mapping[str, Sequence[ScriptEntry]]
        | Sequence[ScriptEntry] = None,
        *,
        turns: None | Mapping[str, Sequence[ScriptEntry]] | Sequence[ScriptEntry] = None,
        marker_pattern: str = DEFAULT_MARKER_PATTERN,
        default_key: str = "default",
        assistant_header: str = "<|im_start|>assistant",
        on_exhausted: str = "error",
        default_log_prob: float = -0.5,
        recorder=None,
        global_steps: int | None = None,
        record_ids: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, load_balancer_handle=None, **kwargs)
        if script is not None and turns is not None:
            raise ValueError("pass either script= or turns=, not both")
        source = script if script is not None else turns
        if source is None:
            raise ValueError("ScriptedLLMClient needs script= or turns=")
        self._script_fn: Callable[[ScriptContext], str | ScriptedTurn] | None = None
        self._turns: dict[str, list[ScriptEntry]] | None = None
        if callable(source) and not isinstance(source, (Mapping, list, tuple)):
            self._script_fn = source
        elif isinstance(source, Mapping):
            self._turns = {str(k): list(v) for k, v in source.items()}
        elif isinstance(source, (list, tuple)):
            self._turns = {default_key: list(source)}
        else:
            raise TypeError(f"unsupported script type {type(source).__name__}")
        if on_exhausted not in ("error", "repeat_last", "eos"):
            raise ValueError(f"on_exhausted must be 'error', 'repeat_last' or 'eos', got {on_exhausted!r}")
        self.marker_pattern = marker_pattern
        self.default_key = default_key
        self.assistant_header = assistant_header
        self.on_exhausted = on_exhausted
        self.default_log_prob = float(default_log_prob)
        self.recorder = recorder
        self.global_steps = global_steps
        self.record_ids = bool(record_ids)
        self.calls: list[dict[str, Any]] = []
        self._tok = None
        self._eos_ids: list[int] | None = None
        self._max_model_len: int | None = None

    # -- pickling: the tokenizer is reloaded lazily in the receiving process --------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tok"] = None
        state["_eos_ids"] = None
        state.pop("tokenizer", None)  # AgentLoopWorker may attach one when tracing token2text
        return state

    # -- model-derived facts ------------------------------------------------------------------
    def _model_cfg(self):
        return self.config.actor_rollout_ref.model

    def _tokenizer_path(self) -> str:
        model = self._model_cfg()
        return model.get("tokenizer_path", None) or model.path

    @property
    def hf_tokenizer(self):
        """The model tokenizer (loaded on first use, offline-capable local path expected)."""
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(
                self._tokenizer_path(), trust_remote_code=bool(self._model_cfg().get("trust_remote_code", False))
            )
        return self._tok

    def _eos_token_ids(self) -> list[int]:
        """Stop ids vLLM would use by default: the tokenizer eos plus generation_config's eos list."""
        if self._eos_ids is None:
            tok = self.hf_tokenizer
            ids: list[int] = []
            if tok.eos_token_id is not None:
                ids.append(int(tok.eos_token_id))
            try:
                from transformers import GenerationConfig

                gen_eos = GenerationConfig.from_pretrained(self._model_cfg().path).eos_token_id
            except Exception:  # no generation_config.json
                gen_eos = None
            for i in [gen_eos] if isinstance(gen_eos, int) else (gen_eos or []):
                if int(i) not in ids:
                    ids.append(int(i))
            self._eos_ids = ids
        return self._eos_ids

    def _resolve_max_model_len(self) -> int:
        if self._max_model_len is None:
            rollout = self.config.actor_rollout_ref.rollout
            value = rollout.get("max_model_len", None)
            if value is None:
                try:
                    from transformers import AutoConfig
                    from verl.workers.rollout.utils import get_max_position_embeddings

                    hf_config = AutoConfig.from_pretrained(
                        self._model_cfg().path,
                        trust_remote_code=bool(self._model_cfg().get("trust_remote_code", False)),
                    )
                    value = get_max_position_embeddings(hf_config)
                except Exception:
                    value = int(rollout.prompt_length) + int(rollout.response_length)
            self._max_model_len = int(value)
        return self._max_model_len

    def _token_budget(self, prompt_len: int, sampling_params: Mapping[str, Any]) -> int:
        """``vLLMHttpServer.generate``'s max_tokens computation."""
        rollout = self.config.actor_rollout_ref.rollout
        max_possible = self._resolve_max_model_len() - prompt_len
        if max_possible < 1:
            raise ValueError(
                f"Prompt length ({prompt_len}) leaves no room to generate within the model's maximum "
                f"context length ({self._resolve_max_model_len()}); need at least 1 token of headroom."
            )
        if sampling_params.get("max_tokens") is not None:
            max_tokens = int(sampling_params["max_tokens"])
        elif sampling_params.get("max_new_tokens") is not None:
            max_tokens = int(sampling_params["max_new_tokens"])
        else:
            response_length, prompt_length = int(rollout.response_length), int(rollout.prompt_length)
            max_tokens = min(response_length, prompt_length + response_length - prompt_len)
        return max(1, min(max_tokens, max_possible))

    # -- script resolution ----------------------------------------------------------------------
    def _decode_context(self, prompt_ids: list[int]) -> str:
        text = self.hf_tokenizer.decode(prompt_ids, skip_special_tokens=False)
        for pad in (_IMAGE_PAD, _VIDEO_PAD):
            text = re.sub(f"(?:{re.escape(pad)})+", pad, text)
        return text

    def _key_and_turn(self, text: str) -> tuple[str, int]:
        match = re.search(self.marker_pattern, text)
        key = match.group(1) if match else self.default_key
        start = match.start() if match else 0
        turn = max(0, text.count(self.assistant_header, start) - 1)
        return key, turn

    def _entry_for(self, ctx: ScriptContext) -> str | ScriptedTurn:
        if self._script_fn is not None:
            return self._script_fn(ctx)
        assert self._turns is not None
        if ctx.key not in self._turns:
            raise KeyError(f"no script for key {ctx.key!r}; scripts: {sorted(self._turns)}")
        entries = self._turns[ctx.key]
        if ctx.turn < len(entries):
            entry = entries[ctx.turn]
        elif self.on_exhausted == "repeat_last" and entries:
            entry = entries[-1]
        elif self.on_exhausted == "eos":
            entry = ScriptedTurn("")
        else:
            raise ScriptExhaustedError(
                f"script {ctx.key!r} has {len(entries)} turn(s) but turn {ctx.turn} was requested "
                f"(request {ctx.request_id}); add turns or set on_exhausted"
            )
        return entry(ctx) if callable(entry) else entry

    # -- the client API -------------------------------------------------------------------------
    @rollout_trace_op
    async def generate(
        self,
        request_id,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Answer one generation request from the script (same signature as the real client)."""
        from verl.utils import normalize_token_ids

        prompt_ids = normalize_token_ids(prompt_ids)
        params = copy.deepcopy(dict(sampling_params))
        max_tokens = self._token_budget(len(prompt_ids), params)
        text = self._decode_context(prompt_ids)
        key, turn = self._key_and_turn(text)
        ctx = ScriptContext(
            request_id=str(request_id),
            key=key,
            turn=turn,
            text=text,
            prompt_ids=list(prompt_ids),
            num_images=len(image_data) if image_data is not None else 0,
            num_videos=len(video_data) if video_data is not None else 0,
            sampling_params=params,
            max_tokens=max_tokens,
            extra={k: v for k, v in kwargs.items() if k in ("priority",)},
        )
        entry = self._entry_for(ctx)
        turn_spec = entry if isinstance(entry, ScriptedTurn) else ScriptedTurn(text=str(entry))

        if turn_spec.token_ids is not None:
            token_ids = [int(t) for t in turn_spec.token_ids]
        else:
            token_ids = list(self.hf_tokenizer.encode(turn_spec.text, add_special_tokens=False))
        eos_ids = self._eos_token_ids()
        if turn_spec.finished and eos_ids:
            token_ids.append(eos_ids[0])
        if not params.get("ignore_eos", False):
            stop_ids = set(eos_ids) | {int(t) for t in (params.get("stop_token_ids") or [])}
            for i, tid in enumerate(token_ids):
                if tid in stop_ids:
                    token_ids = token_ids[: i + 1]
                    break
        token_ids = token_ids[:max_tokens]

        log_probs = self._log_probs(turn_spec, token_ids, requested=bool(params.get("logprobs")))
        extra_fields: dict[str, Any] = {
            "global_steps": self.global_steps,
            "min_global_steps": self.global_steps,
            "max_global_steps": self.global_steps,
            "num_cached_tokens": 0,
        }
        if turn_spec.extra_fields is not None:
            extra = (
                turn_spec.extra_fields(token_ids, ctx) if callable(turn_spec.extra_fields) else turn_spec.extra_fields
            )
            extra_fields.update(dict(extra))

        record = {
            "request_id": ctx.request_id,
            "key": key,
            "turn": turn,
            "prompt_len": len(prompt_ids),
            "num_images": ctx.num_images,
            "num_videos": ctx.num_videos,
            "sampling_params": params,
            "max_tokens": max_tokens,
            "response_len": len(token_ids),
            "response_text": self.hf_tokenizer.decode(token_ids, skip_special_tokens=False),
            "prompt_text": text,
        }
        if self.record_ids:
            record["prompt_ids"] = list(prompt_ids)
            record["response_ids"] = list(token_ids)
        self.calls.append(record)
        if self.recorder is not None:
            await self.recorder.record.remote(record)

        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs,
            stop_reason="completed",
            num_preempted=0,
            extra_fields=extra_fields,
        )

    def _log_probs(self, turn: ScriptedTurn, token_ids: list[int], *, requested: bool) -> list[float] | None:
        spec = turn.log_probs
        if spec is None:
            return [self.default_log_prob] * len(token_ids) if requested else None
        if callable(spec):
            values = [float(v) for v in spec(token_ids)]
        elif isinstance(spec, (int, float)):
            values = [float(spec)] * len(token_ids)
        else:
            values = [float(v) for v in spec]
        if len(values) < len(token_ids):
            raise ValueError(f"scripted log_probs has {len(values)} values for {len(token_ids)} tokens")
        return values[: len(token_ids)]
