"""medvr_verl.entropy: the top-k estimator's bound against exact entropy, and EVR's rule."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvr_verl.entropy import (
    branch_probability,
    h_base,
    h_tool,
    topk_entropy,
    topk_entropy_error_bound,
)


def exact_entropy(logprobs):
    """Reference: entropy (nats) of a full distribution given as logprobs over the whole vocabulary."""
    return -sum(math.exp(lp) * lp for lp in logprobs if math.isfinite(lp))


def _logprobs(logits):
    logits = np.asarray(logits, dtype=np.float64)
    return (logits - np.logaddexp.reduce(logits)).tolist()


@settings(deadline=None, max_examples=200)
@given(
    logits=st.lists(st.floats(-20, 20), min_size=2, max_size=300),
    k=st.integers(1, 40),
)
def test_topk_estimate_is_a_lower_bound_within_the_stated_error(logits, k):
    full = _logprobs(logits)
    top = sorted(full, reverse=True)[:k]
    exact = exact_entropy(full)
    estimate = topk_entropy(top)
    bound = topk_entropy_error_bound(top, vocab_size=len(full))
    assert estimate <= exact + 1e-9
    assert exact - estimate <= bound + 1e-9


@settings(deadline=None, max_examples=200)
@given(
    logits=st.lists(st.floats(-20, 20), min_size=3, max_size=300),
    k=st.integers(1, 40),
    pick=st.floats(0, 1),
)
def test_topk_estimate_with_vllms_extra_sampled_entry(logits, k, pick):
    """vLLM's k + 1 entries (the sampled token first, outside the top k): still the top-k bound."""
    full = _logprobs(logits)
    order = sorted(range(len(full)), key=lambda t: -full[t])
    if k >= len(full):
        k = len(full) - 1
    sampled = order[k + int(pick * (len(full) - k - 1))]  # a token outside the top k
    entries = [full[sampled]] + [full[t] for t in order[:k]]  # Sampler.gather_logprobs' order
    top = sorted(full, reverse=True)[:k]
    exact = exact_entropy(full)
    estimate = topk_entropy(entries, k)
    assert estimate == pytest.approx(topk_entropy(top), abs=1e-12)
    assert estimate <= exact + 1e-9
    assert exact - estimate <= topk_entropy_error_bound(entries, len(full), k) + 1e-9
    # a sampled token inside the top k: vLLM's dict merges it, k entries
    assert topk_entropy(top, k) == pytest.approx(topk_entropy(top))


def test_extra_entry_taken_as_p_k_overestimates():
    """The defect k fixes: with the sampled token's tiny p as p_k the tail looks far more spread out."""
    probs = [0.6, 0.39] + [0.001] * 10
    full = [math.log(p) for p in probs]
    entries = [math.log(0.001), math.log(0.6)]  # k = 1, sampled token outside the top 1
    assert topk_entropy(entries) > exact_entropy(full) + 1.0  # the old reading: off the bound
    assert topk_entropy(entries, 1) <= exact_entropy(full)


def test_k_must_be_positive():
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError):
            topk_entropy([0.0], bad)


def test_topk_estimate_is_exact_with_the_whole_vocabulary():
    full = _logprobs([0.3, -1.0, 2.0, 0.0])
    assert topk_entropy(full) == pytest.approx(exact_entropy(full))
    assert topk_entropy_error_bound(full, 4) == 0.0


def test_uniform_and_one_hot():
    assert topk_entropy([math.log(0.25)] * 4) == pytest.approx(math.log(4))
    assert topk_entropy([0.0]) == 0.0
    assert topk_entropy([0.0, -math.inf]) == 0.0
    assert topk_entropy([]) == 0.0


def test_h_base_and_h_tool():
    assert h_base([1.0, 3.0, 100.0], 2) == 2.0
    assert h_base([], 4) == 0.0
    with pytest.raises(ValueError):
        h_base([1.0], 0)
    # the spike, not the average, decides
    assert h_tool([0.1, 0.1, 2.0, 2.2, 0.1], window=2) == pytest.approx(2.1)
    assert h_tool([1.0, 2.0], window=5) == 1.5
    assert h_tool([], window=3) == 0.0
    with pytest.raises(ValueError):
        h_tool([1.0], 0)


@pytest.mark.parametrize(
    "dh, p_base, gamma, expected",
    [(0.0, 0.3, 0.5, 0.3), (1.0, 0.3, 0.5, 0.8), (5.0, 0.3, 0.5, 1.0), (-5.0, 0.3, 0.5, 0.0), (2.0, 0.25, 0.0, 0.25)],
)
def test_branch_probability_clips(dh, p_base, gamma, expected):
    assert branch_probability(dh, p_base, gamma) == pytest.approx(expected)


def test_plan_forks_prefers_chosen_high_entropy_points():
    import random

    from medvr_verl.entropy import plan_forks

    rng = random.Random(0)
    # candidate 1 spikes far above the threshold with P = 1; 0 and 2 do not qualify
    plan = plan_forks([0.05, 3.0, -1.0], 4, p_base=0.0, gamma=1.0, threshold=0.1, rng=rng, fallback="top_dh")
    assert plan == [1, 1, 1, 1]


def test_plan_forks_falls_back_to_the_highest_dh_and_to_fresh_samples():
    import random

    from medvr_verl.entropy import plan_forks

    rng = random.Random(0)
    plan = plan_forks([0.0, -0.5, 0.0], 4, p_base=0.0, gamma=0.5, threshold=0.2, rng=rng, fallback="top_dh")
    assert sorted(plan[:2]) == [0, 2] and plan[2] == 1 and plan[3] == plan[0]
    assert plan_forks([], 3, p_base=1.0, gamma=0.5, threshold=0.0, rng=rng, fallback="top_dh") == [None, None, None]
    assert plan_forks([1.0], 0, p_base=1.0, gamma=0.5, threshold=0.0, rng=rng, fallback="top_dh") == []


def test_plan_forks_gamma_zero_is_random_branching_whatever_dh():
    """Paper: gamma = 0 degrades to random sampling. No threshold, no dH ordering: every candidate is
    equally likely to get the single fork, whatever its dH (a property over random dH vectors)."""
    import random

    from medvr_verl.entropy import plan_forks

    rng = random.Random(1)
    for _ in range(6):
        k = rng.randint(2, 5)
        dhs = [rng.uniform(-3.0, 5.0) for _ in range(k)]
        dhs[0] = 10.0  # one far above any threshold
        for p_base in (0.0, 0.3, 1.0):
            counts = [0] * k
            draws = 3000
            for _ in range(draws):
                (fork,) = plan_forks(dhs, 1, p_base=p_base, gamma=0.0, threshold=1.0, rng=rng, fallback="top_dh")
                counts[fork] += 1
            for c in counts:  # each 1/k; 5 sigma of a binomial share
                assert abs(c / draws - 1 / k) < 5 * (1 / k * (1 - 1 / k) / draws) ** 0.5, (dhs, p_base, counts)


def test_gamma_zero_decides_each_call_at_p_base_below_the_threshold_too():
    import random

    from medvr_verl.entropy import decide_fork, qualifies

    rng = random.Random(2)
    assert qualifies(-5.0, 0.1, 0.0) and not qualifies(0.05, 0.1, 0.5) and qualifies(0.2, 0.1, 0.5)
    for dh in (-2.0, 0.0, 3.0):
        share = sum(decide_fork(dh, p_base=0.3, gamma=0.0, threshold=1.0, rng=rng) for _ in range(4000)) / 4000
        assert abs(share - 0.3) < 0.035
    # gamma > 0: below the threshold never, a spike with P = 1 always
    assert not any(decide_fork(0.05, p_base=1.0, gamma=0.5, threshold=0.1, rng=rng) for _ in range(100))
    assert all(decide_fork(3.0, p_base=0.0, gamma=0.5, threshold=0.1, rng=rng) for _ in range(100))


def test_fill_forks_one_per_chosen_call_then_the_fallback():
    import random

    from medvr_verl.entropy import fill_forks

    rng = random.Random(0)
    dhs = [0.0, 2.0, 1.0, -1.0]
    # chosen calls take one slot each in the order given; the rest round-robin over them by dH
    assert fill_forks([2, 1], dhs, 5, gamma=0.5, fallback="top_dh", rng=rng) == [2, 1, 1, 2, 1]
    assert fill_forks([2, 1], dhs, 1, gamma=0.5, fallback="top_dh", rng=rng) == [2]
    # none chosen: top_dh forks at the most uncertain calls; fresh leaves the slots to fresh samples
    assert fill_forks([], dhs, 3, gamma=0.5, fallback="top_dh", rng=rng) == [1, 2, 0]
    assert fill_forks([], dhs, 3, gamma=0.5, fallback="fresh", rng=rng) == [None, None, None]
    assert fill_forks([1], dhs, 3, gamma=0.5, fallback="fresh", rng=rng) == [1, None, None]
    assert fill_forks([], [], 2, gamma=0.5, fallback="top_dh", rng=rng) == [None, None]
    with pytest.raises(ValueError):
        fill_forks([], dhs, 1, gamma=0.5, fallback="nope", rng=rng)


def test_plan_forks_only_when_uncertain_gives_fresh_samples():
    import random

    from medvr_verl.entropy import plan_forks

    rng = random.Random(0)
    # no call qualifies: "fresh" keeps a single trajectory per slot (no fork), "top_dh" forks anyway
    low = [0.0, 0.05]
    assert plan_forks(low, 2, p_base=1.0, gamma=0.5, threshold=0.1, rng=rng, fallback="fresh") == [None, None]
    assert sorted(plan_forks(low, 2, p_base=1.0, gamma=0.5, threshold=0.1, rng=rng, fallback="top_dh")) == [0, 1]
    # a spike with P = 1 branches once; "fresh" leaves the other slot to a fresh sample, "top_dh" forks again
    assert plan_forks([0.0, 3.0], 2, p_base=0.0, gamma=0.5, threshold=0.1, rng=rng, fallback="fresh") == [1, None]
    assert plan_forks([0.0, 3.0], 2, p_base=0.0, gamma=0.5, threshold=0.1, rng=rng, fallback="top_dh") == [1, 1]


# ---- keyed draws (issue 20 item 3): no generator state, so a resumed run draws as an uninterrupted one


def test_keyed_rng_is_a_function_of_its_key_in_any_process():
    import os
    import subprocess
    import sys

    from medvr_verl.entropy import keyed_rng

    draws = [keyed_rng(7, 2, "3/abc", "call", 1, 0).random() for _ in range(2)]
    assert draws[0] == draws[1]
    assert keyed_rng(7, 3, "3/abc", "call", 1, 0).random() != draws[0]  # the step is part of the key
    assert keyed_rng(8, 2, "3/abc", "call", 1, 0).random() != draws[0]  # and the seed
    code = "from medvr_verl.entropy import keyed_rng; print(repr(keyed_rng(7, 2, '3/abc', 'call', 1, 0).random()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashing differs per process; the key must not
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert float(out.stdout) == draws[0]


def test_prompt_key_reads_index_and_text_only():
    import numpy as np

    from medvr_verl.entropy import prompt_key

    def chat(text, image):
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]

    key = prompt_key(3, chat("Which lung?", object()))
    assert key == prompt_key(3, chat("Which lung?", object()))  # images are data, not identity
    as_array = np.empty(1, dtype=object)
    as_array[0] = chat("Which lung?", None)[0]
    assert prompt_key(np.int64(3), as_array) == key  # a batch's numpy types
    assert prompt_key(3, chat("Which kidney?", None)) != key and prompt_key(4, chat("Which lung?", None)) != key
    assert prompt_key(None, None) == prompt_key("x", [])  # nothing usable: one shared key, no error
