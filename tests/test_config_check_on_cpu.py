"""MedVR's settings checked fully and fast (issue 19 item 4, issue 20 item 3): every EVR and medvr_cca
option typed and range-checked, unknown keys refused, EVR without a group to fork refused, the check
composed as main_ppo composes it without importing veRL, and the config path forms."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from importlib import resources

import pytest

from medvr_verl.config_check import MedVRSettingsError, check_light_settings, compose_for_check, main
from medvr_verl.config_path import PACKAGE_HINT, resolve_config_dir
from medvr_verl.settings import CCARewardSettings, EVRSettings

PKG = "--config-path=pkg://medvr_verl.recipes.medvr"
DATA = ["data.train_files=/data/train.parquet", "data.val_files=/data/test.parquet"]
EVR = "actor_rollout_ref.rollout.custom.evr"


def _check(capsys, *overrides, config_path=PKG):
    code = main([config_path, "--config-name=medvr", *DATA, *overrides])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    "override, message",
    [
        # issue 19 item 4's list
        (f"{EVR}.threshold=nan", "rollout.custom.evr.threshold must be a finite number"),
        (f"{EVR}.threshold=-0.1", "rollout.custom.evr.threshold must be >= 0"),
        (f"{EVR}.top_k=2.5", "rollout.custom.evr.top_k must be an integer"),
        (f"{EVR}.base_tokens=1.5", "rollout.custom.evr.base_tokens must be an integer"),
        (f"{EVR}.seed=x", "rollout.custom.evr.seed must be an integer or null"),
        (f"{EVR}.enable='false'", "rollout.custom.evr.enable must be true or false, got 'false'"),
        ("reward.reward_kwargs.w_tool=-1", "reward.reward_kwargs.w_tool must be >= 0"),
        # unknown reward_kwargs keys: refused, with the closest option
        ("+reward.reward_kwargs.quorom=correct", "unknown reward.reward_kwargs (medvr_cca) options ['quorom']"),
        ("+reward.reward_kwargs.quorom=correct", "did you mean 'quorum'"),
        (f"+{EVR}.gama=0.3", "unknown rollout.custom.evr options ['gama']"),
        # the rest of the typed options
        (f"{EVR}.gamma=inf", "gamma must be a finite number"),
        (f"{EVR}.gamma=-1", "gamma must be >= 0"),
        (f"{EVR}.p_base=1.5", "p_base must be <= 1"),
        (f"{EVR}.p_base='0.2'", "p_base must be a finite number"),
        (f"{EVR}.tool_window=0", "tool_window must be >= 1"),
        (f"{EVR}.top_k=true", "top_k must be an integer"),
        (f"{EVR}.seed=-1", "seed must be >= 0"),
        (f"{EVR}.mask_fork_prefix=1", "mask_fork_prefix must be true or false"),
        (f"{EVR}.mode=eager", "mode must be one of"),
        (f"{EVR}.fallback=random", "fallback must be one of"),
        ("reward.reward_kwargs.eta=1.5", "eta must be <= 1"),
        ("reward.reward_kwargs.eta=nan", "eta must be a finite number"),
        ("reward.reward_kwargs.w_tool=nan", "w_tool must be a finite number"),
        ("reward.reward_kwargs.format_weight=-0.1", "format_weight must be >= 0"),
        ("reward.reward_kwargs.group_size=2.5", "group_size must be an integer or null"),
        ("reward.reward_kwargs.group_timeout_s=0", "group_timeout_s must be > 0"),
        ("reward.reward_kwargs.tool_reward=consensuss", "tool_reward must be one of"),
        ("reward.reward_kwargs.quorum=paper", "quorum must be one of"),
        ("reward.reward_kwargs.tool_name=''", "tool_name must be a non-empty string"),
        ("actor_rollout_ref.rollout.custom.viz.interval=0", "viz.interval must be an integer >= 1"),
        # issue 20 item 3: EVR with nothing to fork
        ("actor_rollout_ref.rollout.n=1", "actor_rollout_ref.rollout.n=2 or more"),
        # issue 19 item 5: one rollout path, veRL's V1 trainer
        ("trainer.use_v1=false", "runs on veRL's V1 trainer only: remove trainer.use_v1=false"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_to_change(capsys, override, message):
    code, text = _check(capsys, override)
    assert code == 1 and message in text, text


def test_the_recipe_passes_and_states_its_evr_budget(capsys):
    code, text = _check(capsys)
    assert code == 0 and "8 base samples + 8 fork slots" in text and "fallback fresh" in text
    # n = 3: ceil(3/2) bases, 1 fork slot, said in the check's output
    code, text = _check(capsys, "actor_rollout_ref.rollout.n=3")
    assert code == 0 and "rollout.n=3 per prompt -> 2 base samples + 1 fork slots" in text
    # EVR off: n = 1 is fine, and no EVR line
    code, text = _check(capsys, "actor_rollout_ref.rollout.n=1", f"{EVR}.enable=false")
    assert code == 0 and "EVR" not in text
    # every ablation (text_rl turns EVR off; the others keep it), and the CPU overlay
    for extra in ("ablation=text_rl", "ablation=our_variants", "+backend=cpu"):
        code, text = _check(capsys, extra)
        assert code == 0, text


def test_other_managers_keep_their_own_reward_kwargs(capsys):
    # medvr_cca refuses keys it does not know; under another reward manager they are that manager's
    code, text = _check(capsys, "reward.reward_manager.name=naive", "+reward.reward_kwargs.anything=1")
    assert code == 0, text


def test_the_check_imports_neither_verl_nor_torch(tmp_path):
    """python -m medvr_verl.config_check composes the recipe against veRL's config folder without
    running veRL's __init__ (torch, Ray), so a typo comes back in about a second."""
    code = (
        "import sys\n"
        "from medvr_verl.config_check import main\n"
        f"rc = main([{PKG!r}, '--config-name=medvr', *{DATA!r}, '{EVR}.top_k=2.5'])\n"
        "print('RESULT', rc, 'verl' in sys.modules, 'torch' in sys.modules, 'ray' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RESULT 1 False False False" in result.stdout, result.stdout + result.stderr
    assert "top_k must be an integer" in result.stderr


def test_composed_config_is_main_ppos():
    """The light composition gives the config Hydra gives main_ppo (veRL's ppo_trainer underneath)."""
    config = compose_for_check("pkg://medvr_verl.recipes.medvr", "medvr", DATA)
    assert config.algorithm.adv_estimator == "grpo" and config.actor_rollout_ref.rollout.n == 16
    assert config.trainer.v1.trainer_mode == "sync" and "critic" in config  # from veRL's ppo_trainer
    assert check_light_settings(config) == EVRSettings.from_config(config)


def test_config_path_forms(tmp_path, monkeypatch):
    shutil.copytree(resources.files("medvr_verl.recipes.medvr"), tmp_path / "recipes" / "medvr")
    monkeypatch.chdir(tmp_path)
    expected = str(tmp_path / "recipes" / "medvr")
    for form in ("recipes/medvr", "./recipes/medvr", "./recipes/medvr/", expected, f"file://{expected}"):
        assert resolve_config_dir(form) == expected
    assert resolve_config_dir("pkg://medvr_verl.recipes.medvr").endswith("recipes/medvr")
    for missing in ("./recipes/nope", "pkg://medvr_verl.recipes.nope"):
        with pytest.raises(FileNotFoundError, match="pkg://medvr_verl.recipes.medvr"):
            resolve_config_dir(missing)
    assert "pkg://medvr_verl.recipes.medvr" in PACKAGE_HINT


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"enable": "false"}, "enable must be true or false"),
        ({"enable": 0}, "enable must be true or false"),
        ({"threshold": math.nan}, "threshold must be a finite number"),
        ({"top_k": 2.0}, "top_k must be an integer"),
        ({"seed": "3"}, "seed must be an integer or null"),
    ],
)
def test_evr_settings_types(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EVRSettings(**kwargs)


def test_settings_defaults_are_the_papers_and_valid():
    evr, cca = EVRSettings(), CCARewardSettings()
    assert (evr.fallback, cca.quorum) == ("fresh", "correct")
    assert EVRSettings(seed=None).seed is None and EVRSettings(seed=3).seed == 3
    assert CCARewardSettings(w_tool=0, eta=1).w_tool == 0  # ints where numbers are asked for are fine
    with pytest.raises(MedVRSettingsError.__mro__[1], match="w_tool"):  # ValueError
        CCARewardSettings(w_tool=True)


# ---- issue 19 item 3: the GPUs a run asks for against what the machine shows ----------------------


@pytest.fixture
def no_ray_cluster(monkeypatch):
    import medvr_verl.config_check as config_check

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # a `ray start` left on this machine must not hide the count
    monkeypatch.setattr(config_check, "ray_cluster_address", lambda config: None)


def _compose(*overrides):
    return compose_for_check("pkg://medvr_verl.recipes.medvr", "medvr", [*DATA, *overrides])


@pytest.mark.parametrize(
    "overrides, visible, message",
    [
        (
            ["hardware=gpu1"],
            0,
            "no GPU is visible here and the run asks for 1 (trainer.device=cuda): on a CPU machine add +backend=cpu",
        ),
        (["hardware=gpu8"], 2, "trainer.n_gpus_per_node=8 but this machine shows 2 GPU(s): add hardware=gpu2"),
        (["hardware=gpu4"], 3, "add hardware=gpu2"),
        ([], 8, "no Ray cluster is running and this machine shows 8: start the cluster first"),
        ([], 8, "hardware=gpu8"),
    ],
)
def test_too_many_gpus_are_refused_in_one_line(no_ray_cluster, overrides, visible, message):
    from medvr_verl.config_check import check_gpus

    with pytest.raises(MedVRSettingsError, match="^[^\n]*$") as refused:
        check_gpus(_compose(*overrides), visible=visible)
    assert message in str(refused.value)


def test_runs_that_fit_pass(no_ray_cluster, monkeypatch):
    from medvr_verl.config_check import check_gpus

    check_gpus(_compose("hardware=gpu1"), visible=1)
    check_gpus(_compose("hardware=gpu2"), visible=8)
    check_gpus(_compose("+backend=cpu"), visible=0)  # the CPU overlay asks for no GPU
    monkeypatch.undo()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a cluster counts its own GPUs
    check_gpus(_compose(), visible=1)


@pytest.mark.skipif(
    __import__("medvr_verl.config_check", fromlist=["x"]).visible_gpu_count() > 0, reason="a GPU is visible"
)
def test_main_ppo_without_gpu_and_without_backend_cpu_stops_before_ray(tmp_path):
    """The README's train command on a machine without GPUs ends in one line, before Ray starts (it
    used to start Ray and hang)."""
    command = [sys.executable, "-m", "verl.trainer.main_ppo", PKG, "--config-name=medvr", "hardware=gpu1", *DATA]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "no GPU is visible here" in result.stderr and "+backend=cpu" in result.stderr
    assert "ray init kwargs" not in result.stdout and "Started a local Ray instance" not in result.stderr
