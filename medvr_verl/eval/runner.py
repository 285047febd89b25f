"""Evaluate a checkpoint with the zoom agent through veRL's own validation path.

What :func:`evaluate` runs, per benchmark (the trainer's ``_validate`` step by step):

1. veRL's ``RLHFDataset`` (``create_rl_dataset`` with the ``data`` config) over the converted parquet
   file; batches of ``batch_size`` questions collated by veRL's ``collate_fn`` into a ``DataProto``,
   a ``uid`` per question, repeated ``samples_per_prompt`` times, ``meta_info["validate"] = True``.
2. :class:`medvr_verl.rollout.GroupAgentLoopManager` (veRL ``AgentLoopWorker`` Ray actors running
   ``medvr_agent`` with the zoom tool) with the validation sampling params ``rollout.val_kwargs``:
   greedy (``temperature=0``) for one sample per question.
3. ``medvr_cca`` rewards in veRL's ``RewardLoopWorker`` actors, each question's samples scored
   together: ``acc``, ``format``, ``pred``, the zoom boxes and the CCA consensus come back as
   ``reward_extra_info``.
4. :func:`medvr_verl.eval.metrics.summarize` -> the paper's table, breakdowns, grounding check;
   ``results.md`` / ``results.json`` / ``samples.jsonl`` in ``out_dir``.

The LLM: a standalone vLLM replica built by veRL's ``LLMServerManager.create`` (GPU) loading the
checkpoint itself (``rollout.load_format=auto``), or any injected ``LLMServerClient`` (CPU tests:
:class:`medvr_verl.testing.scripted_server.ScriptedLLMClient`).

Size (over 500 lines): the steps of one evaluation run (config, servers, reward workers, batches,
report), in the order they run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvr_verl.data.writer import resolve_dataset
from medvr_verl.eval.metrics import BENCHMARK_KEYS, column_of, summarize
from medvr_verl.eval.report import JsonlWriter, markdown, write_results

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EvalResult",
    "EvalSetupError",
    "build_eval_config",
    "check_hf_checkpoint",
    "evaluate",
]

DEFAULT_BATCH_SIZE = 64
RECIPE_PACKAGE = "medvr_verl.recipes.medvr"
MERGE_HINT = (
    "export a veRL FSDP checkpoint to a Hugging Face folder first:\n"
    "    python -m verl.model_merger merge --backend fsdp \\\n"
    "        --local_dir <ckpt>/global_step_<N>/actor --target_dir <hf_dir>\n"
    "then copy the base model's preprocessor_config.json / chat_template.json into <hf_dir> if missing"
)
# reward_extra_info keys of medvr_cca that a record needs
_REQUIRED_KEYS = ("acc", "format", "zoom_boxes_json", "cca_consensus_json", "group_uid")


class EvalSetupError(RuntimeError):
    """The evaluation cannot start here: no GPU or vLLM for the server, or not a Hugging Face model folder."""


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    results: dict
    """Everything in ``results.json``: ``benchmarks``, ``table``, ``grounding``, ``settings``, ``model``."""
    markdown: str
    """``results.md``."""
    records: list[dict] = field(repr=False)
    """One dict per scored sample (the lines of ``samples.jsonl``)."""
    paths: dict[str, Path] = field(default_factory=dict)
    """Written files by name (``results.md``, ``results.json``, ``samples.jsonl``); empty without ``out_dir``."""

    @property
    def table_row(self) -> dict[str, float | None]:
        """``{column: accuracy % or None}`` with the two averages (unrounded)."""
        return self.results["table"]["row"]

    def accuracy(self, benchmark: str) -> float | None:
        """Accuracy (%) of a benchmark (canonical name or alias), None when not evaluated."""
        return self.table_row.get(column_of(resolve_dataset(benchmark)))


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


def resolve_data_files(data_files: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """``{canonical benchmark: absolute parquet path}`` in the paper's column order."""
    if not data_files:
        raise ValueError("no data files: pass {benchmark: parquet path}, e.g. {'slake': 'slake_test.parquet'}")
    resolved: dict[str, str] = {}
    for name, path in data_files.items():
        key = resolve_dataset(name)
        if key in resolved:
            raise ValueError(f"benchmark {key!r} given twice")
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{key}: no such parquet file {path}")
        resolved[key] = path
    return {key: resolved[key] for key in BENCHMARK_KEYS if key in resolved}


def _gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # pragma: no cover - depends on the machine
        return 0


def _bool(value: bool) -> str:
    return "true" if value else "false"


def build_eval_config(
    model_path: str | os.PathLike,
    data_files: Mapping[str, str] | Sequence[str] = (),
    *,
    samples_per_prompt: int = 1,
    overrides: Sequence[str] = (),
    recipe: str = "medvr",
):
    """The trainer config :func:`evaluate` runs with: a MedVR recipe with evaluation settings.

    Composes ``recipe`` from ``medvr_verl.recipes.medvr`` (``medvr``: the zoom agent; another name:
    that option of its ``ablation`` group, e.g. ``text_rl``, the text baseline) over veRL's
    ``ppo_trainer``, then these overrides, then ``overrides`` (Hydra syntax, ``key=value`` /
    ``+new.key=value``; they win):

    * ``rollout.name=vllm``, ``load_format=auto`` (the server loads the checkpoint itself),
      ``tensor_model_parallel_size=1``, ``gpu_memory_utilization=0.85``, ``nnodes=1``;
      ``trainer.nnodes=1``, ``trainer.n_gpus_per_node`` = the GPUs torch sees (one replica per GPU);
    * ``rollout.agent.agent_loop_manager_class=medvr_verl.rollout.GroupAgentLoopManager``, EVR off,
      ``calculate_log_probs=false``;
    * ``rollout.val_kwargs``: ``n=samples_per_prompt``; one sample: ``temperature=0``,
      ``do_sample=false`` (greedy); more: ``do_sample=true`` and ``temperature`` =
      ``rollout.temperature`` (1.0 in the recipe) unless overridden;
    * ``data.seed=0`` (``max_samples`` picks the same random subset every run; ``data.shuffle=false``
      takes the first rows instead);
    * ``data.filter_overlong_prompts_workers=null``: the length filter runs in-process (override with
      a number of workers to parallelize it on big sets).

    ``actor_rollout_ref.model.path`` and ``data.{train,val}_files`` are set from the arguments.
    """
    import verl  # noqa: F401  (loads the plugin: ${medvr.*} resolvers, registries)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    rollout = "actor_rollout_ref.rollout"
    sampled = samples_per_prompt > 1
    base = [
        f"{rollout}.name=vllm",
        f"{rollout}.load_format=auto",
        f"{rollout}.tensor_model_parallel_size=1",
        f"{rollout}.gpu_memory_utilization=0.85",
        f"{rollout}.nnodes=1",
        f"{rollout}.calculate_log_probs=false",
        f"{rollout}.agent.agent_loop_manager_class=medvr_verl.rollout.GroupAgentLoopManager",
        f"{rollout}.custom.evr.enable=false",
        f"{rollout}.val_kwargs.n={samples_per_prompt}",
        f"{rollout}.val_kwargs.do_sample={_bool(sampled)}",
        f"{rollout}.val_kwargs.temperature=" + ("${actor_rollout_ref.rollout.temperature}" if sampled else "0"),
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={max(1, _gpu_count())}",
        "data.seed=0",
        # datasets' filter forks a process pool even for num_proc=1; forking a process that runs Ray
        # threads can deadlock, so the length filter runs in-process unless overridden
        "data.filter_overlong_prompts_workers=null",
    ]
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=RECIPE_PACKAGE, version_base=None):
            ablation = [] if recipe == "medvr" else [f"ablation={recipe}"]
            config = compose(config_name="medvr", overrides=[*ablation, *base, *overrides])
    finally:
        GlobalHydra.instance().clear()
    config.actor_rollout_ref.model.path = os.fspath(model_path)
    files = list(data_files.values()) if isinstance(data_files, Mapping) else list(data_files)
    config.data.train_files = files
    config.data.val_files = files

    val = config.actor_rollout_ref.rollout.val_kwargs
    if int(val.n) != samples_per_prompt:
        raise ValueError(
            f"actor_rollout_ref.rollout.val_kwargs.n={val.n} contradicts samples_per_prompt={samples_per_prompt}"
        )
    if sampled and float(val.temperature) <= 0:
        raise ValueError(
            f"samples_per_prompt={samples_per_prompt} with temperature 0 gives identical samples; set "
            "actor_rollout_ref.rollout.val_kwargs.temperature=<t> > 0 (default: rollout.temperature)"
        )
    return config


def check_hf_checkpoint(model_path: str | os.PathLike) -> None:
    """Refuse a veRL FSDP checkpoint folder (sharded ``.pt`` files) with the command that exports it.

    A path that does not exist locally is left alone (a Hugging Face hub id, or a remote path veRL
    copies)."""
    path = Path(model_path)
    if not path.is_dir():
        return
    if (path / "config.json").is_file():
        return
    shards = list(path.glob("model_world_size_*_rank_*.pt")) or list(path.glob("actor/model_world_size_*_rank_*.pt"))
    if shards:
        raise EvalSetupError(f"{path} is a veRL FSDP checkpoint, not a Hugging Face model folder; {MERGE_HINT}")
    raise EvalSetupError(f"{path} holds no config.json: not a Hugging Face model folder; {MERGE_HINT}")


# --------------------------------------------------------------------------------------------------
# Ray, the LLM server, the reward workers
# --------------------------------------------------------------------------------------------------


def _ensure_ray(config) -> bool:
    """Start Ray as veRL's ``main_ppo`` does unless it is running; True when this call started it."""
    import ray
    from omegaconf import OmegaConf
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    if ray.is_initialized():
        return False
    ray_init = dict(OmegaConf.to_container(config.ray_kwargs.get("ray_init", {}), resolve=True) or {})
    extra_env = {k: v for k, v in (ray_init.pop("runtime_env", None) or {}).items() if v is not None}
    runtime_env = OmegaConf.to_container(OmegaConf.merge(get_ppo_ray_runtime_env(config), extra_env))
    ray.init(runtime_env=runtime_env, **{k: v for k, v in ray_init.items() if v is not None})
    return True


def _start_vllm(config, cleanup: list[Callable[[], None]]):
    """A standalone vLLM replica per GPU group via veRL's ``LLMServerManager``; returns its client."""
    import importlib.util

    import ray
    from verl.workers.rollout.llm_server import LLMServerManager

    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus < 1:
        raise EvalSetupError(
            "evaluate(client=None) serves the checkpoint with vLLM and needs a GPU, but Ray sees none. "
            "Run on a GPU machine, or pass client=<an LLMServerClient> (e.g. "
            "medvr_verl.testing.scripted_server.ScriptedLLMClient for a CPU dry run)."
        )
    name = str(config.actor_rollout_ref.rollout.name)
    if name in ("vllm", "medvr_vllm") and importlib.util.find_spec("vllm") is None:
        raise EvalSetupError("vLLM is not installed: pip install 'medvr-verl[vllm]'")
    manager = LLMServerManager.create(config=config)
    cleanup.append(lambda: _stop_servers(manager))
    return manager.get_client()


def _stop_servers(manager) -> None:
    """Kill the replicas' actors and remove their placement groups.

    A standalone replica (``RolloutReplica.init_standalone``) reserves its GPUs (and
    ``max_colocate_count`` CPUs per GPU) in a placement group of its own; killing the actors leaves
    that reservation in place, so a second :func:`evaluate` in the same Ray session would wait
    forever for the GPUs. Removing the group frees them (and kills anything still inside it).
    """
    import ray
    from ray.util import remove_placement_group

    handles = [getattr(manager, "global_load_balancer", None)]
    groups = []
    for replica in manager.get_replicas():
        handles += [replica._server_handle, *getattr(replica, "servers", []), *replica.workers]
        pool = getattr(replica, "resource_pool", None)
        groups += list(getattr(pool, "pgs", None) or [])
    for handle in handles:
        if handle is not None:
            try:
                ray.kill(handle)
            except Exception:
                pass
    for group in groups:
        try:
            remove_placement_group(group)
        except Exception:
            logger.warning("evaluate: could not remove placement group %s", group, exc_info=True)


def _make_client(client, config, cleanup):
    from verl.workers.rollout.llm_server import LLMServerClient

    if client is None:
        return _start_vllm(config, cleanup)
    if isinstance(client, LLMServerClient):
        return client
    if callable(client):
        made = client(config)
        if not isinstance(made, LLMServerClient):
            raise TypeError(f"client factory returned {type(made).__name__}, not an LLMServerClient")
        return made
    raise TypeError(f"client must be an LLMServerClient, a factory f(config) -> client, or None; got {client!r}")


def _start_reward_workers(config, cleanup):
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    if str(config.reward.reward_manager.name) != "medvr_cca":
        raise ValueError(
            f"evaluation needs reward.reward_manager.name=medvr_cca, got {config.reward.reward_manager.name}"
        )
    manager = RewardLoopManager(config)
    handles = manager.reward_loop_workers
    cleanup.append(lambda: [ray.kill(h) for h in handles])
    return handles


# --------------------------------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------------------------------


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _as_py(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


def _records_of_batch(batch, output, tokenizer, key: str, *, save_responses: bool) -> list[dict]:
    """One record per sample of ``output`` (same order as ``batch``, checked by uid)."""
    nt = output.non_tensor_batch
    missing = [k for k in _REQUIRED_KEYS if k not in nt]
    if missing:
        raise RuntimeError(
            f"the reward loop returned no {missing}: evaluation needs reward.reward_manager.name=medvr_cca "
            "(and reward workers that run it)"
        )
    uids = batch.non_tensor_batch["uid"]
    if len(output) != len(batch) or list(nt["group_uid"]) != [str(u) for u in uids]:
        raise RuntimeError("the rollout returned samples out of order or incomplete")
    scores = output.batch["rm_scores"].sum(-1).tolist() if "rm_scores" in output.batch.keys() else [None] * len(batch)
    responses = output.batch["responses"]
    width = responses.shape[1]
    masks = output.batch["attention_mask"][:, -width:].bool()
    turns = nt.get("__num_turns__")
    records, seen = [], {}
    for i in range(len(batch)):
        info = dict(batch.non_tensor_batch["extra_info"][i] or {})
        uid = str(uids[i])
        seen[uid] = seen.get(uid, -1) + 1
        record = {
            "uid": uid,
            "benchmark": key,
            "index": _as_py(info.get("index")),
            "sample": seen[uid],
            "data_source": str(batch.non_tensor_batch["data_source"][i]),
            "question_type": info.get("question_type"),
            "question": info.get("question"),
            "gt": _as_py(batch.non_tensor_batch["reward_model"][i]["ground_truth"]),
            "answer_text": info.get("answer_text"),
            "pred": _as_py(nt["pred"][i]) if "pred" in nt else None,
            "acc": float(nt["acc"][i]),
            "format": float(nt["format"][i]),
            "score": scores[i],
            "num_zoom": int(nt["num_zoom"][i]) if "num_zoom" in nt else None,
            "num_zoom_invalid": int(nt["num_zoom_invalid"][i]) if "num_zoom_invalid" in nt else 0,
            "zoom_boxes": json.loads(nt["zoom_boxes_json"][i]),
            "consensus": json.loads(nt["cca_consensus_json"][i]),
            "tool_reward": float(nt["tool_reward"][i]) if "tool_reward" in nt else None,
            "cca_iou": float(nt["cca_iou"][i]) if "cca_iou" in nt else None,
            "gt_boxes": [[float(v) for v in box] for box in (_as_py(info.get("gt_boxes")) or [])],
            "gt_box_labels": list(_as_py(info.get("gt_box_labels")) or []),
            "num_turns": int(turns[i]) if turns is not None else None,
        }
        if save_responses:
            record["response"] = tokenizer.decode(responses[i][masks[i]], skip_special_tokens=True)
        records.append(record)
    return records


def _run_batch(manager, rows: dict, key: str, start: int, n: int, tokenizer, *, save_responses: bool) -> list[dict]:
    from verl.protocol import DataProto

    batch = DataProto.from_single_dict(rows)
    batch.non_tensor_batch["uid"] = np.array([f"{key}/{start + i}" for i in range(len(batch))], dtype=object)
    if n > 1:
        batch = batch.repeat(repeat_times=n, interleave=True)
    batch.meta_info = {
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "recompute_log_prob": False,
        "do_sample": n > 1,
        "validate": True,
        "global_steps": 0,
    }
    output = manager.generate_sequences(batch)
    return _records_of_batch(batch, output, tokenizer, key, save_responses=save_responses)


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------


def evaluate(
    model_path: str | os.PathLike,
    data_files: Mapping[str, str | os.PathLike],
    *,
    client=None,
    out_dir: str | os.PathLike | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    samples_per_prompt: int = 1,
    overrides: Sequence[str] = (),
    recipe: str = "medvr",
    reward_workers: list | None = None,
    save_responses: bool = True,
    progress: bool = True,
    verbose: bool = True,
) -> EvalResult:
    """Evaluate ``model_path`` on the given benchmarks with the zoom agent; see the module docstring.

    Args:
        model_path: a Hugging Face model folder (a veRL FSDP checkpoint must be exported first:
            ``python -m verl.model_merger merge --backend fsdp --local_dir .../actor --target_dir DIR``)
            or hub id.
        data_files: ``{benchmark: parquet}`` written by :mod:`medvr_verl.data` (names or aliases:
            ``vqa_rad``, ``slake``, ``path_vqa``, ``pmc_vqa``, ``omnimedvqa``, ``medxpertqa_mm``).
        client: None -> a standalone vLLM server on this machine's GPUs (veRL ``LLMServerManager``);
            else an ``LLMServerClient`` or a factory ``f(config) -> LLMServerClient``.
        out_dir: where ``results.md``, ``results.json``, ``samples.jsonl`` go (None: write nothing).
        batch_size: questions per rollout batch.
        max_samples: at most this many questions per benchmark (a seeded random subset: veRL's
            ``RLHFDataset`` with ``data.shuffle``/``data.seed``).
        samples_per_prompt: samples per question; 1 is greedy, more sample at ``val_kwargs.temperature``.
        overrides: Hydra overrides of the config (:func:`build_eval_config`).
        recipe: ``medvr``, or an option of its ablation group (``text_rl`` for the text baseline).
        reward_workers: running ``RewardLoopWorker`` handles with ``medvr_cca`` to use instead of
            starting ``reward.num_workers`` new ones (veRL names them ``reward_loop_worker_{i}``, so
            only one set can live in a Ray namespace).
        save_responses: put each decoded response into ``samples.jsonl``.
        progress: tqdm bar over batches. verbose: print the markdown report at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    files = resolve_data_files(data_files)
    config = build_eval_config(
        model_path, files, samples_per_prompt=samples_per_prompt, overrides=overrides, recipe=recipe
    )
    if client is None:
        check_hf_checkpoint(model_path)

    import ray
    from medvr_verl import io_utils  # (the argument `progress` shadows io_utils.progress)
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.dataset.rl_dataset import collate_fn

    from medvr_verl.rollout import GroupAgentLoopManager

    started_ray = _ensure_ray(config)
    cleanup: list[Callable[[], None]] = []
    writer: JsonlWriter | None = None
    records: list[dict] = []
    try:
        # the server first: a machine that cannot serve the model fails before the data is read
        llm_client = _make_client(client, config, cleanup)
        handles = reward_workers if reward_workers is not None else _start_reward_workers(config, cleanup)
        manager = GroupAgentLoopManager.create(
            config=config, llm_client=llm_client, teacher_client=None, reward_loop_worker_handles=handles
        )
        cleanup.append(lambda: [ray.kill(w) for w in manager.agent_loop_workers])

        model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        tokenizer, processor = model_config.tokenizer, model_config.processor
        datasets, skipped = {}, {}
        for key, path in files.items():
            ds = create_rl_dataset(
                path, config.data, tokenizer, processor, is_train=False, max_samples=max_samples or -1
            )
            datasets[key] = ds
            rows_in_file = _parquet_rows(path)
            expected = rows_in_file if max_samples is None else min(max_samples, rows_in_file)
            skipped[key] = max(0, expected - len(ds))
            if skipped[key]:
                logger.warning("%s: %d rows dropped by veRL's over-long prompt filter", key, skipped[key])
            if len(ds) == 0:
                logger.warning("%s: no rows left to evaluate; its column will show '-'", key)

        if out_dir is not None:
            writer = JsonlWriter(Path(out_dir) / "samples.jsonl")
        total = sum(math.ceil(len(ds) / batch_size) for ds in datasets.values())
        with io_utils.progress(total=total, desc="eval", unit="batch", enabled=progress) as bar:
            for key, ds in datasets.items():
                correct = count = 0
                for start in range(0, len(ds), batch_size):
                    rows = collate_fn([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
                    batch_records = _run_batch(
                        manager, rows, key, start, samples_per_prompt, tokenizer, save_responses=save_responses
                    )
                    records.extend(batch_records)
                    if writer is not None:
                        for record in batch_records:
                            writer.write(record)
                        writer.flush()
                    correct += sum(r["acc"] for r in batch_records)
                    count += len(batch_records)
                    bar.set_postfix_str(f"{column_of(key)} acc {100 * correct / count:.1f}%")
                    bar.update(1)
        results = summarize(records, skipped=skipped)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception:  # teardown must not hide the run's own error
                logger.warning("evaluate: cleanup step failed", exc_info=True)
        if started_ray:
            ray.shutdown()

    val = config.actor_rollout_ref.rollout.val_kwargs
    results["model"] = os.fspath(model_path)
    results["settings"] = {
        "recipe": recipe,
        "samples_per_prompt": samples_per_prompt,
        "temperature": float(val.temperature),
        "top_p": float(val.top_p),
        "batch_size": batch_size,
        "max_samples": max_samples,
        "data_files": files,
        "overrides": list(overrides),
        "max_prompt_length": int(config.data.max_prompt_length),
        "max_response_length": int(config.data.max_response_length),
        "max_assistant_turns": config.actor_rollout_ref.rollout.multi_turn.max_assistant_turns,
    }
    md = markdown(results)
    paths: dict[str, Path] = {}
    if out_dir is not None:
        paths = write_results(out_dir, results, md)
        paths["samples.jsonl"] = writer.close()
    if verbose:
        print(md)
    return EvalResult(results=results, markdown=md, records=records, paths=paths)
