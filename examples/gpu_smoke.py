"""A few real ``main_ppo`` steps of the MedVR recipe with the tiny Qwen2.5-VL, on one GPU.

    python examples/gpu_smoke.py [--steps 2] [--out /tmp/medvr_smoke]

Builds the tiny random-weight model and a 16-question parquet from pydicom's bundled CT/MR images
(``medvr_verl.data.write_records``), then runs ``python -m verl.trainer.main_ppo`` with
``--config-path=pkg://medvr_verl.recipes.medvr --config-name=medvr`` scaled down to one GPU: vLLM
rollout through ``medvr_vllm`` and ``EVRAgentLoopManager``, ``medvr_cca`` rewards, FSDP actor and
reference, GRPO updates. Exits non-zero when training fails. tests/test_main_ppo_smoke_on_gpu.py runs
it (skipped without a GPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def build_data(out: Path) -> Path:
    import pydicom.data

    from medvr_verl.data import ImageRef, Record, write_records
    from medvr_verl.tools.image_io import load_medical_image

    records = []
    for i in range(16):
        file = ["CT_small.dcm", "MR_small.dcm"][i % 2]
        image = load_medical_image(pydicom.data.get_testdata_file(file))
        records.append(
            Record(
                dataset="smoke",
                split="train",
                source_id=str(i),
                question="Which imaging modality produced this image?",
                answer="A" if i % 2 == 0 else "B",
                question_type="multiple_choice",
                options={"A": "CT", "B": "MRI", "C": "X-ray"},
                images=[ImageRef(name=file, pil=image)],
            )
        )
    path = out / "smoke.parquet"
    write_records(records, path, progress=False)
    return path


def command(model: Path, data: Path, out: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        "--config-path=pkg://medvr_verl.recipes.medvr",
        "--config-name=medvr",
        f"data.train_files={data}",
        f"data.val_files={data}",
        "data.train_batch_size=4",
        "data.max_prompt_length=1024",
        "data.max_response_length=512",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
        "actor_rollout_ref.rollout.enforce_eager=true",
        "actor_rollout_ref.rollout.load_format=auto",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"actor_rollout_ref.rollout.custom.viz.dir={out / 'viz'}",
        "actor_rollout_ref.rollout.custom.viz.interval=1",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/medvr_smoke"))
    args = parser.parse_args(argv)
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    args.out.mkdir(parents=True, exist_ok=True)
    cmd = command(tiny_qwen25vl_path(), build_data(args.out), args.out, args.steps)
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
