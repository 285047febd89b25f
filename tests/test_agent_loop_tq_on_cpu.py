"""MedVR on veRL's V1 trainer path: TransferQueue, the V1 agent-loop worker, the replay buffer, GRPO.

Each run goes through veRL's own V1 code as ``PPOTrainer`` drives it (``run_manager_v1``): prompts
registered in a real in-process TransferQueue, ``MedVRAgentLoopManagerTQ`` (or veRL's stock
``AgentLoopManagerTQ``) with Ray workers and the scripted server, real ``medvr_cca`` reward workers,
then veRL's ``ReplayBuffer`` sampling (this plugin's subclass adds metrics) and the rows read back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from cca_script import MC, VARIANTS, cca_config, chest_image, make_script, variant_of
from evr_script import EVRScript, base_index
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
from verl.trainer.ppo.v1 import AgentLoopManagerTQ

from medvr_verl.agent_loop_tq import MedVRAgentLoopManagerTQ
from medvr_verl.config_check import MedVRSettingsError, check_settings
from medvr_verl.testing.harness import make_sample, run_manager_v1
from medvr_verl.testing.scripted_server import ScriptedLLMClient, create_call_recorder, get_call_records
from medvr_verl.testing.scripting import is_fork_request

pytestmark = pytest.mark.vl_stack
NO_EVR = "+actor_rollout_ref.rollout.custom={evr: {enable: false}}"
# our top_dh fallback: the slot the one qualifying call leaves forks too (the paper's fresh: below)
EVR = "+actor_rollout_ref.rollout.custom={evr: {gamma: 0.5, p_base: 0.0, threshold: 0.5, seed: 0, fallback: top_dh}}"
EVR_TWO_PHASE = (
    "+actor_rollout_ref.rollout.custom={evr: {mode: two_phase, gamma: 0.5, p_base: 0.0, threshold: 0.5, seed: 0, "
    "fallback: top_dh}}"
)
EVR_FRESH_MASKED = (
    "+actor_rollout_ref.rollout.custom={evr: {gamma: 0.5, p_base: 0.0, threshold: 0.5, seed: 0, "
    "fallback: fresh, mask_fork_prefix: true}}"
)


class BaseAnswersAfterItsFork(ScriptedLLMClient):
    """Holds the unsure base's answer turn (the one after its spiking zoom call) until a fork request of
    the same prompt has reached the server: passes only if the fork starts while its base still runs
    (streaming EVR); a fork that waits for its base would leave the base to time out and fail."""

    def __init__(self, *args, wait_s: float = 60.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.wait_s = wait_s

    async def generate(self, request_id, *, prompt_ids, **kwargs):
        import asyncio

        from verl.utils import normalize_token_ids

        text = self._decode_context(normalize_token_ids(prompt_ids))
        key, turn = self._key_and_turn(text)
        seen = self.__dict__.setdefault("_fork_seen", {}).setdefault(key, asyncio.Event())
        if is_fork_request(text):
            seen.set()
        elif turn == 1 and base_index(text) == 1:
            await asyncio.wait_for(seen.wait(), self.wait_s)
        return await super().generate(request_id, prompt_ids=prompt_ids, **kwargs)


def _samples(count, question="Which lung?", agent_name="medvr_agent"):
    return [
        {
            **make_sample(f"[script:p{i}] {question}", images=[chest_image()], extra_info=MC, ground_truth="A"),
            "agent_name": agent_name,
        }
        for i in range(count)
    ]


def _by_uid(meta):
    """``{uid: [(session_id, position), ...]}`` sorted by session, from the sampled keys."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for pos, key in enumerate(meta.keys):
        uid, session, index = key.rsplit("_", 2)
        assert index == "0"  # medvr_agent leaves one output per session
        groups.setdefault(uid, []).append((int(session), pos))
    return {uid: sorted(rows) for uid, rows in groups.items()}


def _text(rows, pos, tokenizer):
    return tokenizer.decode(rows["responses"][pos], skip_special_tokens=True)


def _scores(rows):
    return [float(s.sum()) for s in rows["rm_scores"]]


def _assert_cca_rewards(rows, group, tokenizer):
    """Each variant's tool reward is the hand-worked one (cca_script), and only it tells the correct
    variants' rewards apart (same answer, same format)."""
    scores, tool = {}, {}
    for _, pos in group:
        variant = variant_of(_text(rows, pos, tokenizer))
        scores[variant] = _scores(rows)[pos]
        tool[variant] = rows["extra_fields"][pos]["reward_extra_info"]["tool_reward"]
    assert tool == {k: v[3] for k, v in enumerate(VARIANTS)}
    assert scores[0] == scores[1] == pytest.approx(scores[2] + 0.5) and scores[2] > scores[3]


@pytest.fixture(scope="module")
def viz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("viz")


@pytest.fixture(scope="module")
def cca_run(ray_session, tiny_model_path, reward_workers, viz_dir):
    custom = f"+actor_rollout_ref.rollout.custom={{evr: {{enable: false}}, viz: {{dir: '{viz_dir}', interval: 1}}}}"
    config = cca_config(tiny_model_path, custom, num_workers=2)
    client = ScriptedLLMClient(config, script=make_script())
    return run_manager_v1(
        MedVRAgentLoopManagerTQ,
        config,
        client,
        _samples(2),
        reward_loop_worker_handles=reward_workers,
    )


def test_v1_group_is_scored_together_with_consensus(cca_run, tokenizer):
    meta, metrics, rows = cca_run
    groups = _by_uid(meta)
    assert len(groups) == 2 and all([s for s, _ in g] == [0, 1, 2, 3] for g in groups.values())
    for group in groups.values():
        _assert_cca_rewards(rows, group, tokenizer)
    for extra in rows["extra_fields"]:
        info = extra["reward_extra_info"]
        assert info["cca_group_size"] == 4 and info["cca_quorum_size"] == 3 and not info["cca_partial_group"]
    assert metrics["medvr/acc/mean"] == pytest.approx(0.75)
    assert metrics["medvr/tool_reward/mean"] == pytest.approx((1.0 + 1.0 + 0.5 + 0.0) / 4)
    assert metrics["medvr/fork/mean"] == 0.0 and metrics["medvr/num_zoom/mean"] == 1.0


def test_v1_worker_draws_the_groups_it_scored(cca_run, viz_dir):
    meta, _, _ = cca_run
    pngs = sorted(viz_dir.rglob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)
    uids = {key.split("_")[0] for key in meta.keys}
    assert all(any(uid[:8] in p.name for uid in uids) for p in pngs)


def test_v1_rows_are_lean(cca_run):
    _, _, rows = cca_run
    assert "raw_prompt" not in rows.keys() and "multi_modal_data" not in rows.keys()
    for extra in rows["extra_fields"]:
        assert "medvr_trajectory" not in extra and "token_entropy" not in extra
        assert extra["medvr_fork"] is None and len(extra["medvr_zoom_calls"]) == 1
    assert not any(key.startswith("medvr_publish") or key == "medvr_fork" for key in rows.keys())


def test_v1_rows_carry_both_images_and_mrope_positions(cca_run, tokenizer):
    _, _, rows = cca_run
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for pos in range(len(rows["input_ids"])):
        input_ids = rows["input_ids"][pos]
        grid = rows["multi_modal_inputs"][pos]["image_grid_thw"]
        assert grid.shape[0] == 2  # the question's image and the zoom crop
        assert int((input_ids == image_pad).sum()) == int(grid.prod(-1).sum() // 4)
        assert rows["position_ids"][pos].shape == (4, input_ids.shape[0])  # text + 3 mrope rows


def test_grpo_advantages_group_by_uid_from_the_sampled_rows(cca_run):
    meta, _, rows = cca_run
    mask = rows["response_mask"].to_padded_tensor(padding=0)
    scores = torch.zeros(mask.shape, dtype=torch.float32)
    lengths = mask.shape[1]
    for pos, s in enumerate(rows["rm_scores"]):
        scores[pos, : s.shape[0]] = s[:lengths]
    uids = np.array([key.rsplit("_", 2)[0] for key in meta.keys], dtype=object)
    advantages, _ = compute_grpo_outcome_advantage(scores, mask, index=uids)
    per_row = advantages.sum(-1) / mask.sum(-1)
    for uid in set(uids):
        rows_of_uid = np.flatnonzero(uids == uid)
        assert float(per_row[rows_of_uid].mean()) == pytest.approx(0.0, abs=1e-4)
        best = rows_of_uid[np.argmax([float(scores[i].sum()) for i in rows_of_uid])]
        worst = rows_of_uid[np.argmin([float(scores[i].sum()) for i in rows_of_uid])]
        assert per_row[best] > 0 > per_row[worst]


@pytest.fixture(scope="module")
def evr_run(ray_session, tiny_model_path, reward_workers):
    """Streaming EVR (the default mode); the unsure base may answer only once its fork has started."""
    config = cca_config(tiny_model_path, EVR, num_workers=2)
    client = BaseAnswersAfterItsFork(config, script=EVRScript(tiny_model_path))
    return run_manager_v1(
        MedVRAgentLoopManagerTQ, config, client, _samples(2), reward_loop_worker_handles=reward_workers
    )


@pytest.fixture(scope="module")
def evr_two_phase_run(ray_session, tiny_model_path, reward_workers):
    config = cca_config(tiny_model_path, EVR_TWO_PHASE, num_workers=2)
    recorder = create_call_recorder()
    client = ScriptedLLMClient(config, script=EVRScript(tiny_model_path), recorder=recorder)
    try:
        out = run_manager_v1(
            MedVRAgentLoopManagerTQ, config, client, _samples(2), reward_loop_worker_handles=reward_workers
        )
        return (*out, get_call_records(recorder))
    finally:
        import ray

        ray.kill(recorder)


@pytest.mark.parametrize("run", ["evr_run", "evr_two_phase_run"])
def test_v1_evr_two_bases_then_two_forks_per_group(run, request, tokenizer):
    meta, metrics, rows = request.getfixturevalue(run)[:3]
    for group in _by_uid(meta).values():
        assert [s for s, _ in group] == [0, 1, 2, 3]
        forks = [rows["extra_fields"][pos]["medvr_fork"] for _, pos in group]
        assert [f is not None for f in forks] == [False, False, True, True]
        texts = [_text(rows, pos, tokenizer) for _, pos in group]
        assert sorted(base_index(t) for t in texts[:2]) == [0, 1]
        assert [base_index(t) for t in texts[2:]] == [1, 1]  # both forks from the unsure base
        assert all("[98, 56, 196, 112]" in t for t in texts[2:])
    assert metrics["medvr/evr/fork_rate/mean"] == 1.0 and metrics["medvr/fork/mean"] == 0.5
    assert metrics["medvr/evr/delta_h/max"] > 0.5 and metrics["medvr/evr/prefix_tokens_reused/mean"] > 0
    assert metrics["medvr/evr/qualified_points/sum"] == 2  # the unsure base's call, once per group
    assert metrics["medvr/group_time_s/max"] > 0


def test_v1_streaming_fork_starts_at_the_spike_and_the_rest_by_fallback(evr_run):
    # evr_run's server held the unsure base's answer until its fork asked: the fork started while the
    # base ran. One fork per chosen call streams; the other slot is the fallback's (top_dh: same call).
    _, metrics, _ = evr_run
    assert metrics["medvr/evr/streamed_forks/sum"] == 2 and metrics["medvr/evr/streamed_forks/max"] == 1
    # the fork split: per group one slot taken by the qualified call, one by the fallback, no fresh one
    assert metrics["medvr/evr/fork_rate_qualified/mean"] == 0.5
    assert metrics["medvr/evr/fork_rate_fallback/mean"] == 0.5 and metrics["medvr/evr/fresh_rate/mean"] == 0.0


def test_v1_two_phase_forks_only_after_every_base_finished(evr_two_phase_run):
    *_, calls = evr_two_phase_run
    metrics = evr_two_phase_run[1]
    assert metrics["medvr/evr/streamed_forks/sum"] == 0
    for key in {c["key"] for c in calls}:
        mine = [c for c in calls if c["key"] == key]
        forks = [i for i, c in enumerate(mine) if is_fork_request(c["prompt_text"])]
        base_answers = [
            i
            for i, c in enumerate(mine)
            if c["turn"] == 1 and base_index(c["prompt_text"]) is not None and i not in forks
        ]
        assert len(forks) == 2 and min(forks) > max(base_answers[:2])


def test_v1_two_phase_cannot_pass_the_streaming_check(ray_session, tiny_model_path, reward_workers):
    """Negative control of evr_run's server: under two-phase planning no fork starts while its base
    runs, so the unsure base's held answer times out and the group fails."""
    config = cca_config(tiny_model_path, EVR_TWO_PHASE, num_workers=1)
    client = BaseAnswersAfterItsFork(config, script=EVRScript(tiny_model_path), wait_s=3.0)
    meta, _, rows = run_manager_v1(
        MedVRAgentLoopManagerTQ, config, client, _samples(1), reward_loop_worker_handles=reward_workers
    )
    (group,) = _by_uid(meta).values()
    assert len(group) < 4
    assert all(rows["extra_fields"][pos]["reward_extra_info"]["cca_partial_group"] for _, pos in group)


def test_v1_fresh_fallback_and_masked_fork_prefix(ray_session, tiny_model_path, reward_workers, tokenizer):
    """fallback=fresh: the sure base's call does not qualify, so its slot becomes a fresh sample (no
    second fork); mask_fork_prefix: the fork's shared prefix leaves its loss, its own tokens stay."""
    config = cca_config(tiny_model_path, EVR_FRESH_MASKED, num_workers=1)
    client = ScriptedLLMClient(config, script=EVRScript(tiny_model_path))
    meta, metrics, rows = run_manager_v1(
        MedVRAgentLoopManagerTQ, config, client, _samples(1), reward_loop_worker_handles=reward_workers
    )
    (group,) = _by_uid(meta).values()
    assert [s for s, _ in group] == [0, 1, 2, 3]
    forks = [rows["extra_fields"][pos]["medvr_fork"] for _, pos in group]
    assert [f is not None for f in forks] == [False, False, True, False]
    texts = [_text(rows, pos, tokenizer) for _, pos in group]
    assert base_index(texts[2]) == 1 and base_index(texts[3]) == 2  # a third, independent sample
    assert metrics["medvr/evr/fork_rate/mean"] == 0.5

    def mask_and_ids(pos):
        return rows["response_mask"][pos].tolist(), rows["responses"][pos].tolist()

    base_pos = next(pos for (_, pos), t in zip(group, texts) if base_index(t) == 1 and "[98, 56" not in t)
    fork_mask, fork_ids = mask_and_ids(group[2][1])
    base_mask, base_ids = mask_and_ids(base_pos)
    first_trained = fork_mask.index(1)
    shared = next(i for i, (a, b) in enumerate(zip(fork_ids, base_ids)) if a != b)
    assert 0 < first_trained <= shared  # only tokens it shares with its base are masked
    assert sum(base_mask[:first_trained]) == first_trained  # ... which its base trains
    assert sum(fork_mask) > 0 and fork_mask[first_trained : shared + 1].count(1) >= 1
    for _, pos in (group[0], group[1], group[3]):  # bases and the fresh sample train their whole turns
        mask, _ = mask_and_ids(pos)
        assert mask[0] == 1


def test_v1_validation_runs_n1_unforked(ray_session, tiny_model_path, reward_workers, tokenizer):
    config = cca_config(tiny_model_path, EVR, "actor_rollout_ref.rollout.val_kwargs.n=1", num_workers=1)
    client = ScriptedLLMClient(config, script=EVRScript(tiny_model_path))
    meta, _, rows = run_manager_v1(
        MedVRAgentLoopManagerTQ,
        config,
        client,
        _samples(2),
        reward_loop_worker_handles=reward_workers,
        validate=True,
    )
    assert sorted(s for g in _by_uid(meta).values() for s, _ in g) == [0, 0]
    assert all(extra["medvr_fork"] is None for extra in rows["extra_fields"])
    assert all(extra["reward_extra_info"]["cca_group_size"] == 1 for extra in rows["extra_fields"])


class _FailingForks(EVRScript):
    def __call__(self, ctx):
        if is_fork_request(ctx.text):
            raise RuntimeError("server lost the fork")
        return super().__call__(ctx)


def test_v1_group_with_a_failed_fork_is_failure_and_keeps_its_other_rows(
    ray_session, tiny_model_path, reward_workers, tokenizer
):
    import transfer_queue as tq

    config = cca_config(tiny_model_path, EVR, num_workers=1)
    client = ScriptedLLMClient(config, script=_FailingForks(tiny_model_path))
    seen = {}

    class Spy:  # veRL's ReplayBuffer samples failed groups; record their status before it clears them
        def __init__(self, **kwargs):
            from medvr_verl.replay_buffer import MedVRReplayBuffer

            self.inner = MedVRReplayBuffer(**kwargs)

        def sample(self, **kwargs):
            out = self.inner.sample(**kwargs)
            seen["failure"] = set(self.inner.failure_keys[kwargs["partition_id"]])
            return out

    meta, metrics, rows = run_manager_v1(
        MedVRAgentLoopManagerTQ,
        config,
        client,
        _samples(1),
        reward_loop_worker_handles=reward_workers,
        sampler_cls=Spy,
    )
    (uid,) = _by_uid(meta)
    assert seen["failure"] == {uid}
    assert [s for s, _ in _by_uid(meta)[uid]] == [0, 1]  # the bases; both forks failed
    for extra in rows["extra_fields"]:
        info = extra["reward_extra_info"]
        assert info["cca_partial_group"] and info["cca_group_size"] == 2
    assert metrics["medvr/cca_partial_group/count"] == 2
    assert tq.kv_list("train").get("train", {}) == {}


def test_medvr_cca_in_stock_v1_tool_agent_setup(ray_session, tiny_model_path, reward_workers, tokenizer):
    """veRL's own AgentLoopManagerTQ + tool_agent, only the reward manager is medvr_cca (Ray broker)."""
    config = cca_config(tiny_model_path, NO_EVR, num_workers=1)
    client = ScriptedLLMClient(config, script=make_script())
    samples = _samples(1, "Which lung, stock?", agent_name="tool_agent")
    meta, metrics, rows = run_manager_v1(
        AgentLoopManagerTQ, config, client, samples, reward_loop_worker_handles=reward_workers
    )
    (group,) = _by_uid(meta).values()
    _assert_cca_rewards(rows, group, tokenizer)
    assert not any(key.startswith("medvr/") for key in metrics)  # stock rows carry no MedVR tags


def test_v1_refuses_what_cannot_work_before_step_one(tiny_model_path):
    config = cca_config(tiny_model_path, EVR, "actor_rollout_ref.rollout.agent.default_agent_loop=medvr_agent")
    config.trainer.v1.trainer_mode = "colocate_async"
    with pytest.raises(MedVRSettingsError, match="evr.enable=false"):
        check_settings(config, reward_workers=True)
    config.trainer.v1.trainer_mode = "sync"
    check_settings(config, reward_workers=True)
    with pytest.raises(MedVRSettingsError, match="tool_reward=consensus"):
        check_settings(config, reward_workers=False)


# ---- issue 20 item 3: EVR's draws keyed by (seed, step, prompt): a resumed run decides as an
# uninterrupted one ----------------------------------------------------------------------------------

# gamma 0: random branching, every zoom call forks with p_base; the paper's fallback (fresh)
EVR_RANDOM = "+actor_rollout_ref.rollout.custom={evr: {gamma: 0.0, p_base: 0.5, seed: 7}}"


def _fork_counts_per_step(config, tiny_model_path, reward_workers, steps, samples):
    """One manager (one worker process) rolling out ``steps`` in order, as PPOTrainer does between a
    start or a resume and the end; per step, each prompt's number of forks (in ``samples`` order)."""
    import uuid

    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    from medvr_verl.testing.harness import ensure_ray, register_prompts_v1, sync_replay_buffer

    ensure_ray()
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    client = ScriptedLLMClient(config, script=EVRScript(tiny_model_path))
    manager = MedVRAgentLoopManagerTQ.create(
        config=config, llm_client=client, teacher_client=None, reward_loop_worker_handles=reward_workers
    )
    counts = []
    try:
        for step in steps:
            uids = [str(uuid.uuid4()) for _ in samples]  # veRL draws new uids every step
            manager.generate_sequences(register_prompts_v1(samples, global_steps=step, uids=uids))
            meta, _ = sync_replay_buffer().sample(global_steps=step, partition_id="train", batch_size=len(samples))
            rows = tq.kv_batch_get(keys=meta.keys, partition_id="train")
            tq.kv_clear(keys=meta.keys, partition_id="train")
            groups = _by_uid(meta)
            assert all(len(groups[uid]) == 4 for uid in uids)
            counts.append(
                [sum(rows["extra_fields"][p]["medvr_fork"] is not None for _, p in groups[uid]) for uid in uids]
            )
    finally:
        for worker in manager.agent_loop_workers:
            ray.kill(worker)
    return counts


def test_v1_evr_decisions_of_a_resumed_run_are_the_uninterrupted_runs(ray_session, tiny_model_path, reward_workers):
    """Steps 1 and 2 in one worker against step 2 alone in a fresh worker (a run resumed at step 2):
    the same forks per prompt. Before, the worker's generator restarted from the seed, so a resumed
    run replayed step 1's decisions."""
    config = cca_config(tiny_model_path, EVR_RANDOM, num_workers=1)
    samples = _samples(4)
    step1, step2 = _fork_counts_per_step(config, tiny_model_path, reward_workers, [1, 2], samples)
    (resumed,) = _fork_counts_per_step(config, tiny_model_path, reward_workers, [2], samples)
    assert resumed == step2
    assert step1 != step2  # the step keys the draws (so replaying step 1 would show)
    assert 0 < sum(step1 + step2) < 2 * 2 * len(samples)  # random branching: some calls fork, some not
