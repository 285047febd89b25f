"""medvr-verl: MedVR (EVR + CCA) for veRL 0.9.1.

``import verl`` loads :mod:`medvr_verl.plugin` through the ``verl.plugins`` entry point, which calls
:func:`register`. The pure modules (:mod:`medvr_verl.boxes`, :mod:`medvr_verl.consensus`,
:mod:`medvr_verl.entropy`, :mod:`medvr_verl.scoring`) import neither veRL nor torch.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.2.0"

# Glue modules whose import registers a piece with one of veRL's registries.
_GLUE_MODULES = (
    "medvr_verl.resolvers",  # OmegaConf resolver ${medvr.pkg_file:...} used by the recipes
    "medvr_verl.reward_manager",  # reward manager "medvr_cca"
    "medvr_verl.agent_loop",  # agent loop "medvr_agent"
    "medvr_verl.vllm_server",  # rollout server "medvr_vllm" (vLLM imported lazily)
)

_registered = False


def register() -> None:
    """Import the glue modules so veRL's registries see the plugin's pieces. Idempotent."""
    global _registered
    if _registered:
        return
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":  # CPU backend, only when asked for
        importlib.import_module("medvr_verl.cpu").activate()
    for name in _GLUE_MODULES:
        importlib.import_module(name)
    # veRL's Qwen2-VL forward on text-only rows under transformers 5 (every backend)
    importlib.import_module("medvr_verl.qwen2_vl_fix").fix_text_only_input_embeds()
    # Hydra search-path plugin: --config-path=recipes/medvr from a checkout's root (before @hydra.main)
    importlib.import_module("medvr_verl.config_path").register()
    _registered = True
