"""One ``main_ppo`` run of the MedVR recipe with the tiny Qwen2.5-VL, on either backend.

The demo (``scripts/demo.sh``), the CPU test (``tests/test_main_ppo_on_cpu.py``) and the GPU smoke run
(``examples/gpu_smoke.py``, ``tests/test_main_ppo_smoke_on_gpu.py``) all build their command here, so the
CPU run checks the GPU run's config: the two differ only in :func:`backend_overrides`.

* :func:`build_data`: a parquet of questions on pydicom's bundled CT and MR images through
  ``medvr_verl.data.write_records`` (veRL's schema, the zoom-tool system prompt). Each question
  carries a script marker (``[script:RIGHT_WRONG]``) that only the CPU server's ``scripted`` policy
  reads (:class:`medvr_verl.cpu.script.ZoomThenAnswer`).
* :func:`command`: ``python -m verl.trainer.main_ppo --config-path=pkg://medvr_verl.recipes.medvr
  --config-name=medvr`` scaled to the tiny model, plus the backend.
* :func:`val_only_command`: the same run as an evaluation (``trainer.val_only=true``, the samples
  dumped to ``out/validation`` for ``python -m medvr_verl.eval report``;
  ``tests/test_eval_val_only_on_cpu.py``).
* :func:`environment`: the process environment (``VERL_PLATFORM=cpu`` on CPU, the metrics file).
* :func:`model_path`: the tiny model for a backend (``cpu_vllm``: ``head_dim=32``, as vLLM's CPU
  attention requires).

EVR fallback: the run selects OUR variant ``evr.fallback=top_dh`` (:data:`EVR_FALLBACK`), not the
recipe's (the paper's) ``fresh``. A random-weight model's token entropies are flat, so no zoom call
has a significantly positive ``dH`` and under ``fresh`` every fork slot would become a fresh sample:
the run would show no fork at all. ``top_dh`` forks those slots at the highest-``dH`` calls anyway,
so the demo and the tests exercise veRL's fork path (prefix reuse, fork rows, fork rewards). The
demo's banner says so.

Lengths: the tiny model's prompts are about 1,150 tokens (the hermes tool block of the system
prompt plus up to 256 image tokens), so ``max_prompt_length`` is 2048 -- with 1024 veRL's
``filter_overlong_prompts`` drops every prompt and the run ends with ``num_samples=0``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

BACKENDS = ("cpu", "cpu_vllm", "gpu")
"""``cpu``: medvr_cpu rollout; ``cpu_vllm``: medvr_vllm on vLLM's CPU build (./.venv-vllm); ``gpu``."""
MAX_PROMPT_LENGTH = 2048
MAX_RESPONSE_LENGTH = 1024
EVR_FALLBACK = "top_dh"
"""Ours, not the paper's ``fresh``: flat random-weight entropies would leave no fork (module docstring)."""

# pydicom test file, question, options, answer: the answer is what a zoom on the image centre sees
QUESTIONS = (
    ("CT_small.dcm", "Which imaging modality produced this image?", {"A": "CT", "B": "MRI", "C": "X-ray"}, "A"),
    ("MR_small.dcm", "Which imaging modality produced this image?", {"A": "CT", "B": "MRI", "C": "X-ray"}, "B"),
)


def build_data(out: Path, num_questions: int = 8, numbered: bool = False) -> Path:
    """``out/tiny_medvr.parquet``: ``num_questions`` questions alternating over :data:`QUESTIONS`.

    ``numbered``: each question says its row (``(question 3)``), so a rollout dump shows which
    dataset rows a step trained on (the resume tests compare them with veRL's sampler order)."""
    import pydicom.data

    from medvr_verl.data import ImageRef, Record, write_records
    from medvr_verl.tools.image_io import load_medical_image

    records = []
    for i in range(num_questions):
        file, question, options, answer = QUESTIONS[i % len(QUESTIONS)]
        wrong = next(letter for letter in options if letter != answer)
        image = load_medical_image(pydicom.data.get_testdata_file(file))
        records.append(
            Record(
                dataset="tiny",
                split="train",
                source_id=str(i),
                question=f"{question}{f' (question {i})' if numbered else ''} [script:{answer}_{wrong}]",
                answer=answer,
                question_type="multiple_choice",
                options=options,
                images=[ImageRef(name=file, pil=image)],
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tiny_medvr.parquet"
    write_records(records, path, progress=False)
    return path


# GSM8K-format rows (veRL's examples/data_preprocess/gsm8k.py schema): question, answer, wrong answer
GSM8K_QUESTIONS = (
    (
        "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips "
        "did she sell altogether in April and May?",
        "72",
        "96",
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting. How much did she earn?",
        "10",
        "12",
    ),
)
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def build_gsm8k_data(out: Path, num_questions: int = 4) -> Path:
    """``out/tiny_gsm8k.parquet``: text-only rows in the format of veRL's GSM8K preprocessing
    (``data_source="openai/gsm8k"``, no images), each with a ``[script:RIGHT_WRONG]`` marker for
    :class:`medvr_verl.cpu.script.AnswerAfterHashes`."""
    import pandas as pd

    rows = []
    for i in range(num_questions):
        question, answer, wrong = GSM8K_QUESTIONS[i % len(GSM8K_QUESTIONS)]
        rows.append(
            {
                "data_source": "openai/gsm8k",
                "prompt": [{"role": "user", "content": f"{question} {GSM8K_INSTRUCTION} [script:{answer}_{wrong}]"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": answer},
                "extra_info": {"split": "train", "index": i, "answer": answer, "question": question},
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tiny_gsm8k.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def stock_command(
    model: Path, data: Path, out: Path, *, reward_manager: str = "medvr_cca", n: int = 4, batch_size: int = 2
) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with veRL's stock ``ppo_trainer`` (GRPO, V1 trainer), the
    CPU overlay found through ``hydra.searchpath`` and ``reward.reward_manager.name=<reward_manager>``,
    one step with the tiny model and the scripted GSM8K answers: how a user drops ``medvr_cca`` into a
    recipe of their own (README, "Use medvr_cca in your recipe")."""
    rollouts = n * batch_size
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "hydra.searchpath=[pkg://medvr_verl.recipes.medvr]",
        "+backend=cpu",
        "algorithm.adv_estimator=grpo",
        f"reward.reward_manager.name={reward_manager}",
        f"data.train_files={data}",
        f"data.val_files={data}",
        f"data.train_batch_size={batch_size}",
        "data.max_prompt_length=256",
        "data.max_response_length=64",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={rollouts}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={rollouts}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={rollouts}",
        f"actor_rollout_ref.rollout.n={n}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.custom.cpu.policy=scripted",
        "actor_rollout_ref.rollout.custom.cpu.script=medvr_verl.cpu.script.AnswerAfterHashes",
        "reward.num_workers=1",
        "trainer.total_training_steps=1",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.resume_mode=disable",
        "trainer.logger=[console,file]",
        "trainer.experiment_name=tiny_gsm8k",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"trainer.rollout_data_dir={out / 'rollouts'}",
        f"hydra.run.dir={out / 'hydra'}",
    ]


def backend_overrides(backend: str, *, policy: str = "scripted", out: Path | None = None) -> list[str]:
    """What differs between the CPU and the GPU run."""
    if backend == "cpu":
        items = ["+backend=cpu", f"actor_rollout_ref.rollout.custom.cpu.policy={policy}"]
        if out is not None:
            items.append(f"actor_rollout_ref.rollout.custom.cpu.weight_log={out / 'rollout_weights.jsonl'}")
        return items
    if backend == "cpu_vllm":
        # the random model never writes a zoom call in free text, so vLLM decodes under medvr_vllm's
        # template (rollout.custom.vllm.constrained): the model samples the zoom cell and the answer,
        # EVR sees their entropies and forks at qualified calls. raw_logprobs: the rollout's log-probs
        # are the model's, as the actor recomputes them (processed ones would be the template's).
        # evr.p_base=1: a qualifying call branches with P = 1 (the recipe's 0.2 + 0.5 dH is ~0.3 at the
        # template's dH ~0.2, and 4 calls a step would often leave every fork slot to the fallback).
        # A small entropy bonus keeps the actor's update non-zero when a group's rewards all agree,
        # so step 2's KL is positive and the weight sync carries a changed actor.
        return [
            "+backend=cpu_vllm",
            "actor_rollout_ref.rollout.custom.vllm.constrained.enable=true",
            "actor_rollout_ref.rollout.logprobs_mode=raw_logprobs",
            "actor_rollout_ref.rollout.custom.evr.p_base=1.0",
            "actor_rollout_ref.actor.entropy_coeff=0.01",
        ]
    if backend == "gpu":
        return [
            "trainer.n_gpus_per_node=1",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
            "actor_rollout_ref.rollout.enforce_eager=true",
            "actor_rollout_ref.rollout.load_format=auto",
        ]
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def overrides(
    model: Path,
    data: Path,
    out: Path,
    *,
    steps: int = 2,
    backend: str = "cpu",
    policy: str = "scripted",
    n: int = 4,
    batch_size: int = 2,
    save_freq: int = -1,
    resume: bool = False,
) -> list[str]:
    """The recipe scaled to the tiny model (shared by both backends) + :func:`backend_overrides`."""
    rollouts = n * batch_size
    return [
        f"data.train_files={data}",
        f"data.val_files={data}",
        f"data.train_batch_size={batch_size}",
        f"data.max_prompt_length={MAX_PROMPT_LENGTH}",
        f"data.max_response_length={MAX_RESPONSE_LENGTH}",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={rollouts}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={rollouts}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={rollouts}",
        f"actor_rollout_ref.rollout.n={n}",
        # a visible step on a random-weight model: 1e-6 would leave the weights almost unchanged
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.custom.evr.seed=0",
        # our variant: random weights give flat entropies, so the paper's `fresh` would fork nothing
        f"actor_rollout_ref.rollout.custom.evr.fallback={EVR_FALLBACK}",
        "reward.num_workers=1",
        "reward.reward_kwargs.group_timeout_s=120",
        "trainer.nnodes=1",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        f"trainer.save_freq={save_freq}",
        f"trainer.resume_mode={'auto' if resume else 'disable'}",
        "trainer.logger=[console,file]",
        "trainer.experiment_name=tiny",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"trainer.rollout_data_dir={out / 'rollouts'}",
        f"actor_rollout_ref.rollout.custom.viz.dir={out / 'viz'}",
        "actor_rollout_ref.rollout.custom.viz.interval=1",
        f"hydra.run.dir={out / 'hydra'}",
        *backend_overrides(backend, policy=policy, out=out),
    ]


VAL_ONLY_KEYS = ("trainer.val_only", "trainer.val_before_train", "trainer.validation_data_dir")


def val_only_overrides(val_files: list[Path], dump_dir: Path) -> list[str]:
    """The evaluation run (README, "Evaluation"): veRL's ``val_only`` over ``val_files``, each
    sample with its ``reward_extra_info`` dumped to ``dump_dir/<step>.jsonl`` for
    ``python -m medvr_verl.eval report``. veRL builds the training dataloader even then: it reads
    the first val file."""
    files = ",".join(str(f) for f in val_files)
    return [
        "trainer.val_only=true",
        "trainer.val_before_train=true",
        f"trainer.validation_data_dir={dump_dir}",
        f"data.val_files=[{files}]",
        f"data.train_files=[{val_files[0]}]",
        # no reference model: nothing is trained, so the KL term is never computed
        "actor_rollout_ref.actor.use_kl_loss=false",
    ]


def val_only_command(model: Path, val_files: list[Path], out: Path, *, backend: str = "cpu", **kwargs) -> list[str]:
    """:func:`command` turned into an evaluation: :func:`val_only_overrides` with the dump in
    ``out/validation``, nothing else changed (the same model, lengths and backend)."""
    replaced = {*VAL_ONLY_KEYS, "data.val_files", "data.train_files", "actor_rollout_ref.actor.use_kl_loss"}
    base = overrides(model, val_files[0], out, backend=backend, **kwargs)
    base = [o for o in base if o.split("=")[0] not in replaced]
    return medvr_main_ppo([*base, *val_only_overrides(val_files, out / "validation")])


def medvr_main_ppo(override_list: list[str]) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with the MedVR recipe and ``override_list``."""
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "--config-path=pkg://medvr_verl.recipes.medvr",
        "--config-name=medvr",
        *override_list,
    ]


def command(model: Path, data: Path, out: Path, **kwargs) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with the MedVR recipe and :func:`overrides`."""
    return medvr_main_ppo(overrides(model, data, out, **kwargs))


def environment(
    backend: str, out: Path, base: dict[str, str] | None = None, metrics: str = "metrics.jsonl"
) -> dict[str, str]:
    """The run's environment: offline HF, metrics (veRL's ``file`` logger) to ``out/metrics``,
    ``VERL_PLATFORM=cpu`` on CPU (veRL resolves its platform at import, before Hydra runs)."""
    env = dict(os.environ if base is None else base)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        VERL_FILE_LOGGER_PATH=str(out / metrics),
    )
    if backend in ("cpu", "cpu_vllm"):
        env["VERL_PLATFORM"] = "cpu"
    else:
        env.pop("VERL_PLATFORM", None)
    return env


def kill_run(proc: subprocess.Popen, timeout: float = 60) -> list:
    """SIGKILL a run started with ``start_new_session=True``: its process group and every descendant
    that left it (Ray's raylet, GCS and workers may). Returns the descendants still running (zombies
    excluded) after ``timeout`` seconds, which should be none."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=timeout)
    _, alive = psutil.wait_procs(family, timeout=timeout / 2)
    running = []
    for child in alive:  # a zombie waits for a reaper, it runs nothing
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                running.append(child)
        except psutil.NoSuchProcess:
            pass
    return running
