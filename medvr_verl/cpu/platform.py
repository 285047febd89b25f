"""veRL platform ``cpu``: the host CPU as veRL's "accelerator".

veRL 0.9.1 resolves its device through :mod:`verl.plugin.platform` (``get_platform()``), which knows
nvidia/huawei/amd only and falls back to nvidia when none is found, so ``trainer.device=cpu`` alone
changes nothing. :class:`PlatformCPU` is registered with veRL's public ``PlatformRegistry`` under the
name ``cpu`` and selected with ``VERL_PLATFORM=cpu`` (veRL's own override variable): device ``cpu``,
process groups over gloo, Ray resource ``GPU`` (the CPU overlay config declares logical GPUs to Ray,
one per training process, because veRL's resource pools count ``GPU`` resources).

``device_module`` is :data:`CPU_DEVICE`: ``torch.cpu`` plus the handful of ``torch.cuda``-style
calls veRL makes on it (memory statistics read as 0, the RNG state is the CPU generator's, caches
have nothing to free).
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


class _CPUDeviceModule:
    """``torch.cpu`` with the ``torch.cuda`` calls veRL makes on its device module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # device bookkeeping: veRL moves tensors with .to(get_device_id()): the device is "cpu" (an
    # index 0 would mean cuda:0 to torch)
    def current_device(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        return 1

    def is_available(self) -> bool:
        return True

    def set_device(self, device: Any) -> None:
        return None

    def get_device_name(self, device: Any = None) -> str:
        return "cpu"

    # memory: nothing to report or free on the host allocator
    def empty_cache(self) -> None:
        return None

    def ipc_collect(self) -> None:
        return None

    def memory_allocated(self, device: Any = None) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        return None

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        return None

    # RNG: the CPU generator (veRL's checkpoints save and restore "the device RNG")
    def get_rng_state(self, device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


CPU_DEVICE = _CPUDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """The CPU as a veRL platform (see the module docstring)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return CPU_DEVICE  # type: ignore[return-value]

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # never auto-detected: only VERL_PLATFORM=cpu selects it, so a GPU run never lands here
        return False

    def current_device(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets it for actors holding logical GPUs; harmless on CPU, read by veRL's worker setup
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
