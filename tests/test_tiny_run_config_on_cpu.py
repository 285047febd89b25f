"""The tiny-model main_ppo run's config (medvr_verl.cpu.tiny_run): the CPU and GPU runs compose from the
same code against veRL's schema and differ only in the backend, so the CPU run guards the GPU config."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

from medvr_verl.cpu import tiny_run


def _compose(overrides):
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="medvr_verl.recipes.medvr", version_base=None):
        config = compose(config_name="medvr", overrides=[o for o in overrides if not o.startswith("hydra.")])
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    return config


def _flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, path + "."))
        else:
            out[path] = value
    return out


@pytest.fixture(scope="module")
def configs(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    data = out / "d.parquet"
    return {
        backend: _compose(tiny_run.command(tiny_model_path, data, out, backend=backend)[5:])
        for backend in tiny_run.BACKENDS
    }


def test_both_backends_compose_and_validate(configs):
    cpu, gpu = configs["cpu"], configs["gpu"]
    assert cpu.actor_rollout_ref.rollout.name == "medvr_cpu" and gpu.actor_rollout_ref.rollout.name == "medvr_vllm"
    assert cpu.trainer.device == "cpu" and gpu.trainer.device == "cuda"
    assert cpu.actor_rollout_ref.actor.strategy == "fsdp2"
    assert cpu.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    for config in (cpu, gpu):
        # the tiny model's prompts (~1,150 tokens) must survive veRL's filter_overlong_prompts
        assert config.data.max_prompt_length >= 1536 and config.data.filter_overlong_prompts
        assert config.trainer.n_gpus_per_node == 1 and config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
        assert config.actor_rollout_ref.actor.use_kl_loss and config.algorithm.adv_estimator == "grpo"
        assert config.actor_rollout_ref.rollout.custom.evr.enable
        # our fallback, chosen on purpose (random weights: flat entropies), the paper's CCA quorum
        assert config.actor_rollout_ref.rollout.custom.evr.fallback == tiny_run.EVR_FALLBACK == "top_dh"
        assert config.reward.reward_kwargs.quorum == "correct"


def test_the_vllm_cpu_overlay_is_the_cpu_overlay_with_medvr_vllm(configs):
    """+backend=cpu_vllm (the vLLM suite's run): vLLM's CPU platform settings on top of backend/cpu."""
    cpu = _flat(OmegaConf.to_container(configs["cpu"], resolve=False))
    vllm = _flat(OmegaConf.to_container(configs["cpu_vllm"], resolve=False))
    rollout = configs["cpu_vllm"].actor_rollout_ref.rollout
    assert rollout.name == "medvr_vllm" and rollout.enforce_eager and rollout.load_format == "auto"
    assert rollout.enable_sleep_mode is False and rollout.free_cache_engine is False
    assert configs["cpu_vllm"].ray_kwargs.ray_init.runtime_env.env_vars.VLLM_CPU_KVCACHE_SPACE == "1"
    # template decoding (ours, off in the recipe): the random model zooms, so EVR has calls to fork
    assert rollout.custom.vllm.constrained.enable is True and rollout.logprobs_mode == "raw_logprobs"
    assert configs["gpu"].actor_rollout_ref.rollout.custom.vllm.constrained.enable is False
    differing = {key for key in cpu.keys() | vllm.keys() if cpu.get(key, "<absent>") != vllm.get(key, "<absent>")}
    assert all(
        key.startswith(
            (
                "actor_rollout_ref.rollout.",
                "ray_kwargs.ray_init.runtime_env.env_vars.VLLM_CPU",
                "actor_rollout_ref.actor.entropy_coeff",
            )
        )
        for key in differing
    ), sorted(differing)


def test_the_runs_differ_only_in_the_backend(configs):
    cpu = _flat(OmegaConf.to_container(configs["cpu"], resolve=False))
    gpu = _flat(OmegaConf.to_container(configs["gpu"], resolve=False))
    differing = {key for key in cpu.keys() | gpu.keys() if cpu.get(key, "<absent>") != gpu.get(key, "<absent>")}
    allowed_prefixes = (
        "trainer.device",
        "ray_kwargs.",
        "data.filter_overlong_prompts_workers",
        "transfer_queue.backend.SimpleStorage.",
        "actor_rollout_ref.model.use_remove_padding",
        "actor_rollout_ref.model.override_config.",
        "actor_rollout_ref.actor.strategy",
        "actor_rollout_ref.actor.use_torch_compile",
        "actor_rollout_ref.actor.fsdp_config.",
        "actor_rollout_ref.ref.",
        "actor_rollout_ref.rollout.name",
        "actor_rollout_ref.rollout.custom.cpu",
        "actor_rollout_ref.rollout.data_parallel_size",
        "actor_rollout_ref.rollout.pipeline_model_parallel_size",
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        "actor_rollout_ref.rollout.enforce_eager",
        "actor_rollout_ref.rollout.load_format",
    )
    assert differing and all(key.startswith(allowed_prefixes) for key in differing), sorted(
        key for key in differing if not key.startswith(allowed_prefixes)
    )


@pytest.mark.parametrize("backend", tiny_run.BACKENDS)
def test_val_only_run_composes_on_every_backend(backend, tiny_model_path, tmp_path):
    """The evaluation run (tests/test_eval_val_only_on_cpu.py on CPU) on each backend, medvr_vllm on the
    GPU: veRL's val_only over the val files, the dump dir set, no reference model; otherwise the same run."""
    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    config = _compose(tiny_run.val_only_command(tiny_model_path, files, tmp_path, backend=backend)[5:])
    train = _compose(tiny_run.command(tiny_model_path, files[0], tmp_path, backend=backend)[5:])
    assert config.trainer.val_only and config.trainer.val_before_train
    assert config.trainer.validation_data_dir == str(tmp_path / "validation")
    assert list(config.data.val_files) == [str(f) for f in files] and list(config.data.train_files) == [str(files[0])]
    assert not need_reference_policy(config)
    assert config.actor_rollout_ref.rollout.name == train.actor_rollout_ref.rollout.name
    assert config.actor_rollout_ref.rollout.name == {"cpu": "medvr_cpu"}.get(backend, "medvr_vllm")
    val = config.actor_rollout_ref.rollout.val_kwargs
    assert val.n == 1 and not val.do_sample  # the recipe's greedy validation
