"""MedVR's settings, typed and range-checked. Light: imports neither veRL nor torch.

Two groups of options, each a frozen dataclass built from the composed config:

* :class:`EVRSettings`: ``actor_rollout_ref.rollout.custom.evr`` (the rollout workers read it);
* :class:`CCARewardSettings`: ``reward.reward_kwargs`` of the ``medvr_cca`` reward manager.

Every value is checked for its type and range (a boolean must be ``true``/``false``, not the string
``"false"``, which Python reads as true; an integer option refuses ``2.5``; a number refuses nan and
infinities) and an unknown key is refused with the closest known one, so a typo never runs on the
default. :mod:`medvr_verl.config_check` builds both in the driver before veRL's heavy imports, the
workers build them again from the same config.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from medvr_verl.composite import TOOL_REWARD_VARIANTS
from medvr_verl.consensus import DEFAULT_QUORUM, QUORUM_RULES
from medvr_verl.entropy import FALLBACKS
from medvr_verl.scoring import FORMAT_MODES
from medvr_verl.tool_calls import DEFAULT_TOOL_NAME

EVR_MODES = ("streaming", "two_phase")
SCORERS = ("auto", "medvr", "host")
"""``reward_kwargs.scorer`` of ``medvr_cca``: ``auto`` (MedVR's scorer for MedVR's data sources, the
host recipe's for the rest), ``medvr`` (every row), ``host`` (every row the host recipe's)."""
VALIDATION_SPLITS = ("test", "val", "valid", "validation", "eval", "dev")
"""Default ``val_splits``: ``extra_info.split`` names whose groups expect ``val_kwargs.n`` members."""


# ------------------------------------------------------------------------------------------------
# value checks: each raises ValueError naming the full option
# ------------------------------------------------------------------------------------------------


def check_bool(name: str, value: Any) -> bool:
    """A real boolean (YAML/CLI ``true``/``false``); the string ``"false"`` is refused, not read as true."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """An integer (not a bool, not ``2.5`` or ``"3"``), at least ``minimum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        null = " or null" if allow_none else ""
        raise ValueError(f"{name} must be an integer{null}, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite real number (int or float, not a bool or a string) in ``[low, high]`` (``(low, high]``
    with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_known_keys(section: str, given: Mapping, known: set[str] | frozenset[str]) -> None:
    """Refuse keys of ``section`` that no option has, naming the closest known option."""
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        if close:
            hints.append(f"{close[0]!r} for {key!r}")
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    raise ValueError(f"unknown {section} options {unknown}{hint}; known: {sorted(known)}")


def _section(config, *path: str) -> dict:
    node = config
    for key in path:
        node = (node.get(key, None) if node is not None else None) or {}
    return dict(node)


# ------------------------------------------------------------------------------------------------
# EVR
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EVRSettings:
    """``actor_rollout_ref.rollout.custom.evr``: the paper's EVR switches (defaults: the paper's where it
    states one, ours where it is silent; see README)."""

    enable: bool = True
    gamma: float = 0.5
    """Slope of the branch probability in ``dH`` (nats); 0 gives random branching at ``p_base``."""
    p_base: float = 0.2
    threshold: float = 0.1
    """``dH`` (nats) above which a zoom call qualifies as a fork point; >= 0."""
    base_tokens: int = 32
    """``H_base``: mean entropy of this many first response tokens."""
    tool_window: int = 4
    """``H_tool``: rolling window (tokens) over a zoom call's coordinate tokens."""
    top_k: int = 20
    """Logprobs per token the ``medvr_vllm`` server asks the engine for."""
    seed: int | None = None
    """EVR's draws are a pure function of ``(seed, training step, prompt, base, call)``
    (:func:`medvr_verl.entropy.keyed_rng`): nothing to checkpoint, a resumed run decides as an
    uninterrupted one. ``None``: veRL's ``actor_rollout_ref.rollout.seed``."""
    mode: str = "streaming"
    """V1 worker: ``streaming`` (each base zoom call decided when generated, a chosen fork starts at
    once while its base goes on; the paper's "fork the generation state") or ``two_phase`` (forks
    planned after all bases finished). The legacy managers always plan in two phases."""
    fallback: str = "fresh"
    """Fork slots no chosen call took: ``fresh`` (default: fresh independent samples, the paper's "low
    uncertainty -> continue a single trajectory") or ``top_dh`` (ours: forks at the chosen calls,
    else at the highest-``dH`` calls, so every group keeps half its budget as forks)."""
    mask_fork_prefix: bool = False
    """``response_mask`` 0 on the response prefix a fork shares with its base (the paper is silent;
    ours: off, each row trains its whole response as a fresh sample would)."""

    def __post_init__(self):
        name = "rollout.custom.evr."
        check_bool(name + "enable", self.enable)
        check_bool(name + "mask_fork_prefix", self.mask_fork_prefix)
        check_choice(name + "mode", self.mode, EVR_MODES)
        check_choice(name + "fallback", self.fallback, FALLBACKS)
        check_number(name + "gamma", self.gamma, low=0.0)
        check_number(name + "p_base", self.p_base, low=0.0, high=1.0)
        check_number(name + "threshold", self.threshold, low=0.0)
        for key in ("base_tokens", "tool_window", "top_k"):
            check_int(name + key, getattr(self, key), minimum=1)
        check_int(name + "seed", self.seed, minimum=0, allow_none=True)

    @classmethod
    def from_config(cls, config) -> EVRSettings:
        evr = _section(config, "actor_rollout_ref", "rollout", "custom", "evr")
        check_known_keys("rollout.custom.evr", evr, {f.name for f in fields(cls)})
        return cls(**evr)


# ------------------------------------------------------------------------------------------------
# CCA reward manager
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CCARewardSettings:
    """``reward.reward_kwargs`` of the ``medvr_cca`` manager, validated."""

    tool_reward: str = "consensus"
    eta: float = 0.5
    w_tool: float = 1.0
    format_weight: float = 0.1
    format_mode: str = "penalty"
    tool_name: str = DEFAULT_TOOL_NAME
    scorer: str = "auto"
    group_size: int | None = None
    group_timeout_s: float = 600.0
    quorum: str = DEFAULT_QUORUM
    val_splits: tuple[str, ...] = VALIDATION_SPLITS

    def __post_init__(self):
        name = "reward.reward_kwargs."
        check_choice(name + "tool_reward", self.tool_reward, TOOL_REWARD_VARIANTS)
        check_number(name + "eta", self.eta, low=0.0, high=1.0)
        check_number(name + "w_tool", self.w_tool, low=0.0)
        check_number(name + "format_weight", self.format_weight, low=0.0)
        check_choice(name + "format_mode", self.format_mode, FORMAT_MODES)
        if not isinstance(self.tool_name, str) or not self.tool_name:
            raise ValueError(f"{name}tool_name must be a non-empty string, got {self.tool_name!r}")
        check_int(name + "group_size", self.group_size, minimum=1, allow_none=True)
        check_number(name + "group_timeout_s", self.group_timeout_s, low=0.0, low_open=True)
        check_choice(name + "quorum", self.quorum, QUORUM_RULES)
        check_choice(name + "scorer", self.scorer, SCORERS)
        splits = self.val_splits
        if isinstance(splits, str) or not all(isinstance(v, str) for v in splits):
            raise ValueError(f"{name}val_splits must be a list of split names, got {splits!r}")
        object.__setattr__(self, "val_splits", tuple(v.lower() for v in splits))

    @classmethod
    def from_config(cls, config) -> CCARewardSettings:
        """Refuses unknown keys: under ``medvr_cca`` every ``reward_kwargs`` key is one of these options
        (a typo would silently keep the default)."""
        kwargs = _section(config, "reward", "reward_kwargs")
        check_known_keys("reward.reward_kwargs (medvr_cca)", kwargs, {f.name for f in fields(cls)})
        if kwargs.get("val_splits") is not None and not isinstance(kwargs["val_splits"], str):
            kwargs["val_splits"] = tuple(kwargs["val_splits"])  # a YAML list (ListConfig)
        return cls(**kwargs)
