"""MedVR's settings checked in the driver, before Ray or any model starts (a Hydra callback).

The MedVR recipes declare it::

    hydra:
      callbacks:
        medvr_settings:
          _target_: medvr_verl.config_check.CheckMedVRSettings

Hydra calls ``on_job_start`` with the composed config before ``main_ppo``'s task function runs, so a
typo such as ``reward.reward_kwargs.tool_reward=consensuss`` or a setting that cannot work on V1 fails
in seconds with the setting to change, not after the actor and reference models are loaded on the
cluster. Add the same ``hydra.callbacks`` entry to your own recipe to get it there. The V1 manager runs
:func:`check_settings` again when it is built (for runs that skip the callback).

The checks come in parts, each its own function (:func:`check_light_settings` runs without veRL):

* :func:`check_option_values`: every EVR and ``medvr_cca`` option typed and range-checked, unknown
  keys refused (:mod:`medvr_verl.settings`), ``rollout.custom.viz`` and the pixel budget;
* :func:`check_evr_group_size`: EVR with fewer than 2 samples per prompt (nothing to fork) refused;
* :func:`check_trainer`: MedVR's V1 manager under ``trainer.use_v1=false`` refused;
* :func:`check_v1_modes`: EVR under an async V1 trainer mode, ``tool_reward: consensus`` without
  streaming reward workers;
* :func:`check_gpus` (the callback only, in the driver): more GPUs asked for than this machine shows,
  or GPUs on a machine without one and no ``+backend=cpu``.

``python -m medvr_verl.config_check --config-path=... --config-name=medvr [overrides]`` composes the
config as ``main_ppo`` would and runs the light checks without importing veRL (a typo is reported in
about a second; ``main_ppo`` itself imports veRL, torch and Ray before Hydra reads its arguments).
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback

from medvr_verl.settings import CCARewardSettings, EVRSettings

ASYNC_TRAINER_MODES = frozenset({"colocate_async", "separate_async"})
VIZ_KEYS = frozenset({"dir", "interval", "max_groups"})


class MedVRSettingsError(ValueError):
    """A MedVR setting that is invalid or cannot work with the rest of the config."""


def streaming_reward_workers(config) -> bool:
    """Whether veRL scores rows while rolling out (reward workers the agent loops can call).

    ``RewardLoopManager.reward_loop_worker_handles`` (veRL 0.9.1): only without a reward model or with
    its own resource pool; a colocated reward model scores after sampling instead.
    """
    reward_model = config.reward.get("reward_model", None) or {}
    return not reward_model.get("enable", False) or bool(reward_model.get("enable_resource_pool", False))


def check_settings(config, *, reward_workers: bool | None = None) -> None:
    """Raise :class:`MedVRSettingsError` for MedVR settings that are invalid or cannot run together.

    ``reward_workers``: whether streaming reward workers exist (default: derived from the config).
    :func:`check_light_settings`, then :func:`check_v1_modes`.
    """
    evr = check_light_settings(config)
    check_v1_modes(config, evr, reward_workers=reward_workers)


def check_light_settings(config) -> EVRSettings:
    """Every check that needs neither veRL nor a model: option values and EVR's group size."""
    check_trainer(config)
    evr, _ = check_option_values(config)
    check_evr_group_size(config, evr)
    return evr


def check_trainer(config) -> None:
    """MedVR's rollout managers run on veRL's V1 trainer only: ``trainer.use_v1=false`` (veRL's
    deprecated ``RayPPOTrainer``) with a ``medvr_verl`` manager is refused. ``medvr_cca`` alone in a
    stock legacy recipe is left alone (its members meet in the group broker)."""
    if config.trainer.get("use_v1", True):
        return
    agent = config.actor_rollout_ref.rollout.get("agent", None) or {}
    manager = str(agent.get("agent_loop_manager_class", None) or "")
    if manager.startswith("medvr_verl."):
        raise MedVRSettingsError(
            f"{manager} runs on veRL's V1 trainer only: remove trainer.use_v1=false (veRL's default is true). "
            "The managers for the deprecated RayPPOTrainer were removed; to evaluate, run "
            "trainer.val_only=true on V1 (README, 'Evaluate and look')"
        )


# ------------------------------------------------------------------------------------------------
# option values (issue 19 item 4)
# ------------------------------------------------------------------------------------------------


def check_option_values(config) -> tuple[EVRSettings, CCARewardSettings | None]:
    """``rollout.custom.evr`` and ``reward.reward_kwargs`` (under ``medvr_cca``) typed, ranged, no unknown
    keys; ``rollout.custom.viz``; the pixel budget ``data.mm_processor_kwargs`` (both bounds or neither)."""
    rollout = config.actor_rollout_ref.rollout
    try:
        evr = EVRSettings.from_config(config)
        cca = CCARewardSettings.from_config(config) if _reward_manager(config) == "medvr_cca" else None
    except (TypeError, ValueError) as e:
        raise MedVRSettingsError(str(e)) from e
    viz = dict((rollout.get("custom", None) or {}).get("viz", None) or {})
    unknown = set(viz) - VIZ_KEYS
    if unknown:
        raise MedVRSettingsError(f"unknown rollout.custom.viz options {sorted(unknown)}; known: {sorted(VIZ_KEYS)}")
    for key in ("interval", "max_groups"):
        value = viz.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise MedVRSettingsError(f"rollout.custom.viz.{key} must be an integer >= 1, got {value!r}")

    mm_kwargs = dict((config.get("data", None) or {}).get("mm_processor_kwargs", None) or {})
    if ("min_pixels" in mm_kwargs) != ("max_pixels" in mm_kwargs):
        raise MedVRSettingsError(
            "data.mm_processor_kwargs needs both min_pixels and max_pixels: Qwen2.5-VL's image processor "
            f"(transformers 5) silently ignores one given alone, got {sorted(mm_kwargs)}"
        )
    return evr, cca


# ------------------------------------------------------------------------------------------------
# EVR's group size (issue 20 item 3)
# ------------------------------------------------------------------------------------------------


def check_evr_group_size(config, evr: EVRSettings) -> None:
    """EVR forks inside a group of ``rollout.n`` samples: with ``n < 2`` there is nothing to fork."""
    if not evr.enable:
        return
    n = config.actor_rollout_ref.rollout.get("n", 1)
    if isinstance(n, int) and not isinstance(n, bool) and n < 2:
        raise MedVRSettingsError(
            f"EVR (actor_rollout_ref.rollout.custom.evr.enable=true) forks within a prompt's group of "
            f"actor_rollout_ref.rollout.n samples, and n={n} leaves nothing to fork: set "
            "actor_rollout_ref.rollout.n=2 or more (the paper: 16), "
            "or actor_rollout_ref.rollout.custom.evr.enable=false"
        )


def describe_evr_budget(config, evr: EVRSettings) -> str | None:
    """One line: how a training prompt's ``n`` samples split into bases and fork slots (None: EVR off)."""
    if not evr.enable:
        return None
    n = int(config.actor_rollout_ref.rollout.get("n", 1))
    bases = (n + 1) // 2
    left = {
        "fresh": "fork slots no uncertain zoom call takes become fresh samples",
        "top_dh": "fork slots no uncertain zoom call takes fork at the highest-dH calls",
    }[evr.fallback]
    return (
        f"EVR: rollout.n={n} per prompt -> {bases} base samples + {n - bases} fork slots "
        f"({evr.mode}, fallback {evr.fallback}: {left})"
    )


# ------------------------------------------------------------------------------------------------
# V1 trainer modes (imports veRL's registry only when an async mode asks for it)
# ------------------------------------------------------------------------------------------------


def check_v1_modes(config, evr: EVRSettings, *, reward_workers: bool | None = None) -> None:
    """On V1: EVR under an async trainer mode (veRL's async LLM client drops per-token entropy) and
    ``tool_reward: consensus`` without streaming reward workers."""
    if not config.trainer.get("use_v1", True):
        return
    rollout = config.actor_rollout_ref.rollout
    mode = (config.trainer.get("v1", None) or {}).get("trainer_mode", "sync")
    if mode in ASYNC_TRAINER_MODES and evr.enable:
        import verl  # noqa: F401  (registers the plugin: is_medvr_agent reads veRL's agent-loop registry)

        from medvr_verl.agent_loop import is_medvr_agent

        default_agent = (rollout.get("agent", None) or {}).get("default_agent_loop", None)
        if is_medvr_agent(default_agent):
            raise MedVRSettingsError(
                f"EVR needs per-token entropy, which veRL's {mode} LLM client drops: set "
                "actor_rollout_ref.rollout.custom.evr.enable=false, or trainer.v1.trainer_mode=sync"
            )
    if reward_workers is None:
        reward_workers = streaming_reward_workers(config)
    tool_reward = (config.reward.get("reward_kwargs", None) or {}).get("tool_reward", "consensus")
    if _reward_manager(config) == "medvr_cca" and tool_reward == "consensus" and not reward_workers:
        raise MedVRSettingsError(
            "reward.reward_kwargs.tool_reward=consensus needs veRL's streaming reward workers, but this "
            "run scores rewards after sampling (colocated reward model): set "
            "reward.reward_model.enable_resource_pool=true or choose another tool_reward"
        )


# ------------------------------------------------------------------------------------------------
# GPUs the run asks for against what this machine shows (issue 19 item 3); driver only
# ------------------------------------------------------------------------------------------------

GPU_SIZES = (1, 2, 4, 8)
"""The ``hardware=gpu<k>`` options of ``recipes/medvr/hardware/``."""


def visible_gpu_count() -> int:
    """GPUs this process may use: torch's count when torch is loaded (``main_ppo`` loads it), else the
    NVIDIA driver's devices (``/proc/driver/nvidia/gpus``) limited by ``CUDA_VISIBLE_DEVICES``."""
    import os

    if "torch" in sys.modules:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip()]
        count = 0 if not ids or ids[0].strip() == "-1" else min(count, len(ids))
    return count


def ray_cluster_address(config) -> str | None:
    """The Ray cluster the run joins, if any (``ray_kwargs.ray_init.address``, ``RAY_ADDRESS``, or a
    cluster ``ray start`` left on this node): its GPUs are Ray's to count, not this machine's."""
    import os

    ray_init = (config.get("ray_kwargs", None) or {}).get("ray_init", None) or {}
    address = ray_init.get("address", None) or os.environ.get("RAY_ADDRESS")
    if address:
        return str(address)
    return "auto" if os.path.exists("/tmp/ray/ray_current_cluster") else None


def check_gpus(config, *, visible: int | None = None) -> None:
    """Refuse, in one line and before Ray or any model or dataset loads, a run that asks for more
    GPUs than this machine shows, or for GPUs on a machine without one (no ``+backend=cpu``).

    ``trainer.device=cpu`` (the CPU overlay) and runs joining a Ray cluster are not counted here.
    ``visible``: the GPU count to check against (default :func:`visible_gpu_count`).
    """
    trainer = config.trainer
    if str(trainer.get("device", "cuda")) == "cpu" or ray_cluster_address(config):
        return
    nnodes, per_node = int(trainer.get("nnodes", 1)), int(trainer.get("n_gpus_per_node", 1))
    if visible is None:
        visible = visible_gpu_count()
    if visible == 0:
        raise MedVRSettingsError(
            "no GPU is visible here and the run asks for "
            f"{nnodes * per_node} (trainer.device=cuda): on a CPU machine add +backend=cpu and run with "
            "VERL_PLATFORM=cpu (README, 'On a CPU')"
        )
    wanted = nnodes * per_node
    if wanted <= visible:
        return
    fit = max(k for k in GPU_SIZES if k <= visible)
    if nnodes > 1:
        raise MedVRSettingsError(
            f"trainer.nnodes={nnodes} x trainer.n_gpus_per_node={per_node} = {wanted} GPUs, but no Ray "
            f"cluster is running and this machine shows {visible}: start the cluster first (ray start "
            f"--head, then ray start --address=<head>:6379 on the other nodes), or size the run for this "
            f"machine with hardware=gpu{fit}"
        )
    raise MedVRSettingsError(
        f"trainer.n_gpus_per_node={per_node} but this machine shows {visible} GPU(s): add hardware=gpu{fit} "
        f"(recipes/medvr/hardware/), or set trainer.n_gpus_per_node={visible}"
    )


def _reward_manager(config) -> Any:
    manager = config.reward.get("reward_manager", None) or {}
    return manager.get("name", None)


class CheckMedVRSettings(Callback):
    """Hydra callback: :func:`check_settings` on the composed config before the job runs.

    The light checks run first (no veRL import of their own). Hydra turns an exception raised in a
    callback into a warning and runs the job anyway, so a bad setting ends the process here with
    ``SystemExit`` (exit status 1, the message on stderr). The EVR budget line goes to stderr.
    """

    def on_job_start(self, config, **kwargs: Any) -> None:
        try:
            evr = check_light_settings(config)
            check_v1_modes(config, evr)
            check_gpus(config)
        except MedVRSettingsError as e:
            raise SystemExit(f"medvr-verl: {e}") from e
        from medvr_verl.data_check import check_data_or_exit

        check_data_or_exit(config)  # the train/val files (medvr_verl.data_check), after the GPU check
        line = describe_evr_budget(config, evr)
        if line:
            print(f"medvr-verl: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# python -m medvr_verl.config_check: the light checks without veRL's imports
# ------------------------------------------------------------------------------------------------


def compose_for_check(config_path: str, config_name: str, overrides: list[str]):
    """The config as ``main_ppo`` composes it, without importing veRL.

    ``pkg://`` config paths become directories through ``importlib.util.find_spec`` (which imports a
    package's parents, never ``verl``'s ``__init__``, which loads torch); the recipes' search path
    ``pkg://verl.trainer.config`` is replaced by the same folder as a ``file://`` path.
    """
    import importlib.util
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from medvr_verl.config_path import resolve_config_dir

    config_dir = resolve_config_dir(config_path)
    verl_spec = importlib.util.find_spec("verl")
    if verl_spec is None or not verl_spec.submodule_search_locations:
        raise MedVRSettingsError("veRL is not installed (pip install verl==0.9.1)")
    verl_config = os.path.join(list(verl_spec.submodule_search_locations)[0], "trainer", "config")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name=config_name, overrides=[*overrides, f"hydra.searchpath=[file://{verl_config}]"])


def main(argv: list[str] | None = None) -> int:
    """``python -m medvr_verl.config_check --config-path=P --config-name=N [overrides]``: exit 0 and the
    EVR budget line when the settings hold, else exit 1 with the setting to change."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_path, config_name, overrides = "pkg://medvr_verl.recipes.medvr", "medvr", []
    i = 0
    while i < len(args):
        arg = args[i]
        for flag, short in (("--config-path", "-cp"), ("--config-name", "-cn")):
            if arg in (flag, short) and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            elif arg.startswith((flag + "=", short + "=")):
                value = arg.split("=", 1)[1]
            else:
                continue
            if flag == "--config-path":
                config_path = value
            else:
                config_name = value
            break
        else:
            overrides.append(arg)
        i += 1
    try:
        config = compose_for_check(config_path, config_name, overrides)
        evr = check_light_settings(config)
    except MedVRSettingsError as e:
        print(f"medvr-verl: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # Hydra's own errors: unknown override key, missing config, bad syntax
        print(f"medvr-verl: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    line = describe_evr_budget(config, evr)
    print(f"medvr-verl: settings OK ({config_name}){': ' + line if line else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
