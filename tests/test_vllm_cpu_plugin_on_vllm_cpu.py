"""``medvr_verl.vllm_cpu_plugin`` on REAL vLLM (CPU build): vLLM's CPU GEMM dispatch keeps the weight,
so veRL's weight sync (``load_weights`` then ``process_weights_after_loading``) changes the layer's
output. Without the plugin vLLM 0.24.0 empties the weight (asserted too, so the test notices the day
vLLM stops doing it). Runs in ``bash scripts/test.sh vllm-cpu``; fails without vLLM."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch


def test_the_plugin_is_registered_with_vllm():
    names = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert names.get("medvr_cpu_weight_sync") == "medvr_verl.vllm_cpu_plugin:register"


def test_linear_weights_survive_packing_and_a_reload_changes_the_output(monkeypatch):
    from vllm.model_executor.layers import utils
    from vllm.platforms import current_platform

    from medvr_verl import vllm_cpu_plugin

    assert current_platform.is_cpu()
    # start from vLLM's own dispatch (an engine started in this session may have loaded the plugin)
    original = getattr(utils.dispatch_cpu_unquantized_gemm, "__wrapped__", utils.dispatch_cpu_unquantized_gemm)
    monkeypatch.setattr(utils, "dispatch_cpu_unquantized_gemm", original)
    torch.manual_seed(0)
    x = torch.randn(3, 64)

    plain = torch.nn.Linear(64, 192, bias=False)
    utils.dispatch_cpu_unquantized_gemm(plain, remove_weight=True)
    assert plain.weight.numel() == 0  # vLLM's own behaviour: what broke veRL's weight sync

    vllm_cpu_plugin.register()
    layer = torch.nn.Linear(64, 192, bias=False)
    utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # as process_weights_after_loading calls it
    assert tuple(layer.weight.shape) == (192, 64)
    before = layer.cpu_linear(x, layer.weight, None)
    assert torch.allclose(before, torch.nn.functional.linear(x, layer.weight), atol=1e-5)
    with torch.no_grad():  # veRL's sync: load_weights copies into the parameter ...
        layer.weight.copy_(torch.randn(192, 64))
    utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # ... then packs again
    after = layer.cpu_linear(x, layer.weight, None)
    assert torch.allclose(after, torch.nn.functional.linear(x, layer.weight), atol=1e-4)
    assert not torch.allclose(before, after)
