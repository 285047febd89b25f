"""Resume and stop under faults. SLOW: three real ``main_ppo`` runs, 3-4.5 min on 2 cores (each 55-90 s).

Real ``python -m verl.trainer.main_ppo`` runs of the MedVR recipe on CPU (``medvr_verl.cpu.tiny_run``,
8 numbered questions, 2 per step), each started in its own session so the test owns its process
group:

1. **Driver killed while a checkpoint is written.** 3 steps, a checkpoint every step. When
   ``global_step_2`` appears while veRL's ``latest_checkpointed_iteration.txt`` still says 1, the
   whole group gets SIGKILL. The rerun (``resume_mode=auto``) must resume from the last complete
   checkpoint (step 1, the tracker veRL writes after everything else), reload step 1's dataloader
   state and train steps 2 and 3 on exactly the rows an uninterrupted run trains on (veRL's own
   sampler, seeded as in the run): no step trained twice, no batch skipped. Checked on what veRL
   writes: the ``file`` logger's steps, the rollout dumps' questions, ``data.pt``, and the rollout
   server's weight-sync log (the resumed policy is step 1's).
2. **Rollout server killed during generation.** The ``medvr_cpu`` server actor's process gets
   SIGKILL right after it starts generating step 1; the run must end within a bounded time with one
   line naming the dead actor.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from medvr_verl.cpu.tiny_run import kill_run

pytestmark = pytest.mark.vl_stack

RUN_TIMEOUT_S = 600
SERVER_DEATH_BOUND_S = 60
"""How long the run may take to stop once its rollout server died."""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _start(
    out: Path, log_name: str, metrics: str, extra: tuple[str, ...] = (), **kwargs
) -> tuple[subprocess.Popen, Path]:
    """``main_ppo`` in a new session (its process group is ours to kill), output to ``out/log_name``;
    ``extra`` overrides go last."""
    from medvr_verl.cpu import tiny_run
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    data = out / "tiny_medvr.parquet"
    if not data.exists():
        tiny_run.build_data(out, numbered=True)
    cmd = [*tiny_run.command(tiny_qwen25vl_path(), data, out, **kwargs), *extra]
    log = out / log_name
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            cmd,
            env=tiny_run.environment("cpu", out, metrics=metrics),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def _kill_run(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group and every descendant that left it (Ray's own processes)."""
    running = kill_run(proc)
    assert not running, f"processes of the killed run still running: {running}"


def _questions(rows: list[dict]) -> list[int]:
    """The dataset rows (question numbers) a rollout dump holds, in order of first appearance."""
    seen = []
    for row in rows:
        number = int(re.search(r"\(question (\d+)\)", row["input"]).group(1))
        if number not in seen:
            seen.append(number)
    return seen


def _sampler_order(out: Path, num_rows: int, batch_size: int, steps: int) -> list[list[int]]:
    """The rows veRL's train dataloader yields per step for this run's data config (its own
    ``create_rl_sampler`` and ``StatefulDataLoader``, over the row numbers instead of the rows)."""
    from omegaconf import OmegaConf
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_sampler

    config = OmegaConf.load(out / "hydra" / ".hydra" / "config.yaml")
    rows = list(range(num_rows))
    loader = StatefulDataLoader(
        rows, batch_size=batch_size, drop_last=True, sampler=create_rl_sampler(config.data, rows)
    )
    batches, it = [], iter(loader)
    while len(batches) < steps:
        try:
            batches.append(sorted(int(i) for i in next(it)))
        except StopIteration:
            it = iter(loader)
    return batches


@pytest.fixture(scope="module")
def killed_in_save(tmp_path_factory):
    """3 steps, checkpoint each step; SIGKILL the group while step 2's checkpoint is being written."""
    out = tmp_path_factory.mktemp("kill_in_save")
    checkpoints = out / "checkpoints"
    step_dir, tracker = checkpoints / "global_step_2", checkpoints / "latest_checkpointed_iteration.txt"
    proc, log = _start(out, "main_ppo_killed.log", "metrics.jsonl", steps=3, save_freq=1)
    deadline, seen = time.monotonic() + RUN_TIMEOUT_S, None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if step_dir.exists() and (tracker.read_text().strip() if tracker.exists() else "") != "2":
                _kill_run(proc)
                seen = sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*"))
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            _kill_run(proc)
    assert seen is not None, f"global_step_2 never appeared (exit {proc.returncode}):\n" + log.read_text()[-4000:]
    print(f"killed while global_step_2 held {seen}")
    return out, seen


@pytest.fixture(scope="module")
def resumed(killed_in_save):
    out, _ = killed_in_save
    proc, log = _start(out, "main_ppo_resumed.log", "metrics_resumed.jsonl", steps=3, save_freq=1, resume=True)
    try:
        code = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            _kill_run(proc)
    text = log.read_text()
    assert code == 0, text[-4000:]
    return out, text


def test_the_kill_landed_inside_the_save(killed_in_save):
    out, _ = killed_in_save  # what global_step_2 held at the kill is printed (-s)
    checkpoints = out / "checkpoints"
    # veRL writes the tracker last: it still names step 1, whose checkpoint is whole
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    assert (checkpoints / "global_step_1" / "data.pt").exists()
    assert sorted(r["step"] for r in _jsonl(out / "metrics.jsonl")) == [1]
    assert (out / "rollouts" / "1.jsonl").exists() and not (out / "rollouts" / "2.jsonl").exists()


def test_rerun_resumes_from_the_last_complete_checkpoint_without_repeating_or_skipping(killed_in_save, resumed):
    import torch

    out, log = resumed
    checkpoints = out / "checkpoints"
    assert re.search(r"Found checkpoint: \S*\s*\S*global_step_1\b", log), "resumed from another checkpoint"
    assert sorted(r["step"] for r in _jsonl(out / "metrics_resumed.jsonl")) == [2, 3]
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    # each step's dataloader state counts exactly the batches trained so far
    for step in (1, 2, 3):
        state = torch.load(checkpoints / f"global_step_{step}" / "data.pt", weights_only=False)
        assert state["_num_yielded"] == step, (step, state)
    # the rows of steps 1 (killed run), 2 and 3 (rerun) are the uninterrupted order of veRL's sampler
    seen = [sorted(_questions(_jsonl(out / "rollouts" / f"{step}.jsonl"))) for step in (1, 2, 3)]
    assert seen == _sampler_order(out, num_rows=8, batch_size=2, steps=3)
    # the rerun's policy is step 1's: its first weight sync carries what the killed run synced after step 1
    syncs = _jsonl(out / "rollout_weights.jsonl")
    killed = [s for s in syncs if s["version"] <= 2][:2]
    rerun = syncs[len(killed) :]
    assert [s["global_steps"] for s in killed] == [0, 1]
    assert [s["global_steps"] for s in rerun] == [1, 2, 3]
    assert rerun[0]["fingerprint"] == killed[1]["fingerprint"]


def test_a_rollout_server_killed_during_generation_ends_the_run_with_one_line(tmp_path):
    """SIGKILL the ``medvr_cpu`` server's process right after it starts generating step 1.

    The server's answer turns block it (:class:`medvr_verl.testing.scripting.HoldAnswers`), so the
    kill lands while requests are in flight even when Ray forwards the server's log late (without
    the hold, step 1's generation could end before the test saw it start: the death then surfaces
    in veRL's next call to the server, not in a session).
    """
    out = tmp_path
    hold = "actor_rollout_ref.rollout.custom.cpu.script=medvr_verl.testing.scripting.HoldAnswers"
    proc, log = _start(out, "main_ppo.log", "metrics.jsonl", extra=(hold,), steps=2)
    started = re.compile(r"generating with weights v1 .*actor (\S+) pid (\d+)")
    killed_at = pid = actor = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if killed_at is None:
                match = started.search(log.read_text())
                if match:
                    actor, pid = match.group(1), int(match.group(2))
                    os.kill(pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    deadline = killed_at + SERVER_DEATH_BOUND_S
            time.sleep(0.05)
        ended_after = time.monotonic() - killed_at if killed_at is not None else None
    finally:
        if proc.poll() is None:
            _kill_run(proc)
    text = log.read_text()
    assert killed_at is not None, "the rollout server never started generating:\n" + text[-4000:]
    assert proc.returncode not in (None, 0) and ended_after < SERVER_DEATH_BOUND_S, (
        f"still running {SERVER_DEATH_BOUND_S} s after the server died:\n" + text[-4000:]
    )
    assert not (out / "rollouts" / "1.jsonl").exists()  # it died during step 1's generation
    # the run's own error: one line naming the actor, its class, pid and the step
    line = (
        f"RolloutServerDiedError: medvr: rollout server {actor} (CPURolloutServer, pid {pid}) "
        "died during generation of step 1"
    )
    lines = [row for row in text.splitlines() if line in row]
    assert lines, text[-6000:]
    print(f"server killed during generation: run ended {ended_after:.1f} s later with: {lines[-1]}")
