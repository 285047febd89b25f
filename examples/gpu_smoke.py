"""A few real ``main_ppo`` steps of the MedVR recipe with the tiny Qwen2.5-VL, on one GPU.

    python examples/gpu_smoke.py [--steps 2] [--out /tmp/medvr_smoke]

The same run as the CPU demo and tests/test_main_ppo_on_cpu.py, built by the same code
(:mod:`medvr_verl.cpu.tiny_run`: data, recipe ``--config-path=pkg://medvr_verl.recipes.medvr
--config-name=medvr`` scaled to the tiny model); only the backend differs: vLLM rollout through
``medvr_vllm`` on the GPU, FSDP actor and reference on the GPU, the recipe's own strategy and
attention. Checks what veRL wrote (its ``file`` logger): every step ran, ``actor/grad_norm > 0``,
``actor/kl_loss > 0`` by step 2. Exits non-zero when training or a check fails.
tests/test_main_ppo_smoke_on_gpu.py runs it (skipped without a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def command(model: Path, data: Path, out: Path, steps: int = 2) -> list[str]:
    """The GPU run's ``python -m verl.trainer.main_ppo`` command (:func:`medvr_verl.cpu.tiny_run.command`)."""
    from medvr_verl.cpu import tiny_run

    return tiny_run.command(model, data, out, steps=steps, backend="gpu")


def check(out: Path, steps: int) -> list[str]:
    """Problems with the run's metrics (empty when the run trained as it should)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return [f"no metrics file {path}"]
    metrics = {rec["step"]: rec["data"] for rec in map(json.loads, path.read_text().splitlines()) if rec}
    problems = []
    if sorted(metrics) != list(range(1, steps + 1)):
        problems.append(f"steps logged: {sorted(metrics)}, expected 1..{steps}")
    problems += [
        f"step {s}: actor/grad_norm {m.get('actor/grad_norm')}"
        for s, m in metrics.items()
        if not m.get("actor/grad_norm", 0) > 0
    ]
    if steps >= 2 and not metrics.get(2, {}).get("actor/kl_loss", 0) > 0:
        problems.append(f"step 2: actor/kl_loss {metrics.get(2, {}).get('actor/kl_loss')}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/medvr_smoke"))
    args = parser.parse_args(argv)
    from medvr_verl.cpu import tiny_run
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = tiny_run.build_data(out)
    cmd = command(tiny_qwen25vl_path(), data, out, steps=args.steps)
    print(" ".join(cmd), flush=True)
    code = subprocess.run(cmd, env=tiny_run.environment("gpu", out)).returncode
    if code != 0:
        return code
    problems = check(out, args.steps)
    for problem in problems:
        print("FAILED:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
