"""Scripted tokens, real distributions: the tiny model scores what the script says -- a TEST FIXTURE.

:class:`RealLogprobLLMClient` is a :class:`~medvr_verl.testing.scripted_server.ScriptedLLMClient`
whose turns still come from the script (random weights write no zoom calls), but whose
``log_probs`` and per-token ``token_entropy`` come from a real forward pass of the model on the
prompt (images included) plus those tokens -- what vLLM returns for tokens it sampled: the sampled
token's logprob and, as ``medvr_vllm`` does, the top-k entropy estimate
(:func:`medvr_verl.entropy.topk_entropy`). The exact full-vocabulary entropies are kept beside
(``token_entropy_exact``) so tests can check the estimator on real distributions.
"""

from __future__ import annotations

from typing import Any

from medvr_verl.entropy import TOKEN_ENTROPY_KEY, topk_entropy
from medvr_verl.testing.scripted_server import ScriptedLLMClient


class RealLogprobLLMClient(ScriptedLLMClient):
    """ScriptedLLMClient + a real forward pass of the model for logprobs and entropies."""

    def __init__(self, config, *args, top_k: int = 20, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.top_k = top_k
        self._model = None
        self._processor = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_model"] = state["_processor"] = None
        return state

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

            path = self._model_cfg().path
            self._processor = AutoProcessor.from_pretrained(path)
            self._model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
        return self._model, self._processor

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs):
        output = await super().generate(
            request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, image_data=image_data, **kwargs
        )
        logprobs, estimated, exact = self.score(list(prompt_ids), list(output.token_ids), image_data)
        extra = {**output.extra_fields, TOKEN_ENTROPY_KEY: estimated, "token_entropy_exact": exact}
        return output.model_copy(update={"log_probs": logprobs, "extra_fields": extra})

    def score(self, prompt_ids: list[int], token_ids: list[int], images) -> tuple[list, list, list]:
        """Per generated token: its logprob, the top-k entropy estimate and the exact entropy (nats)."""
        import torch

        if not token_ids:
            return [], [], []
        model, processor = self._load()
        inputs: dict[str, Any] = {"input_ids": torch.tensor([prompt_ids + token_ids])}
        if images:
            vision = processor.image_processor(images=list(images), return_tensors="pt")
            inputs.update(pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"])
        with torch.no_grad():
            logits = model(**inputs).logits[0, len(prompt_ids) - 1 : -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        chosen = logp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0].tolist()
        top = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1).values.tolist()
        exact = (-(logp.exp() * logp).sum(-1)).tolist()
        return chosen, [topk_entropy(row) for row in top], exact
