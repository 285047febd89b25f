"""EVR through veRL's real worker code: EVRAgentLoopManager + medvr_agent + medvr_cca on CPU.

The scripted server returns chosen per-token entropies, so the test knows where forks must happen:
per prompt of M = 4 samples, 2 base trajectories (one sure, one with an entropy spike on its zoom
coordinates) and 2 forks, both from the spiking zoom call.
"""

from __future__ import annotations

import pytest
import verl  # noqa: F401  (loads the plugin)
from cca_script import MC, cca_config, chest_image
from evr_script import EVRScript, base_index

from medvr_verl.rollout import EVRAgentLoopManager, EVRSettings
from medvr_verl.testing.harness import make_agent_batch, make_sample, run_manager
from medvr_verl.testing.scripted_server import ScriptedLLMClient

pytestmark = pytest.mark.vl_stack
# our top_dh fallback: the slot the one qualifying call leaves forks too (the paper's fresh default
# would make it a fresh sample: tests/test_agent_loop_tq_on_cpu.py::test_v1_fresh_fallback_...)
EVR = "+actor_rollout_ref.rollout.custom={evr: {gamma: 0.5, p_base: 0.0, threshold: 0.5, seed: 0, fallback: top_dh}}"


def _run(tiny_model_path, reward_workers, *, overrides=(EVR,), meta_info=None, entropy=True, prompts=2):
    config = cca_config(tiny_model_path, *overrides, num_workers=2)
    samples = [
        make_sample(f"[script:p{i}] Which lung?", images=[chest_image()], extra_info=MC, ground_truth="A")
        for i in range(prompts)
    ]
    batch = make_agent_batch(samples, n=4, agent_name="medvr_agent", meta_info=meta_info)
    client = ScriptedLLMClient(config, script=EVRScript(tiny_model_path, entropy=entropy))
    return (
        config,
        batch,
        run_manager(EVRAgentLoopManager, config, client, batch, reward_loop_worker_handles=reward_workers),
    )


@pytest.fixture(scope="module")
def evr_run(ray_session, tiny_model_path, reward_workers):
    return _run(tiny_model_path, reward_workers)


def _valid_response(output, row):
    width = output.batch["responses"].shape[1]
    n = int(output.batch["attention_mask"][row, -width:].sum())
    return output.batch["responses"][row, :n]


def test_each_group_is_two_bases_and_two_forks_from_the_spike(evr_run, tokenizer):
    _, batch, output = evr_run
    assert len(output) == len(batch) == 8
    forks = output.non_tensor_batch["medvr_fork"]
    for group in range(2):
        rows = range(4 * group, 4 * group + 4)
        texts = [tokenizer.decode(_valid_response(output, r)) for r in rows]
        assert [f is not None for f in forks[4 * group : 4 * group + 4]] == [False, False, True, True]
        # the forks continue the unsure base (odd index): same thought, new coordinates
        assert sorted(base_index(t) for t in texts[:2]) == [0, 1]
        assert [base_index(t) for t in texts[2:]] == [1, 1]
        assert "[98, 56, 196, 112]" in texts[2] and "[98, 56, 196, 112]" in texts[3]
        assert not any("[98, 56, 196, 112]" in t for t in texts[:2])


def test_fork_shares_the_base_prefix_with_its_mask_and_logprobs(evr_run, tokenizer):
    _, _, output = evr_run
    base = next(r for r in (0, 1) if base_index(tokenizer.decode(_valid_response(output, r))) == 1)
    fork = 2
    call = output.non_tensor_batch["medvr_trajectory"][base].fork_points[0]
    cut = call.coord_start
    for key in ("responses", "response_mask", "rollout_log_probs"):
        assert output.batch[key][fork, :cut].tolist() == output.batch[key][base, :cut].tolist(), key
    assert output.batch["response_mask"][fork, :cut].all()
    assert output.batch["responses"][fork, cut:].tolist() != output.batch["responses"][base, cut:].tolist()
    assert output.non_tensor_batch["medvr_fork"][fork]["prefix_tokens"] == call.fork_prefix_len


def test_every_member_is_rewarded_as_one_group(evr_run):
    _, batch, output = evr_run
    assert output.non_tensor_batch["cca_group_size"].tolist() == [4] * 8
    assert list(output.non_tensor_batch["group_uid"]) == list(batch.non_tensor_batch["uid"])
    # all answer A: 2 top-left (bases) vs 2 bottom-right (forks) zooms: no strict majority anywhere
    assert output.non_tensor_batch["tool_reward"].tolist() == [0.5] * 8
    assert output.non_tensor_batch["cca_quorum_size"].tolist() == [4] * 8


def test_metrics_reach_the_step_timing(evr_run):
    _, _, output = evr_run
    timing = output.meta_info["timing"]
    assert timing["medvr/evr/fork_rate/mean"] == 1.0
    assert timing["medvr/evr/delta_h/max"] == pytest.approx(2.9, abs=0.05)
    assert timing["medvr/evr/prefix_tokens_reused/sum"] > 0


def test_validation_runs_without_forks(ray_session, tiny_model_path, reward_workers):
    _, _, output = _run(tiny_model_path, reward_workers, meta_info={"validate": True}, prompts=1)
    assert all(f is None for f in output.non_tensor_batch.get("medvr_fork", [None] * len(output)))


def test_evr_off_runs_independent_samples(ray_session, tiny_model_path, reward_workers):
    off = "+actor_rollout_ref.rollout.custom={evr: {enable: false}}"
    _, _, output = _run(tiny_model_path, reward_workers, overrides=(off,), prompts=1)
    assert all(f is None for f in output.non_tensor_batch.get("medvr_fork", [None] * len(output)))


def test_without_server_entropies_forks_fall_back_to_the_tool_calls(ray_session, tiny_model_path, reward_workers):
    _, _, output = _run(tiny_model_path, reward_workers, entropy=False, prompts=1)
    forks = output.non_tensor_batch["medvr_fork"]
    assert [f is not None for f in forks] == [False, False, True, True]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="p_base"):
        EVRSettings(p_base=1.5)
    with pytest.raises(ValueError, match="tool_window"):
        EVRSettings(tool_window=0)
    with pytest.raises(ValueError, match="mode"):
        EVRSettings(mode="eager")
    with pytest.raises(ValueError, match="fallback"):
        EVRSettings(fallback="random")
    with pytest.raises(ValueError, match="mask_fork_prefix"):
        EVRSettings(mask_fork_prefix="yes")
    defaults = EVRSettings()
    assert (defaults.mode, defaults.fallback, defaults.mask_fork_prefix) == ("streaming", "fresh", False)


def test_evr_on_real_distributions_of_the_tiny_model(ray_session, tiny_model_path, reward_workers, tokenizer):
    """The same group with logprobs and entropies from the tiny model's real forward passes."""
    from medvr_verl.testing.real_logprob_client import RealLogprobLLMClient

    # a random-weight model's entropies are flat: whether a call qualifies is chance, so the layout
    # asserted below is our top_dh fallback's (2 bases, 2 forks whatever dH says)
    config = cca_config(
        tiny_model_path, "+actor_rollout_ref.rollout.custom={evr: {seed: 0, fallback: top_dh}}", num_workers=1
    )
    batch = make_agent_batch(
        [make_sample("[script:p0] Which lung?", images=[chest_image()], extra_info=MC)], n=4, agent_name="medvr_agent"
    )
    client = RealLogprobLLMClient(config, script=EVRScript(tiny_model_path, entropy=False))
    output = run_manager(EVRAgentLoopManager, config, client, batch, reward_loop_worker_handles=reward_workers)

    forks = output.non_tensor_batch["medvr_fork"]
    assert [f is not None for f in forks] == [False, False, True, True]
    for row in range(4):
        turns = output.non_tensor_batch["medvr_trajectory"][row].turns
        entropies = [e for turn in turns for e in (turn.entropy or [])]
        # a random-weight model over a 448-token vocabulary: entropies well above zero, all different
        assert len(entropies) > 10 and min(entropies) > 0.5 and len(set(entropies)) > len(entropies) // 2
    assert output.meta_info["timing"]["medvr/evr/delta_h/mean"] != 0.0

    # the rollout logprobs are the model's own: recompute one trajectory's first turn in this process
    row = 0
    turn = output.non_tensor_batch["medvr_trajectory"][row].turns[0]
    prompt_len = int(output.batch["attention_mask"][row, : output.batch["prompts"].shape[1]].sum())
    prompt = output.batch["prompts"][row, -prompt_len:].tolist()
    tokens = output.batch["responses"][row, turn.start : turn.start + turn.length].tolist()
    logprobs, estimated, exact = client.score(prompt, tokens, [chest_image().resize((196, 112))])
    got = output.batch["rollout_log_probs"][row, turn.start : turn.start + turn.length].tolist()
    assert got == pytest.approx(logprobs, abs=1e-4)
    assert all(e <= x + 1e-5 for e, x in zip(estimated, exact))  # the estimator is a lower bound
