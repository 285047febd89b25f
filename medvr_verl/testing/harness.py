"""Run veRL's stock agent-loop machinery on CPU with a scripted LLM server -- a TEST HARNESS.

The pieces, all built on veRL's own code paths (nothing in veRL is patched):

* :func:`make_trainer_config` composes veRL's real ``ppo_trainer`` Hydra config from the installed
  ``verl`` package (found through importlib, not the working directory) with CPU-sized overrides.
* :func:`make_sample` / :func:`make_agent_batch` build the generation batch exactly as the trainer
  hands it to the agent loop: the ``RLHFDataset`` row fields with ``data.return_raw_chat=True``
  (``raw_prompt`` messages whose images are ``{"type": "image", "image": PIL.Image}`` content items,
  ``data_source``, ``reward_model``, ``extra_info``, ``index``, ``tools_kwargs``,
  ``interaction_kwargs``, ``agent_name``), plus the trainer's ``uid`` and the manager's
  ``priority``, repeated ``n`` times with ``DataProto.repeat(interleave=True)``.
* :func:`run_agent_loop_worker` starts veRL's stock ``AgentLoopWorker`` as a Ray actor (local Ray,
  see :func:`ensure_ray`) -- or in-process with ``use_ray=False`` -- and runs
  ``generate_sequences`` on the batch with a :class:`~medvr_verl.testing.scripted_server.ScriptedLLMClient`.

Example (an integration test)::

    from medvr_verl.testing.harness import make_agent_batch, make_sample, make_trainer_config, run_agent_loop_worker
    from medvr_verl.testing.scripted_server import ScriptedLLMClient

    config = make_trainer_config(tiny_model_path, tool_config_path=str(tool_yaml), max_assistant_turns=3)
    client = ScriptedLLMClient(config, turns={"zoom": [CALL_ZOOM, ANSWER]})
    batch = make_agent_batch([make_sample("[script:zoom] What is shown?", images=[img])], n=2,
                             agent_name="tool_agent")
    out = run_agent_loop_worker(config, batch, client)      # a DataProto, as the trainer gets it

Requirements on CPU: Qwen2.5-VL's processor in transformers 5 loads its video processor, which
needs ``torchvision``; veRL's vision extraction needs ``qwen_vl_utils`` (which imports torchvision).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_RAY_ENV_VARS",
    "ensure_ray",
    "make_agent_batch",
    "make_sample",
    "make_trainer_config",
    "run_agent_loop_worker",
    "register_prompts_v1",
    "run_manager_v1",
    "sync_replay_buffer",
    "shutdown_ray",
    "tool_class_path",
    "verl_config_dir",
    "write_tool_config",
]

#: Environment of the Ray workers started by :func:`ensure_ray` (offline, quiet, single-threaded BLAS).
DEFAULT_RAY_ENV_VARS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "RAY_DEDUP_LOGS": "0",
    "VERL_LOGGING_LEVEL": "WARN",
}


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------


def verl_config_dir() -> str:
    """Absolute path of the installed ``verl/trainer/config`` directory."""
    import importlib.util

    spec = importlib.util.find_spec("verl.trainer.config")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot locate the installed verl.trainer.config package")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def make_trainer_config(
    model_path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    config_name: str = "ppo_trainer",
    prompt_length: int = 1024,
    response_length: int = 256,
    n: int = 2,
    rollout_name: str = "vllm",
    calculate_log_probs: bool = True,
    tool_config_path: str | os.PathLike[str] | None = None,
    max_assistant_turns: int | None = 4,
    max_user_turns: int | None = 4,
    max_parallel_calls: int = 1,
    tool_format: str = "hermes",
    num_workers: int = 1,
):
    """Compose veRL's real trainer config (``verl/trainer/config/<config_name>.yaml``) for CPU tests.

    The named arguments become Hydra overrides; ``overrides`` (Hydra override strings such as
    ``"actor_rollout_ref.rollout.temperature=0"`` or ``"+foo.bar=1"``) are applied after them.

    Set by this function (all plain veRL keys):

    * ``actor_rollout_ref.model.path`` -- the model directory (tokenizer/processor/config are read
      from it by ``HFModelConfig`` inside the worker).
    * ``actor_rollout_ref.rollout.name=vllm`` -- mandatory (``???``) in veRL's config; the agent loop
      never imports vLLM when the client is a :class:`ScriptedLLMClient`.
    * ``data.max_prompt_length`` / ``data.max_response_length`` -- ``rollout.prompt_length`` /
      ``rollout.response_length`` interpolate from these (the agent loop pads to them).
    * ``data.return_raw_chat=True``, ``actor_rollout_ref.rollout.n``,
      ``actor_rollout_ref.rollout.calculate_log_probs``, ``actor_rollout_ref.rollout.agent.num_workers``.
    * ``actor_rollout_ref.rollout.multi_turn.{enable,format,max_assistant_turns,max_user_turns,
      max_parallel_calls,tool_config_path}`` -- ``enable`` and ``tool_config_path`` only when a tool
      config is given. ``max_*_turns`` of ``None`` keeps veRL's default (no limit).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def val(v: Any) -> str:
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    rollout = "actor_rollout_ref.rollout"
    base = [
        f"actor_rollout_ref.model.path={Path(model_path).as_posix()}",
        f"{rollout}.name={rollout_name}",
        f"data.max_prompt_length={prompt_length}",
        f"data.max_response_length={response_length}",
        "data.return_raw_chat=true",
        f"{rollout}.n={n}",
        f"{rollout}.calculate_log_probs={val(calculate_log_probs)}",
        f"{rollout}.agent.num_workers={num_workers}",
        f"{rollout}.multi_turn.format={tool_format}",
        f"{rollout}.multi_turn.max_assistant_turns={val(max_assistant_turns)}",
        f"{rollout}.multi_turn.max_user_turns={val(max_user_turns)}",
        f"{rollout}.multi_turn.max_parallel_calls={max_parallel_calls}",
    ]
    if tool_config_path is not None:
        base += [
            f"{rollout}.multi_turn.enable=true",
            f"{rollout}.multi_turn.tool_config_path={Path(tool_config_path).as_posix()}",
        ]
    if GlobalHydra.instance().is_initialized():  # e.g. left over by another test; compose needs a fresh one
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name=config_name, overrides=[*base, *overrides])


def tool_class_path(cls: type) -> str:
    """The ``class_name`` veRL's tool registry needs for ``cls`` (``module.QualName``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def write_tool_config(path: str | os.PathLike[str], tools: Sequence[type | Mapping[str, Any]]) -> Path:
    """Write a veRL tool YAML (``multi_turn.tool_config_path``) and return its path.

    Each entry is a ``BaseTool`` subclass (schema from its ``get_openai_tool_schema``) or a full dict
    ``{"class_name": ..., "config": {"type": "native", ...}, "tool_schema": {...}}``.
    """
    import yaml

    entries = []
    for tool in tools:
        if isinstance(tool, Mapping):
            entries.append(dict(tool))
        else:
            entries.append({"class_name": tool_class_path(tool), "config": {"type": "native"}})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump({"tools": entries}, sort_keys=False), encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------
# batch
# ----------------------------------------------------------------------------------------------


def make_sample(
    prompt: str | Sequence[Mapping[str, Any]],
    images: Sequence[Any] = (),
    *,
    system: str | None = None,
    agent_name: str | None = None,
    data_source: str = "medvr_test",
    ground_truth: Any = "A",
    index: int | None = None,
    extra_info: Mapping[str, Any] | None = None,
    tools_kwargs: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One dataset row as ``RLHFDataset.__getitem__`` returns it with ``return_raw_chat=True``.

    Args:
        prompt: the user text, or a full message list (used as is; may already hold image items).
            In the text form, each ``<image>`` placeholder is replaced by the next image as
            ``RLHFDataset._build_messages`` does; images without a placeholder go first.
        images: PIL images (or paths) of the user message.
        system: optional system message.
        agent_name: sets ``agent_name`` (else the config's ``default_agent_loop`` is used).
        ground_truth: stored as ``reward_model={"style": "rule", "ground_truth": ...}``.
        index: ``extra_info["index"]`` / ``index`` (defaults to the position in
            :func:`make_agent_batch`).
        extra_info / tools_kwargs: as in veRL's dataset (``tools_kwargs`` is also put into
            ``extra_info``, where the dataset reads it from).
        **fields: extra non-tensor columns (e.g. ``ability``).
    """
    if isinstance(prompt, str):
        text = prompt
        n_placeholders = text.count("<image>")
        if n_placeholders == 0 and images:
            text = "<image>" * len(images) + text
        elif n_placeholders != len(images):
            raise ValueError(f"{n_placeholders} <image> placeholders for {len(images)} images")
        content: list[dict[str, Any]] = []
        segments = text.split("<image>")  # len(images) + 1 text segments around the placeholders
        for i, segment in enumerate(segments):
            if segment:
                content.append({"type": "text", "text": segment})
            if i < len(images):
                image = images[i]
                if hasattr(image, "convert"):  # PIL.Image, as RLHFDataset does
                    image = image.convert("RGB")
                elif isinstance(image, os.PathLike):
                    image = os.fspath(image)
                content.append({"type": "image", "image": image})
        messages: list[dict[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": content if images else prompt})
    else:
        if images:
            raise ValueError("pass images inside the message list when prompt is a message list")
        messages = [dict(m) for m in prompt]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})

    info = dict(extra_info or {})
    if tools_kwargs is not None:
        info["tools_kwargs"] = dict(tools_kwargs)
    row: dict[str, Any] = {
        "raw_prompt": messages,
        "data_source": data_source,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": info,
        "tools_kwargs": dict(info.get("tools_kwargs", {})),
        "interaction_kwargs": dict(info.get("interaction_kwargs", {})),
        **fields,
    }
    if index is not None:
        info["index"] = index
    if agent_name is not None:
        row["agent_name"] = agent_name
    return row


def make_agent_batch(
    samples: Sequence[Mapping[str, Any]],
    n: int = 1,
    *,
    agent_name: str | None = None,
    uids: Sequence[str] | None = None,
    meta_info: Mapping[str, Any] | None = None,
):
    """Collate :func:`make_sample` rows into the generation ``DataProto`` the agent loop receives.

    Mirrors ``RayPPOTrainer``: a ``uid`` per prompt, the non-tensor columns collated to object
    arrays, then ``repeat(n, interleave=True)`` (rows ``[p0, p0, p1, p1, ...]`` for ``n=2``), and a
    ``priority`` column as ``AgentLoopManager.generate_sequences`` adds. ``agent_name`` fills rows
    that have none. ``index`` defaults to the prompt position.
    """
    from verl.protocol import DataProto

    rows = []
    for i, sample in enumerate(samples):
        row = dict(sample)
        row["extra_info"] = dict(row.get("extra_info") or {})
        row["extra_info"].setdefault("index", i)
        row.setdefault("index", row["extra_info"]["index"])
        if agent_name is not None:
            row.setdefault("agent_name", agent_name)
        row["uid"] = str(uids[i]) if uids is not None else str(uuid.uuid4())
        rows.append(row)
    keys = sorted({k for row in rows for k in row})
    missing = [k for k in keys if any(k not in row for row in rows)]
    if missing:
        raise ValueError(f"all samples need the same columns; missing in some rows: {missing}")
    non_tensor = {}
    for key in keys:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[key] for row in rows]
        non_tensor[key] = column
    batch = DataProto(non_tensor_batch=non_tensor, meta_info=dict(meta_info or {}))
    if n > 1:
        batch = batch.repeat(repeat_times=n, interleave=True)
    batch.non_tensor_batch["priority"] = np.arange(len(batch), dtype=np.int64)
    return batch


# ----------------------------------------------------------------------------------------------
# ray + worker
# ----------------------------------------------------------------------------------------------


def ensure_ray(
    *,
    num_cpus: int = 2,
    extra_sys_paths: Sequence[str | os.PathLike[str]] = (),
    env_vars: Mapping[str, str] | None = None,
    object_store_memory: int = 512 * 1024**2,
) -> None:
    """Start a local Ray session for tests unless one is running (then it is reused as is).

    ``extra_sys_paths`` are prepended to the workers' ``PYTHONPATH`` so that classes defined in test
    modules (tools, agent loops) import in the actor processes; the package itself is found through
    its (editable) install.
    """
    import ray

    if ray.is_initialized():
        return
    env = dict(DEFAULT_RAY_ENV_VARS)
    paths = [os.fspath(p) for p in extra_sys_paths]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(env_vars or {})
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=object_store_memory,
        runtime_env={"env_vars": env},
        logging_level="WARNING",
        log_to_driver=True,
    )


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_agent_loop_worker(
    config,
    batch,
    client,
    *,
    reward_loop_worker_handles: list | None = None,
    use_ray: bool = True,
    timeout_s: float | None = 600,
):
    """Run veRL's stock ``AgentLoopWorker.generate_sequences`` on ``batch`` and return its DataProto.

    With ``use_ray=True`` (default) the worker is a Ray actor, as in training
    (``ray.remote(AgentLoopWorker).remote(config, client, None, reward_loop_worker_handles)``); Ray is
    started with :func:`ensure_ray` if needed and the actor is killed afterwards. With
    ``use_ray=False`` the worker runs in this process under ``asyncio.run`` (faster; the client's
    ``calls`` list is then readable directly; must not be called from a running event loop).
    """
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    if not use_ray:
        worker = AgentLoopWorker(config, client, None, reward_loop_worker_handles)
        return asyncio.run(worker.generate_sequences(batch))

    import ray

    ensure_ray()
    actor = ray.remote(AgentLoopWorker).remote(config, client, None, reward_loop_worker_handles)
    try:
        return ray.get(actor.generate_sequences.remote(batch), timeout=timeout_s)
    finally:
        ray.kill(actor)


def register_prompts_v1(
    samples: Sequence[Mapping[str, Any]],
    *,
    global_steps: int = 1,
    validate: bool = False,
    uids: Sequence[str] | None = None,
):
    """The prompt batch as veRL's V1 ``PPOTrainer`` hands it to the agent-loop manager, registered.

    A ``TensorDict`` built by veRL's ``tu.get_tensordict`` (one row per prompt, ``global_steps`` and,
    for validation, ``validate`` attached), each prompt registered in TransferQueue as the trainer
    does (tag ``{"is_prompt": True, "status": "pending", "global_steps"}``, partition ``train`` or
    ``val``). TransferQueue must be initialised.
    """
    import transfer_queue as tq
    from verl.utils import tensordict_utils as tu

    batch_dict = dict(make_agent_batch(samples, uids=uids).non_tensor_batch)
    batch_dict.pop("priority", None)
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", global_steps)
    if validate:
        tu.assign_non_tensor_data(batch, "validate", True)
    tags = [{"is_prompt": True, "status": "pending", "global_steps": global_steps} for _ in range(len(batch))]
    tq.kv_batch_put(keys=list(batch["uid"]), partition_id="val" if validate else "train", tags=tags)
    return batch


def sync_replay_buffer(sampler_cls=None, *, poll_interval: float = 0.2):
    """A sync-mode replay buffer (default :class:`medvr_verl.replay_buffer.MedVRReplayBuffer`), built
    with the base arguments veRL passes a custom sampler, no off-policy control."""
    from medvr_verl.replay_buffer import MedVRReplayBuffer

    return (sampler_cls or MedVRReplayBuffer)(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs={},
        poll_interval=poll_interval,
    )


def run_manager_v1(
    manager_cls,
    config,
    client,
    samples: Sequence[Mapping[str, Any]],
    *,
    reward_loop_worker_handles=None,
    validate: bool = False,
    global_steps: int = 1,
    sampler_cls=None,
    uids: Sequence[str] | None = None,
):
    """One rollout of veRL's V1 trainer, as ``PPOTrainer`` drives it, and the replay buffer's sample.

    Starts TransferQueue in this Ray session (``tq.init()``, reused when running), registers the
    prompts (:func:`register_prompts_v1`), hands the batch to
    ``manager_cls.create(...).generate_sequences``, then samples it back with
    :func:`sync_replay_buffer` (``sampler_cls``), which waits for every group to turn terminal.
    Returns ``(meta, metrics, rows)``: the sampled ``KVBatchMeta``, the sampler's metrics and all
    fields of the sampled rows (``tq.kv_batch_get``); the rows are cleared from TransferQueue and the
    workers killed afterwards.
    """
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ensure_ray()
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    partition_id = "val" if validate else "train"
    batch = register_prompts_v1(samples, global_steps=global_steps, validate=validate, uids=uids)
    manager = manager_cls.create(
        config=config, llm_client=client, teacher_client=None, reward_loop_worker_handles=reward_loop_worker_handles
    )
    try:
        manager.generate_sequences(batch)
        sampler = sync_replay_buffer(sampler_cls)
        meta, metrics = sampler.sample(global_steps=global_steps, partition_id=partition_id, batch_size=len(samples))
        rows = tq.kv_batch_get(keys=meta.keys, partition_id=partition_id) if meta.keys else None
        tq.kv_clear(keys=meta.keys, partition_id=partition_id)
        return meta, metrics, rows
    finally:
        for worker in manager.agent_loop_workers:
            ray.kill(worker)
