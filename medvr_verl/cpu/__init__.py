"""The CPU backend: veRL's trainer (``python -m verl.trainer.main_ppo``) end to end on a CPU.

Asked for with ``VERL_PLATFORM=cpu`` (veRL's own platform override variable; the CPU overlay config
``+backend=cpu`` also sets it for every Ray worker). :func:`medvr_verl.register` calls
:func:`activate` only then, so a GPU run never loads any of this. What it supplies:

* :mod:`medvr_verl.cpu.platform`: veRL platform ``cpu`` (veRL 0.9.1 knows nvidia/huawei/amd only).
* :mod:`medvr_verl.cpu.fixes`: the narrow fixes below.
* :mod:`medvr_verl.cpu.rollout` + :mod:`medvr_verl.cpu.server`: rollout ``medvr_cpu`` (veRL's
  rollout servers are vllm/sglang/trtllm only), fed by veRL's weight sync every step, with
  policies ``sampled`` and ``scripted`` (:mod:`medvr_verl.cpu.script`).
* ``recipes/medvr/backend/cpu.yaml``: the config overlay (``+backend=cpu``) and
  :mod:`medvr_verl.cpu.tiny_run`: the tiny-model run shared by the demo, the CPU test and the GPU
  smoke run.

The non-public veRL names this backend touches are in the package's one list,
:mod:`medvr_verl.verl_private` (checked against the installed veRL by
``tests/test_verl_private_on_cpu.py``). What each of them is for here (veRL 0.9.1 lines, under
site-packages/verl):

1. ``utils/distributed.py:83`` ``initialize_global_process_group_ray`` (line 89 builds the backend
   ``cpu:gloo,{device}:{backend}``, i.e. ``cpu:gloo,cpu:gloo`` on CPU, which torch refuses; also bound
   by name in ``workers/engine_workers.py:38`` and called there at line 89): both module attributes
   are replaced by a wrapper that passes the function's own ``backend="gloo"`` argument
   (:func:`fixes.fix_process_group_backend`).
2. ``workers/engine/fsdp/transformer_impl.py:43`` module global ``CPUOffloadPolicy``: line 462 gives
   the reference model ``CPUOffloadPolicy(pin_memory=True)``, and pinning host memory needs an
   accelerator driver; the name is rebound to the same policy with ``pin_memory=False``
   (:func:`fixes.unpin_reference_offload`).
3. ``workers/engine/base.py:348`` ``EngineRegistry._engines``: read only, to keep the CPU
   registration idempotent; the registration itself is the public ``EngineRegistry.register`` (veRL
   registers its FSDP engines for cuda/npu only, ``transformer_impl.py:1143,1594``)
   (:func:`fixes.register_fsdp_engines_for_cpu`).
4. ``workers/rollout/base.py:89`` ``_ROLLOUT_REGISTRY``: the training worker looks its rollout adapter
   up there by ``(name, "async")`` and there is no public registration; one entry is added for
   ``medvr_cpu`` (:func:`rollout.register_rollout`).
5. ``workers/rollout/replica.py`` ``RolloutReplica._server_handle`` / ``_server_address``: set by
   :meth:`rollout.CPURolloutReplica.launch_servers`, as veRL's own replicas do (veRL's
   ``LLMServerManager`` reads them): the subclass contract of ``launch_servers``.

Public seams used: ``PlatformRegistry.register`` / ``VERL_PLATFORM`` (``verl/plugin/platform``),
``EngineRegistry.register``, ``RolloutReplicaRegistry.register``, ``RolloutReplica`` /
``BaseRollout`` subclasses, the ``verl.plugins`` entry point, Hydra config overrides.
"""

from __future__ import annotations

_activated = False


def activate() -> None:
    """Register the CPU platform, apply the fixes and register rollout ``medvr_cpu``. Idempotent.

    Must run before veRL resolves its platform (``get_platform()``), i.e. at plugin load.
    """
    global _activated
    if _activated:
        return
    from medvr_verl.cpu import platform  # noqa: F401  (registers platform "cpu")
    from medvr_verl.cpu.fixes import ALL_FIXES
    from medvr_verl.cpu.rollout import register_rollout

    for fix in ALL_FIXES:
        fix()
    register_rollout()
    _activated = True
