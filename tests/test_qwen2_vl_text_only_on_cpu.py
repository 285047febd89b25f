"""veRL 0.9.1's Qwen2.5-VL forward on a text-only batch (no image) with transformers 5 (issue 21).

veRL's ``_get_input_embeds`` (``verl/models/transformers/qwen2_vl.py``) runs the vision tower on a
dummy patch grid for text-only rows and called ``.mean()`` on transformers 5's output object:
``'BaseModelOutputWithPooling' object has no attribute 'mean'``. :mod:`medvr_verl.qwen2_vl_fix`
wraps it on plugin load; the end-to-end check is the text-only ``main_ppo`` run
(tests/test_gsm8k_main_ppo_on_cpu.py).
"""

from __future__ import annotations

import pytest
import torch
import verl  # noqa: F401  (loads the plugin, which applies the fix)

pytestmark = pytest.mark.vl_stack


@pytest.fixture(scope="module")
def model(tiny_model_path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)


def test_text_only_batch_embeds_and_reaches_every_vision_parameter(model):
    from verl.models.transformers import qwen2_vl

    assert getattr(qwen2_vl._get_input_embeds, "_medvr_text_only_fix", False)
    input_ids = torch.tensor([[11, 12, 13, 14]])
    embeds, mask = qwen2_vl._get_input_embeds(model.model, input_ids, torch.ones_like(input_ids))
    assert torch.equal(embeds, model.model.get_input_embeddings()(input_ids))  # 0.0 * the dummy pass
    assert mask.shape == input_ids.shape
    embeds.sum().backward()
    # the point of the dummy pass: FSDP sees every vision parameter used on a text-only rank too
    assert all(p.grad is not None for p in model.model.visual.parameters() if p.requires_grad)


def test_the_unfixed_function_fails_on_this_transformers(model):
    """Why the fix exists: veRL's own function, unwrapped, fails on the installed transformers."""
    from verl.models.transformers import qwen2_vl

    original = qwen2_vl._get_input_embeds.__wrapped__
    input_ids = torch.tensor([[11, 12, 13, 14]])
    with pytest.raises(AttributeError, match="mean"):
        original(model.model, input_ids, torch.ones_like(input_ids))
