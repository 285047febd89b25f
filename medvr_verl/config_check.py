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
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback

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
    Checks ``rollout.custom.evr`` and ``rollout.custom.viz`` (known keys, ranges), ``reward.reward_kwargs``
    of ``medvr_cca`` (variant, ranges), the pixel budget ``data.mm_processor_kwargs`` (both bounds or
    neither), and on V1: EVR under an async trainer mode (veRL's async LLM
    client drops per-token entropy) and ``tool_reward: consensus`` without streaming reward workers.
    """
    from medvr_verl.reward_manager import CCARewardSettings
    from medvr_verl.rollout import EVRSettings, is_medvr_agent

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
        if viz.get(key) is not None and not (isinstance(viz[key], int) and viz[key] >= 1):
            raise MedVRSettingsError(f"rollout.custom.viz.{key} must be an integer >= 1, got {viz[key]!r}")

    mm_kwargs = dict((config.get("data", None) or {}).get("mm_processor_kwargs", None) or {})
    if ("min_pixels" in mm_kwargs) != ("max_pixels" in mm_kwargs):
        raise MedVRSettingsError(
            "data.mm_processor_kwargs needs both min_pixels and max_pixels: Qwen2.5-VL's image processor "
            f"(transformers 5) silently ignores one given alone, got {sorted(mm_kwargs)}"
        )

    if not config.trainer.get("use_v1", True):
        return
    mode = (config.trainer.get("v1", None) or {}).get("trainer_mode", "sync")
    default_agent = (rollout.get("agent", None) or {}).get("default_agent_loop", None)
    if mode in ASYNC_TRAINER_MODES and evr.enable and is_medvr_agent(default_agent):
        raise MedVRSettingsError(
            f"EVR needs per-token entropy, which veRL's {mode} LLM client drops: set "
            "actor_rollout_ref.rollout.custom.evr.enable=false, or trainer.v1.trainer_mode=sync"
        )
    if reward_workers is None:
        reward_workers = streaming_reward_workers(config)
    if cca is not None and cca.tool_reward == "consensus" and not reward_workers:
        raise MedVRSettingsError(
            "reward.reward_kwargs.tool_reward=consensus needs veRL's streaming reward workers, but this "
            "run scores rewards after sampling (colocated reward model): set "
            "reward.reward_model.enable_resource_pool=true or choose another tool_reward"
        )


def _reward_manager(config) -> Any:
    manager = config.reward.get("reward_manager", None) or {}
    return manager.get("name", None)


class CheckMedVRSettings(Callback):
    """Hydra callback: :func:`check_settings` on the composed config before the job runs.

    Hydra turns an exception raised in a callback into a warning and runs the job anyway, so a bad
    setting ends the process here with ``SystemExit`` (exit status 1, the message on stderr).
    """

    def on_job_start(self, config, **kwargs: Any) -> None:
        import verl  # noqa: F401  (registers the plugin: is_medvr_agent reads veRL's agent-loop registry)

        try:
            check_settings(config)
        except MedVRSettingsError as e:
            raise SystemExit(f"medvr-verl: {e}") from e
        from medvr_verl.data_check import check_data_or_exit

        check_data_or_exit(config)  # the train/val files (medvr_verl.data_check)
