"""veRL 0.9.1's Qwen2-VL / Qwen2.5-VL forward on text-only rows, fixed for transformers 5.

veRL patches Qwen2(.5)-VL's forward (``verl/models/transformers/qwen2_vl.py``). For a batch with no
image, ``_get_input_embeds`` runs the vision tower on a dummy 4 x 4 patch grid and adds
``0.0 * image_embeds.mean()`` so that every vision parameter takes part in the backward pass (FSDP
needs the same parameters used on every rank). transformers 5 (5.9.0, the version veRL 0.9.1 was
tested with, and 5.10) returns a ``BaseModelOutputWithPooling`` from the vision tower, not a tensor:
the image path unpacks it with veRL's ``unpack_visual_output``, the text-only path does not and
fails with ``'BaseModelOutputWithPooling' object has no attribute 'mean'``. Any recipe on text-only
data (GSM8K with a Qwen-VL model) hits it, whatever the reward manager.

:func:`fix_text_only_input_embeds` wraps ``_get_input_embeds`` (a veRL private name, listed in
:mod:`medvr_verl.verl_private`): rows with images or videos go to veRL's function unchanged; a
text-only batch gets the same dummy pass with the vision output unpacked. The patched forwards look
the function up by its module-level name at each call, so replacing the module attribute suffices.
Applied by :func:`medvr_verl.register` in every process that imports veRL (CPU and GPU backends).
"""

from __future__ import annotations

import functools


def fix_text_only_input_embeds() -> None:
    """Replace ``verl.models.transformers.qwen2_vl._get_input_embeds`` by the wrapper. Idempotent."""
    from verl.models.transformers import qwen2_vl
    from verl.utils.transformers_compat import unpack_visual_output

    original = qwen2_vl._get_input_embeds
    if getattr(original, "_medvr_text_only_fix", False):
        return

    @functools.wraps(original)
    def _get_input_embeds(
        model,
        input_ids,
        attention_mask=None,
        pixel_values=None,
        pixel_values_videos=None,
        image_grid_thw=None,
        video_grid_thw=None,
    ):
        if pixel_values is not None or pixel_values_videos is not None:
            return original(
                model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw, video_grid_thw
            )
        import torch

        inputs_embeds = model.get_input_embeddings()(input_ids)
        vision = model.config.vision_config
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        dummy = torch.zeros((16, patch_dim), dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        grid_thw = torch.tensor([[1, 4, 4]], dtype=torch.long, device=inputs_embeds.device)
        image_embeds, _ = unpack_visual_output(model.visual(dummy, grid_thw=grid_thw))
        inputs_embeds = inputs_embeds + 0.0 * image_embeds.mean()
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device)
        return inputs_embeds, attention_mask

    _get_input_embeds._medvr_text_only_fix = True
    qwen2_vl._get_input_embeds = _get_input_embeds
