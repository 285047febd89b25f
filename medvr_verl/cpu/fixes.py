"""The narrow fixes veRL 0.9.1 needs to train on a CPU (each one listed in :mod:`medvr_verl.cpu`).

Applied by :func:`medvr_verl.cpu.activate` only, i.e. only in processes started with
``VERL_PLATFORM=cpu``. Each fix changes behaviour only when veRL's device is ``cpu``.
"""

from __future__ import annotations

import functools
import warnings


def _import_engines():
    """veRL's engine package, without its import-time warnings about optional engines (torchtitan,
    megatron, ...) that every CPU process would otherwise print."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)
        import verl.workers.engine  # noqa: F401
        import verl.workers.engine_workers  # noqa: F401


def fix_process_group_backend() -> None:
    """veRL builds the backend ``f"cpu:gloo,{device}:{backend}"``; on CPU that is ``cpu:gloo,cpu:gloo``,
    which torch refuses ("Duplicate device type cpu"). Call veRL's own function with its public
    ``backend=`` argument set to plain ``gloo`` instead.

    The training workers bind the function by name at import (``from verl.utils.distributed import
    initialize_global_process_group_ray``), so the wrapper goes into both modules.
    """
    _import_engines()
    import verl.utils.distributed as distributed
    import verl.workers.engine_workers as engine_workers

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_medvr_cpu", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray._medvr_cpu = True
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray
    engine_workers.initialize_global_process_group_ray = initialize_global_process_group_ray


def register_fsdp_engines_for_cpu() -> None:
    """veRL registers its FSDP engines for devices ``cuda`` and ``npu`` only; register the same classes
    for ``cpu`` through veRL's public ``EngineRegistry.register``."""
    _import_engines()
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl

    registered = EngineRegistry._engines.get("language_model", {}).get("fsdp2", {})
    if "cpu" in registered:
        return
    EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(
        transformer_impl.FSDPEngineWithLMHead
    )
    EngineRegistry.register(model_type="value_model", backend=["fsdp", "fsdp2"], device="cpu")(
        transformer_impl.FSDPEngineWithValueHead
    )


def unpin_reference_offload() -> None:
    """The FSDP2 engine gives forward-only models (the reference policy) ``CPUOffloadPolicy(pin_memory
    =True)``; pinning host memory needs an accelerator driver. Same policy, ``pin_memory=False``."""
    from verl.workers.engine.fsdp import transformer_impl

    policy = transformer_impl.CPUOffloadPolicy
    if getattr(policy, "_medvr_cpu", False):
        return

    class UnpinnedCPUOffloadPolicy(policy):
        _medvr_cpu = True

        def __init__(self, pin_memory: bool = False, **kwargs):
            super().__init__(pin_memory=False, **kwargs)

    UnpinnedCPUOffloadPolicy.__name__ = policy.__name__
    transformer_impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


ALL_FIXES = (fix_process_group_backend, register_fsdp_engines_for_cpu, unpin_reference_offload)
