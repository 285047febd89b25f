"""vLLM V1 logits processor of ``medvr_vllm``'s template decoding (:mod:`medvr_verl.vllm_template`).

Loaded by vLLM in its engine process from the FQCN ``medvr_verl.vllm_logits:TemplateLogitsProcessor``
(the ``logits_processors`` engine argument, which ``MedVRvLLMHttpServer`` adds when
``rollout.custom.vllm.constrained.enable`` is true). Imports vLLM and torch: never import it where
vLLM is absent.

A request whose ``SamplingParams.extra_args`` carries :data:`~medvr_verl.vllm_template.TEMPLATE_ARG`
(the turn's allowed token sequences) gets every other token's logit set to ``-inf`` at each step;
any other request passes untouched. Not argmax-invariant, so vLLM applies it inside its sampler,
after ``raw_logprobs`` are taken and before sampling (vLLM 0.24.0 ``Sampler.forward``).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from medvr_verl.vllm_template import SequenceTrie, template_of


class TemplateLogitsProcessor(AdapterLogitsProcessor):
    """Masks each templated request's logits to the tokens that keep it on one of its sequences."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        sequences = template_of(params.extra_args)
        if sequences is None:
            return None
        trie = SequenceTrie(sequences)

        def mask(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            """``logits``: the request's row, shape ``[vocab]``; ``output_ids``: its tokens so far."""
            allowed = torch.tensor(trie.allowed(output_ids), dtype=torch.long, device=logits.device)
            kept = logits.index_select(0, allowed)
            logits.fill_(float("-inf"))
            logits.index_copy_(0, allowed, kept)
            return logits

        return mask
