"""Pure: token entropy from an engine's top-k logprobs and EVR's branching rule.

Entropy is in nats. Shapes are plain Python sequences: one float per generated token.

Estimator (:func:`topk_entropy`). An engine returns the k most likely tokens' logprobs of each
position, ``p_1 >= ... >= p_k``, leaving the tail mass ``r = 1 - sum p_i`` unseen. Every tail token
has probability at most ``p_k``, so ``-sum_tail p_j log p_j >= -r log p_k``; the estimate

    H_hat = -sum_{i<=k} p_i log p_i - r log p_k

is therefore a lower bound of the exact entropy ``H``. The tail's entropy is largest when ``r`` is
spread evenly over the ``V - k`` other tokens, so

    0 <= H - H_hat <= r * log((V - k) * p_k / r)    (and 0 when r = 0),

see :func:`topk_entropy_error_bound`. With k = 20 on a confident policy the tail mass is a few
percent at most and the error a small fraction of a nat; the estimate is exact when k = V.

The bound needs exactly the top k. vLLM (0.24.0, ``Sampler.gather_logprobs``) returns the sampled
token first, then the top k: k + 1 entries whenever the sampled token is outside the top k. Taking
that extra entry as ``p_k`` would move the tail's ceiling below the true ``p_k`` and the estimate off
its bound, so pass ``k``: only the k largest entries are used (the extra one is never larger than
the true ``p_k``, so they are exactly the top k).

EVR (DESIGN.md section 3): ``H_base`` is the mean entropy of the first tokens of the response;
``H_tool`` the largest rolling mean over a window of a zoom call's coordinate tokens (the spike the
paper branches on); ``dH = H_tool - H_base``. A tool call qualifies as a fork point when
``dH > threshold``; it is then chosen with probability ``P = clip(P_base + gamma * dH, 0, 1)``.
``gamma = 0`` degrades to random branching as the paper states: every call qualifies (no threshold),
each is chosen with probability ``P_base`` and every ordering among calls is random, so entropy
steers nothing (:func:`qualifies`, :func:`decide_fork`, :func:`fallback_order`).

Budget (:func:`fill_forks`): each chosen call gets one fork (in the order given: generation order
when streaming, decreasing ``dH`` when planned after the bases); fork slots left over are spent by
the fallback: ``"fresh"`` (default) makes each left slot a fresh, unforked sample (the paper's "low
uncertainty: continue a single trajectory"); ``"top_dh"`` (ours) deals them round-robin over the
chosen calls, or over all calls by decreasing ``dH`` when none was chosen (random order at
``gamma = 0``).

Randomness (:func:`keyed_rng`): every draw of the rollout workers comes from a generator that is a
pure function of ``(seed, training step, prompt, base, call)``, never from state carried between
steps, so a run resumed from a checkpoint makes the fork decisions an uninterrupted run makes, and a
decision does not depend on which base reached its zoom call first.

Imports neither veRL nor torch.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence

TOKEN_ENTROPY_KEY = "token_entropy"
"""Key of the per-token entropy list in a rollout server's ``TokenOutput.extra_fields``."""


def _top_probs(logprobs: Sequence[float], k: int | None) -> list[float]:
    """The ``k`` largest probabilities (all when ``k`` is None), largest first; non-finite dropped."""
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    probs = sorted((math.exp(lp) for lp in logprobs if math.isfinite(lp)), reverse=True)
    return probs if k is None else probs[: int(k)]


def topk_entropy(logprobs: Sequence[float], k: int | None = None) -> float:
    """Entropy estimate (nats) of one position from its top-k logprobs (any order).

    ``k``: how many of the largest entries are the top k; entries beyond them (vLLM's sampled token
    when it lies outside the top k) are left out. ``None`` takes every entry as the top k, which is
    right only when the list holds exactly the top k (and no duplicates).

    Returns the lower-bound estimate described in the module docstring; 0.0 for an empty list.
    Non-finite logprobs (``-inf`` for impossible tokens) are ignored.
    """
    probs = _top_probs(logprobs, k)
    if not probs:
        return 0.0
    head = -sum(p * math.log(p) for p in probs if p > 0.0)
    tail = max(0.0, 1.0 - sum(probs))  # engines' rounding can push the sum a hair above 1
    p_min = probs[-1]
    return head - tail * math.log(p_min) if tail > 0.0 and p_min > 0.0 else head


def topk_entropy_error_bound(logprobs: Sequence[float], vocab_size: int, k: int | None = None) -> float:
    """Upper bound (nats) of ``H - topk_entropy(logprobs, k)`` for a vocabulary of ``vocab_size`` tokens."""
    probs = _top_probs(logprobs, k)
    tail = max(0.0, 1.0 - sum(probs))
    rest = vocab_size - len(probs)
    if tail <= 0.0 or rest <= 0 or not probs:
        return 0.0
    return max(0.0, tail * math.log(rest * probs[-1] / tail))


def h_base(entropies: Sequence[float], num_tokens: int) -> float:
    """``H_base``: mean entropy of the first ``num_tokens`` tokens of the response (0.0 if none)."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    head = list(entropies[:num_tokens])
    return sum(head) / len(head) if head else 0.0


def h_tool(coordinate_entropies: Sequence[float], window: int) -> float:
    """``H_tool``: the largest mean over ``window`` consecutive coordinate tokens.

    A span shorter than the window is averaged whole; an empty span gives 0.0.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = list(coordinate_entropies)
    if not values:
        return 0.0
    if len(values) <= window:
        return sum(values) / len(values)
    running = sum(values[:window])
    best = running
    for i in range(window, len(values)):
        running += values[i] - values[i - window]
        best = max(best, running)
    return best / window


def branch_probability(delta_h: float, p_base: float, gamma: float) -> float:
    """``P = clip(P_base + gamma * dH, 0, 1)``."""
    return min(1.0, max(0.0, p_base + gamma * delta_h))


def delta_h(
    response_entropies: Sequence[float], coordinate_entropies: Sequence[float], base_tokens: int, window: int
) -> float:
    """``dH = H_tool - H_base`` of one zoom call (nats)."""
    return h_tool(coordinate_entropies, window) - h_base(response_entropies, base_tokens)


FALLBACKS = ("top_dh", "fresh")
"""What fork slots no chosen call took become: forks at the most uncertain calls, or fresh samples."""


def qualifies(delta_h: float, threshold: float, gamma: float) -> bool:
    """Whether a zoom call may branch: ``dH > threshold``; every call at ``gamma = 0`` (random branching)."""
    return gamma == 0 or delta_h > threshold


def decide_fork(delta_h: float, *, p_base: float, gamma: float, threshold: float, rng) -> bool:
    """One zoom call's branching decision, made when the call is generated (streaming EVR).

    True with probability ``branch_probability(dH, p_base, gamma)`` for a qualifying call, else False.
    Draws from ``rng`` only for a qualifying call.
    """
    return qualifies(delta_h, threshold, gamma) and rng.random() < branch_probability(delta_h, p_base, gamma)


def fallback_order(delta_hs: Sequence[float], gamma: float, rng) -> list[int]:
    """Candidates by decreasing ``dH``, random among ties; a uniformly random order at ``gamma = 0``."""
    if gamma == 0:
        order = list(range(len(delta_hs)))
        rng.shuffle(order)
        return order
    return sorted(range(len(delta_hs)), key=lambda c: (-delta_hs[c], rng.random()))


def fill_forks(
    chosen: Sequence[int],
    delta_hs: Sequence[float],
    num_forks: int,
    *,
    gamma: float,
    fallback: str,
    rng,
) -> list[int | None]:
    """Each of ``num_forks`` fork slots' candidate (``None``: a fresh sample), see the module docstring.

    ``chosen``: the chosen candidates, each taking one slot in this order; the slots left are spent
    by ``fallback`` over ``chosen`` (when any) or over every candidate of ``delta_hs``.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if num_forks <= 0:
        return []
    slots: list[int | None] = list(chosen[:num_forks])
    left = num_forks - len(slots)
    if left == 0:
        return slots
    if fallback == "fresh":
        return slots + [None] * left
    if chosen:
        pool = [chosen[i] for i in fallback_order([delta_hs[c] for c in chosen], gamma, rng)]
    else:
        pool = fallback_order(delta_hs, gamma, rng)
    if not pool:
        return slots + [None] * left
    start = len(slots)
    return slots + [pool[(start + i) % len(pool)] for i in range(left)]


def plan_forks(
    delta_hs: Sequence[float],
    num_forks: int,
    *,
    p_base: float,
    gamma: float,
    threshold: float,
    rng,
    fallback: str = "fresh",
) -> list[int | None]:
    """Choose the fork point of each of ``num_forks`` forks among candidate zoom calls (two-phase EVR).

    ``delta_hs[c]`` is candidate ``c``'s ``dH``; ``rng`` has ``random()`` and ``shuffle()``
    (``random.Random``). Each candidate is decided with :func:`decide_fork`, in decreasing ``dH``
    (random order at ``gamma = 0``); each chosen one takes a slot, and ``fallback`` spends the slots
    left (:func:`fill_forks`): ``top_dh`` round-robin over the chosen ones (over all candidates by
    ``dH`` when none is chosen), ``fresh`` as fresh samples.
    """
    return plan_forks_counted(
        delta_hs, num_forks, p_base=p_base, gamma=gamma, threshold=threshold, rng=rng, fallback=fallback
    )[0]


def plan_forks_counted(
    delta_hs: Sequence[float],
    num_forks: int,
    *,
    p_base: float,
    gamma: float,
    threshold: float,
    rng,
    fallback: str = "fresh",
) -> tuple[list[int | None], int]:
    """:func:`plan_forks` plus how many of the slots went to chosen (qualified) calls: the plan's
    first ``num_chosen`` entries; the rest are the fallback's (forks or ``None``, fresh samples)."""
    if num_forks <= 0:
        return [], 0
    order = fallback_order(delta_hs, gamma, rng)
    chosen = [c for c in order if decide_fork(delta_hs[c], p_base=p_base, gamma=gamma, threshold=threshold, rng=rng)]
    plan = fill_forks(chosen, delta_hs, num_forks, gamma=gamma, fallback=fallback, rng=rng)
    return plan, min(len(chosen), num_forks)


def keyed_rng(*key: object) -> random.Random:
    """A ``random.Random`` whose stream is a pure function of ``key`` (ints and strings).

    Seeded with the first 8 bytes of SHA-256 of ``repr(key)``: stable across processes, runs and
    Python versions (unlike ``hash()``, which is salted per process). EVR keys its draws with
    ``(seed, global step, prompt key, purpose, ...)``, so no generator state needs saving in a checkpoint.
    """
    digest = hashlib.sha256(repr(tuple(key)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def prompt_key(index: object, messages: object) -> str:
    """A prompt's identity for :func:`keyed_rng`: its dataset ``index`` and a digest of its text.

    veRL's V1 trainer gives each prompt a fresh random ``uid`` per step, so the uid cannot key
    reproducible draws. ``messages`` is the chat (``raw_prompt``: dicts with ``role`` and ``content``,
    a string or a list of parts); only text parts count (images are data, not identity). ``index``
    (``extra_info.index``, a number or a 0-d tensor) may be missing or shared: the text tells prompts apart.
    """
    parts = []
    iterable = hasattr(messages, "__iter__") and not isinstance(messages, (str, bytes, Mapping))
    for message in messages if iterable else []:  # a list, or a numpy object array from a batch
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        texts = [content] if isinstance(content, str) else []
        if hasattr(content, "__iter__") and not isinstance(content, (str, bytes, Mapping)):
            texts = [p.get("text") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        parts.append(f"{message.get('role')}:" + "\x1f".join(texts))
    try:
        index = int(index)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        index = None
    digest = hashlib.sha256("\x1e".join(parts).encode("utf-8")).hexdigest()[:16]
    return f"{index}/{digest}"
