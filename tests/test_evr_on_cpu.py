"""EVR cases beyond tests/test_agent_loop_tq_on_cpu.py, on the recipe's V1 worker
(``MedVRAgentLoopManagerTQ`` through veRL's TransferQueue and replay buffer, ``run_manager_v1``):
a server that returns no entropies, and the tiny model's real distributions; plus the settings.

Per prompt of M = 4 samples: 2 base trajectories, then 2 forks from their zoom calls.
"""

from __future__ import annotations

import pytest
import verl  # noqa: F401  (loads the plugin)
from cca_script import MC, cca_config, chest_image
from evr_script import EVRScript

from medvr_verl.agent_loop_tq import MedVRAgentLoopManagerTQ
from medvr_verl.settings import EVRSettings
from medvr_verl.testing.harness import make_sample, run_manager_v1
from medvr_verl.testing.scripted_server import ScriptedLLMClient

pytestmark = pytest.mark.vl_stack
# our top_dh fallback: a call that does not qualify still takes the fork slots (the paper's fresh
# default would make them fresh samples: test_agent_loop_tq_on_cpu.py::test_v1_fresh_fallback_...)
EVR = "+actor_rollout_ref.rollout.custom={evr: {gamma: 0.5, p_base: 0.0, threshold: 0.5, seed: 0, fallback: top_dh}}"


def _samples(count):
    return [
        {
            **make_sample(f"[script:p{i}] Which lung?", images=[chest_image()], extra_info=MC, ground_truth="A"),
            "agent_name": "medvr_agent",
        }
        for i in range(count)
    ]


def _group(meta):
    """The one prompt's rows as ``[position, ...]`` in session order (bases first)."""
    sessions = sorted((int(key.rsplit("_", 2)[1]), pos) for pos, key in enumerate(meta.keys))
    return [pos for _, pos in sessions]


def test_without_server_entropies_forks_fall_back_to_the_tool_calls(ray_session, tiny_model_path, reward_workers):
    config = cca_config(tiny_model_path, EVR, num_workers=1)
    client = ScriptedLLMClient(config, script=EVRScript(tiny_model_path, entropy=False))
    meta, metrics, rows = run_manager_v1(
        MedVRAgentLoopManagerTQ, config, client, _samples(1), reward_loop_worker_handles=reward_workers
    )
    forks = [rows["extra_fields"][pos]["medvr_fork"] for pos in _group(meta)]
    assert [f is not None for f in forks] == [False, False, True, True]
    assert metrics["medvr/evr/qualified_points/sum"] == 0  # dH is 0 without entropies: nothing qualifies


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


def test_evr_on_real_distributions_of_the_tiny_model(ray_session, tiny_model_path, reward_workers):
    """The same group with logprobs and entropies from the tiny model's real forward passes."""
    from medvr_verl.testing.real_logprob_client import RealLogprobLLMClient

    # a random-weight model's entropies are flat: whether a call qualifies is chance, so the layout
    # asserted below is our top_dh fallback's (2 bases, 2 forks whatever dH says)
    config = cca_config(
        tiny_model_path, "+actor_rollout_ref.rollout.custom={evr: {seed: 0, fallback: top_dh}}", num_workers=1
    )
    client = RealLogprobLLMClient(config, script=EVRScript(tiny_model_path, entropy=False))
    meta, metrics, rows = run_manager_v1(
        MedVRAgentLoopManagerTQ, config, client, _samples(1), reward_loop_worker_handles=reward_workers
    )
    group = _group(meta)
    forks = [rows["extra_fields"][pos]["medvr_fork"] for pos in group]
    assert [f is not None for f in forks] == [False, False, True, True]
    assert metrics["medvr/evr/delta_h/mean"] != 0.0  # real entropies: dH of the zoom calls is not flat

    # the rollout logprobs are the model's own: recompute a base's first turn in this process
    pos = group[0]
    mask = rows["response_mask"][pos].tolist()
    first_turn = mask.index(0)  # the first turn ends where the tool response (not trained) begins
    prompt = rows["prompts"][pos].tolist()
    tokens = rows["responses"][pos].tolist()[:first_turn]
    logprobs, estimated, exact = client.score(prompt, tokens, [chest_image().resize((196, 112))])
    got = rows["rollout_log_probs"][pos].tolist()[:first_turn]
    assert got == pytest.approx(logprobs, abs=1e-4)
    assert all(e <= x + 1e-5 for e, x in zip(estimated, exact))  # the estimator is a lower bound
