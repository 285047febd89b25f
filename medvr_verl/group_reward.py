"""A prompt's whole group as one call of veRL's reward loop (``medvr_cca`` scores a group together).

The V1 worker (:mod:`medvr_verl.agent_loop_tq`) holds each finished trajectory of a prompt until its
group is complete, then sends the group here: :func:`group_reward_data` lays it out as veRL's reward
loop expects it, flagged ``meta_info[GROUP_META_KEY]`` (see :mod:`medvr_verl.reward_manager`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.protocol import DataProto

from medvr_verl.agent_loop import RUNTIME_KWARGS
from medvr_verl.reward_manager import GROUP_META_KEY
from medvr_verl.trajectory import RECORD_KEY

# Per-sample kwargs a group reward call leaves out: process-local ones, and the prompt's messages and
# images, which every member shares and the reward does not read (they would be pickled M times).
_NOT_SENT_TO_REWARD = frozenset(RUNTIME_KWARGS) | {RECORD_KEY, "raw_prompt", "multi_modal_data"}


def group_reward_data(members: list[tuple[AgentLoopOutput, dict]]) -> DataProto:
    """The group as veRL's reward loop expects it: left-padded prompts, right-padded responses.

    No ``multi_modal_inputs``: rewards read text and tool records, never pixels, so the processor
    is not run again for scoring.
    """
    prompt_len = max(len(o.prompt_ids) for o, _ in members)
    response_len = max(len(o.response_ids) for o, _ in members)
    n = len(members)
    prompts = torch.zeros((n, prompt_len), dtype=torch.int64)
    responses = torch.zeros((n, response_len), dtype=torch.int64)
    attention_mask = torch.zeros((n, prompt_len + response_len), dtype=torch.int64)
    for i, (o, _) in enumerate(members):
        p, r = len(o.prompt_ids), len(o.response_ids)
        prompts[i, prompt_len - p :] = torch.tensor(o.prompt_ids, dtype=torch.int64)
        responses[i, :r] = torch.tensor(o.response_ids, dtype=torch.int64)
        attention_mask[i, prompt_len - p : prompt_len + r] = 1
    batch = TensorDict({"prompts": prompts, "responses": responses, "attention_mask": attention_mask}, batch_size=n)
    keys = set().union(*(kw.keys() for _, kw in members)) - _NOT_SENT_TO_REWARD
    non_tensor: dict[str, Any] = {}
    for key in keys:
        column = np.empty(n, dtype=object)
        column[:] = [kw.get(key) for _, kw in members]
        non_tensor[key] = column
    extra = np.empty(n, dtype=object)
    extra[:] = [{k: v for k, v in o.extra_fields.items() if k not in _NOT_SENT_TO_REWARD} for o, _ in members]
    non_tensor["tool_extra_fields"] = extra
    non_tensor["__num_turns__"] = np.array([o.num_turns for o, _ in members])
    return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info={GROUP_META_KEY: True})
