"""veRL V1 replay buffers that report MedVR's rollout statistics as step metrics.

Select with ``trainer.v1.sampler.custom_sampler={path: pkg://medvr_verl.replay_buffer, name: MedVRReplayBuffer}``
(the MedVR recipes do; ``MedVRReplayBufferAsync`` for the async trainer modes). Sampling is veRL's
own; on top, each sampled batch's TransferQueue row tags (written by
:class:`medvr_verl.agent_loop_tq.MedVRAgentLoopWorkerTQ`, see ``TAG_KEY`` there) become metrics:

* ``medvr/<name>/mean`` of the reward parts over the batch's rows: ``acc``, ``format``,
  ``tool_reward``, ``cca_iou``, ``cca_quorum_size``, ``num_zoom``, ``num_zoom_invalid``, ``fork``
  (the share of rows that are EVR forks) and ``budget_overflow`` (the share that ended because a tool
  response would overflow ``response_length``); ``medvr/cca_partial_group/count``,
  ``medvr/gt_unusable/count`` (rows whose ground truth no answer can match, :mod:`medvr_verl.ground_truth`);
* the consensus monitor, over the rows whose sample carries annotated boxes (``extra_info.gt_boxes``:
  SLAKE's converter, the synthetic stripes set): ``medvr/cca_gt_iou/mean`` (IoU of the group's
  consensus with the gt boxes, groups with a consensus only), ``medvr/zoom_gt_iou/mean`` (each
  zoom's IoU with them), and ``medvr/cca_gt_hit/mean`` / ``medvr/zoom_gt_hit/mean`` (the share above
  ``eta``); :func:`medvr_verl.consensus.gt_agreement`;
* ``medvr/evr/<name>/{mean,max,sum}`` over the batch's groups: ``fork_rate``, ``fork_rate_qualified``,
  ``fork_rate_fallback``, ``fresh_rate`` (where the fork slots went), ``delta_h``,
  ``qualified_points``, ``fork_depth_tokens``, ``prefix_tokens_reused``.

veRL adds what ``sample`` returns to the step's metrics (``PPOTrainer._step_once``). veRL passes a
custom sampler only its base arguments: DAPO group filtering (``algorithm.filter_groups``) is not
available with these samplers.

A rollout server whose Ray actor died stops the run here, with one line naming it
(:class:`medvr_verl.rollout_health.RolloutServerDiedError`), instead of a batch from its failed
groups or veRL's misleading error (:mod:`medvr_verl.rollout_health`; sync trainer mode, the recipes').
"""

from __future__ import annotations

import numpy as np
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

from medvr_verl.agent_loop_tq import TAG_KEY
from medvr_verl.rollout_health import RolloutServerDiedError, raise_if_fatal, raise_if_server_died


def merge_worker_stats(per_worker: list[dict[str, list[float]]]) -> dict[str, float]:
    """Workers' ``{name: [values]}`` into ``medvr/<name>/{mean,max,sum}`` over the whole step."""
    merged: dict[str, list[float]] = {}
    for stats in per_worker:
        for name, values in stats.items():
            merged.setdefault(name, []).extend(values)
    out = {}
    for name, values in merged.items():
        if values:
            out[f"medvr/{name}/mean"] = float(np.mean(values))
            out[f"medvr/{name}/max"] = float(np.max(values))
            out[f"medvr/{name}/sum"] = float(np.sum(values))
    return out


def rollout_metrics(tags: list[dict]) -> dict[str, float]:
    """``medvr/...`` metrics of a batch from its rows' tags (rows without MedVR tags are skipped)."""
    rows = [tag[TAG_KEY] for tag in tags if isinstance(tag, dict) and isinstance(tag.get(TAG_KEY), dict)]
    metrics: dict[str, float] = {}
    if not rows:
        return metrics
    names = sorted({name for row in rows for name in row if name != "group"})
    for name in names:
        values = [row[name] for row in rows if name in row]
        if name in ("cca_partial_group", "gt_unusable"):
            metrics[f"medvr/{name}/count"] = float(np.sum(values))
        else:
            metrics[f"medvr/{name}/mean"] = float(np.mean(values))
    metrics.update(merge_worker_stats([row.get("group") or {} for row in rows]))
    return metrics


class _RolloutMetricsMixin:
    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        try:
            batch, metrics = super().sample(
                global_steps=global_steps, partition_id=partition_id, batch_size=batch_size
            )
        except RuntimeError as error:  # veRL's own message would name the wrong cause
            if isinstance(error, RolloutServerDiedError):
                raise
            try:
                raise_if_server_died(partition_id)
            except RolloutServerDiedError as died:
                raise died from None
            raise
        # veRL cleared the sampled groups' own tags; their rows carry the line too
        raise_if_fatal(batch.tags)
        return batch, {**metrics, **rollout_metrics(batch.tags)}


class MedVRReplayBuffer(_RolloutMetricsMixin, ReplayBuffer):
    """veRL's sync-mode ``ReplayBuffer`` plus ``medvr/...`` rollout metrics."""


class MedVRReplayBufferAsync(_RolloutMetricsMixin, ReplayBufferAsync):
    """veRL's async-mode ``ReplayBufferAsync`` plus ``medvr/...`` rollout metrics."""
