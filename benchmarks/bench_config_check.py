"""How fast a settings typo is reported, against veRL's own import time measured in the same run.

Run from anywhere (about 1-2 minutes on 2 cores):

    python benchmarks/bench_config_check.py [--reps 3]

Each repetition runs, interleaved, three fresh processes and takes their wall time:

* baseline: ``python -c "import verl.trainer.main_ppo"``, the floor of any ``main_ppo`` run (veRL's
  ``__init__`` loads torch, tensordict and Ray before Hydra reads an argument);
* main_ppo: ``python -m verl.trainer.main_ppo --config-path=pkg://medvr_verl.recipes.medvr
  --config-name=medvr ... actor_rollout_ref.rollout.custom.evr.top_k=2.5``: the recipes' Hydra
  callback (``medvr_verl.config_check.CheckMedVRSettings``) stops it before Ray starts;
* light check: ``python -m medvr_verl.config_check`` with the same arguments (the config composed as
  ``main_ppo`` composes it, against veRL's config folder, without importing veRL).

Each run must exit 1 with the setting named (``top_k must be an integer``).

Verdicts (exit 0 when both hold), on medians:

1. light check < 5 s wall time: the issue's target for a typo report on these machines;
2. main_ppo's report minus the baseline < 5 s: what the check adds after veRL's own import (the part
   this plugin controls; ``main_ppo`` cannot report anything before veRL is imported).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGET_S = 5.0
TYPO = "actor_rollout_ref.rollout.custom.evr.top_k=2.5"
MESSAGE = "top_k must be an integer"
ARGS = [
    "--config-path=pkg://medvr_verl.recipes.medvr",
    "--config-name=medvr",
    "data.train_files=/nonexistent/train.parquet",
    "data.val_files=/nonexistent/test.parquet",
    TYPO,
]
RUNS = {
    "baseline (import verl.trainer.main_ppo)": ([sys.executable, "-c", "import verl.trainer.main_ppo"], None),
    "main_ppo typo": ([sys.executable, "-m", "verl.trainer.main_ppo", *ARGS], MESSAGE),
    "light check typo": ([sys.executable, "-m", "medvr_verl.config_check", *ARGS], MESSAGE),
}


def timed(command: list[str], message: str | None) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if message is None:
        if result.returncode != 0:
            raise SystemExit(f"{command} failed:\n{result.stderr[-2000:]}")
    elif result.returncode != 1 or message not in result.stderr:
        raise SystemExit(f"{command} did not report the typo (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    for rep in range(args.reps):
        for name, (command, message) in RUNS.items():
            times[name].append(timed(command, message))
            print(f"rep {rep + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
    med = {name: statistics.median(values) for name, values in times.items()}
    print()
    for name, value in med.items():
        print(f"median {name}: {value:.2f} s")
    light = med["light check typo"]
    overhead = med["main_ppo typo"] - med["baseline (import verl.trainer.main_ppo)"]
    verdicts = [
        (f"light check reports a typo in {light:.2f} s < {TARGET_S:.0f} s", light < TARGET_S),
        (f"main_ppo's check adds {overhead:.2f} s after veRL's import < {TARGET_S:.0f} s", overhead < TARGET_S),
    ]
    print()
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
