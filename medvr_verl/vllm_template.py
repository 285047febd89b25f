"""Template decoding for ``medvr_vllm``: vLLM samples the zoom box and the answer, a template the rest.

Under ``actor_rollout_ref.rollout.custom.vllm.constrained.enable=true`` every assistant turn that
``medvr_vllm`` generates follows the template of the CPU backend's ``constrained`` policy
(:mod:`medvr_verl.cpu.constrained`: a zoom turn with one of the ``grid x grid`` cells of the first
image, and after a tool response an answer turn with one of ``answers``). The model samples the
decisions from its own next-token distribution restricted to the tokens that continue some
candidate; where one token is left, it is forced. So a random-weight model writes real zoom calls,
whose coordinates carry real token entropies, and EVR qualifies forks there.

Off by default (``enable: false``): it exists for runs where the policy cannot yet write a zoom call
on its own (random-weight or untrained models: the vLLM test and demo runs). The paper samples free
text; this is ours.

How (vLLM 0.24.0): the server turns the open turn into its possible token sequences (one per
candidate: template + candidate + template + eos, each segment tokenized as the CPU policy does) and
sends them with the request (``SamplingParams.extra_args[TEMPLATE_ARG]``); the V1 logits processor
:class:`medvr_verl.vllm_logits.TemplateLogitsProcessor` (registered with vLLM's ``logits_processors``
engine argument) masks every token that leaves them. Why not vLLM's structured outputs
(``StructuredOutputsParams(regex=...)``, xgrammar)? They run on the CPU build, but a regex
constrains the TEXT, not its tokens: the template's fixed text may then be spelled in any
tokenization (``<tool_call>`` as one added token or as ``<``, ``tool``, ``_call``, ``>``), so a
random model spreads probability over spellings, the template's own tokens get entropy and EVR's
``dH`` (coordinates against the response's first tokens) loses its signal. The logits processor
keeps the template's tokens canonical, as the CPU policy does.

Entropies and log-probs: vLLM applies the processor inside its sampler, after ``raw_logprobs`` and
before ``processed_logprobs`` (``vllm/v1/sample/sampler.py``, ``Sampler.forward``). A templated
request asks for the log-probs of the decision tokens (``SamplingParams.logprob_token_ids``, every
token some decision may take) instead of the top k, and the server takes each position's entropy
over the tokens allowed there, renormalized: 0 at a forced token, the restricted distribution's
entropy at a decision -- the CPU policy's ``entropy: policy``, in either ``logprobs_mode``. The
sampled token's log-prob is the model's (``raw_logprobs``: what the actor recomputes) or the
restricted one (``processed_logprobs``: what the token was drawn from). Template tokens get
``response_mask`` 0 unless ``train_forced`` (as on CPU).

Pure Python: no vLLM, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from medvr_verl.cpu.constrained import Choice, ConstrainedOptions, TokenTrie, plan_turn

TEMPLATE_ARG = "medvr_template"
"""``SamplingParams.extra_args`` key: the open turn's allowed token sequences (list of lists of ids)."""
LOGITS_PROCESSOR = "medvr_verl.vllm_logits:TemplateLogitsProcessor"
"""vLLM's FQCN of the logits processor (``--logits-processors``)."""
OPTION_KEYS = ("enable", "grid", "answers", "train_forced")


@dataclass(frozen=True)
class TemplateOptions:
    """``rollout.custom.vllm.constrained``: ``enable`` (default false), ``grid``, ``answers``, ``train_forced``."""

    enable: bool = False
    constrained: ConstrainedOptions = ConstrainedOptions()

    @classmethod
    def from_rollout_config(cls, rollout_config) -> TemplateOptions:
        from medvr_verl.vllm_server import _get

        options = _get(_get(_get(rollout_config, "custom"), "vllm"), "constrained")
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ValueError(
                f"actor_rollout_ref.rollout.custom.vllm.constrained: unknown options {unknown}; "
                f"known: {list(OPTION_KEYS)}"
            )
        enable = options.pop("enable", False)
        if not isinstance(enable, bool):
            raise ValueError(f"actor_rollout_ref.rollout.custom.vllm.constrained.enable must be a bool, got {enable!r}")
        return cls(enable=enable, constrained=ConstrainedOptions.from_dict(options))


def turn_sequences(
    context: str,
    image_size: tuple[int, int] | None,
    options: ConstrainedOptions,
    encode: Callable[[str], list[int]],
    eos_id: int,
) -> list[list[int]]:
    """Every token sequence the open turn may still take: one per candidate of its decision.

    ``context``: the decoded request (prompt and earlier turns, special tokens kept; an EVR fork's
    cut prefix included); ``image_size``: the first image as the model sees it (pixels). Each
    segment is tokenized on its own (the CPU policy's tokens) and each sequence ends in ``eos_id``.
    """
    head: list[int] = []
    choice: Choice | None = None
    tail: list[int] = []
    for segment in plan_turn(context, image_size, options):
        if isinstance(segment, Choice):
            choice = segment
        elif choice is None:
            head += encode(segment)
        else:
            tail += encode(segment)
    assert choice is not None, "plan_turn always holds one decision"
    TokenTrie(choice.candidates, encode)  # refuses candidates that are token prefixes of others
    return [head + encode(c) + tail + [int(eos_id)] for c in choice.candidates]


def request_sequences(processor, prompt_ids, image_data, mm_processor_kwargs, options: ConstrainedOptions):
    """:func:`turn_sequences` of one generation request as veRL's vLLM server receives it.

    ``processor``: the model's Hugging Face processor (veRL's ``model_config.processor``);
    ``prompt_ids``: the whole context, image placeholders expanded; ``image_data``: its images (the
    first one's size as the model sees it comes from ``processor.image_processor`` with the same
    ``mm_processor_kwargs``); each sequence ends in the tokenizer's eos.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    size = None
    if image_data:
        vision = processor.image_processor(
            images=[image_data[0]], return_tensors="pt", **dict(mm_processor_kwargs or {})
        )
        _, grid_h, grid_w = (int(v) for v in vision["image_grid_thw"][0].tolist())
        patch = int(getattr(processor.image_processor, "patch_size", 14))
        size = (grid_w * patch, grid_h * patch)
    return turn_sequences(
        tokenizer.decode(list(prompt_ids), skip_special_tokens=False),
        size,
        options,
        lambda text: tokenizer.encode(text, add_special_tokens=False),
        tokenizer.eos_token_id,
    )


class SequenceTrie:
    """Which token may follow a generated prefix, given the turn's allowed sequences."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences or any(not s for s in sequences):
            raise ValueError("template decoding: no token sequence to follow")
        self.sequences = [tuple(int(t) for t in s) for s in sequences]
        self._next: dict[tuple[int, ...], list[int]] = {}
        for seq in self.sequences:
            for i in range(len(seq)):
                nxt = self._next.setdefault(seq[:i], [])
                if seq[i] not in nxt:
                    nxt.append(seq[i])
        for nxt in self._next.values():
            nxt.sort()
        self.ends = sorted({s[-1] for s in self.sequences})

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Next tokens after ``prefix``; off every sequence (or past its end): the end tokens only."""
        return self._next.get(tuple(prefix), self.ends)

    def decision_tokens(self) -> list[int]:
        """Every token some decision (a position with more than one allowed token) may take."""
        return sorted({t for nxt in self._next.values() if len(nxt) > 1 for t in nxt})


def _rows(position_logprobs) -> list[dict[int, float]]:
    """vLLM's ``CompletionOutput.logprobs`` (``FlatLogprobs`` or a list of dicts) as token -> logprob
    rows; a token listed twice (the sampled token first, then again; padding as ``-inf``) keeps its
    largest value."""
    rows: list[dict[int, float]] = []
    if hasattr(position_logprobs, "start_indices"):
        flat = position_logprobs
        for start, end in zip(flat.start_indices, flat.end_indices):
            row: dict[int, float] = {}
            for token, value in zip(flat.token_ids[start:end], flat.logprobs[start:end]):
                row[int(token)] = max(float(value), row.get(int(token), -math.inf))
            rows.append(row)
        return rows
    for position in position_logprobs:
        rows.append({int(t): float(getattr(lp, "logprob", lp)) for t, lp in (position or {}).items()})
    return rows


def restricted_entropy(logprobs: Sequence[float]) -> float:
    """Entropy (nats) of the distribution ``logprobs`` define once renormalized over themselves."""
    finite = [v for v in logprobs if math.isfinite(v)]
    if len(finite) < 2:
        return 0.0
    top = max(finite)
    weights = [math.exp(v - top) for v in finite]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights if w > 0.0)


def template_scores(trie: SequenceTrie, token_ids: Sequence[int], position_logprobs) -> tuple[list[float], list[int]]:
    """``(entropy per token, forced flag per token)`` of a templated completion.

    Entropy: over the tokens allowed at the position, renormalized (0.0 at a forced token, or where
    vLLM returned no log-prob for them); forced: 1 where one token was allowed, else 0.
    """
    rows = _rows(position_logprobs) if position_logprobs is not None else [{} for _ in token_ids]
    entropies, forced = [], []
    for i in range(len(token_ids)):
        allowed = trie.allowed(token_ids[:i])
        forced.append(1 if len(allowed) == 1 else 0)
        if len(allowed) == 1:
            entropies.append(0.0)
            continue
        row = rows[i] if i < len(rows) else {}
        entropies.append(restricted_entropy([row.get(t, -math.inf) for t in allowed]))
    return entropies, forced


def template_of(extra_args: Mapping | None) -> list[list[int]] | None:
    """The sequences a request's ``extra_args`` carries, or None for a free-text request."""
    return (extra_args or {}).get(TEMPLATE_ARG) or None
