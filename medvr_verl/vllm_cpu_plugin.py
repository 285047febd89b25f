"""vLLM general plugin: keep linear weights reloadable on vLLM's CPU platform (veRL's weight sync).

Registered as ``vllm.general_plugins: medvr_cpu_weight_sync`` (pyproject), so vLLM loads it in every
process it starts, its model workers included, before the model is built.

Why: on its CPU platform vLLM 0.24.0 packs each linear layer's weight for oneDNN after loading and
then REPLACES the weight by an empty tensor (``UnquantizedLinearMethod.process_weights_after_loading``
-> ``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``).
veRL's weight sync (``vLLMColocateWorkerExtension.update_weights_from_ipc``) calls
``model.load_weights`` and then ``process_weights_after_loading`` again; the first step fails on the
emptied weight ("Attempted to load weight (torch.Size([192, 64])) into parameter (torch.Size([0]))").
With this plugin the CPU platform keeps the weight (``remove_weight=False``, as vLLM already does for
embeddings): the sync loads into it and vLLM's second ``process_weights_after_loading`` packs it
anew. Cost: one extra copy of the linear weights in host memory. Nothing changes on other platforms.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_PATCHED = "_medvr_keeps_weight"


def register() -> None:
    """Entry point of ``vllm.general_plugins``: patch vLLM's CPU GEMM dispatch (CPU platform only)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.layers import utils

    dispatch = utils.dispatch_cpu_unquantized_gemm
    if getattr(dispatch, _PATCHED, False):
        return

    def dispatch_keeping_weight(layer, remove_weight: bool) -> None:
        dispatch(layer, remove_weight=False)

    setattr(dispatch_keeping_weight, _PATCHED, True)
    dispatch_keeping_weight.__wrapped__ = dispatch  # vLLM's own, for tests and for undoing the patch
    # linear.py imports the function from this module at call time, so the module attribute is the seam
    utils.dispatch_cpu_unquantized_gemm = dispatch_keeping_weight
    logger.info("medvr_verl: vLLM CPU linear weights kept after packing, so veRL's weight sync can reload them")
