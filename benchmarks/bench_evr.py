"""EVR's wall-clock against M independent samples, through veRL's V1 worker, measured in the same run.

Run from the repository root (about 2-3 minutes on 2 cores):

    python benchmarks/bench_evr.py                 # the stand-in engine: a MODEL of GPU-scale costs
    python benchmarks/bench_evr.py --engine vllm   # vLLM's real engine (CPU build, ./.venv-vllm)

``--engine vllm`` is :mod:`evr_on_vllm` (its docstring: workload, verdicts). What follows is the
default ``--engine model``: its makespan ratio follows from the simulated engine's cost formula
below and its forks' token ratio from the script's lengths, so it is arithmetic about a GPU-scale
engine, not a measurement of one; the real engine's numbers come from ``--engine vllm``.

Workload: 4 prompts x M=8 samples of the tiny offline Qwen2.5-VL (its real tokenizer, processor and
tool chat template), each prompt one 448x448 PNG file (256 image tokens). A sample writes a
~150-token thought and a zoom call (turn 1), gets the crop back (64 image tokens) and writes a
~60-token answer (turn 2). Thoughts differ from sample to sample. The scripted server returns
per-token entropies: flat (0.1 nats), with a spike (3.0 nats) on the zoom coordinates of every base
sample (scenario "all uncertain") or of odd ones only ("half uncertain"); EVR settings are the
recipe's ``gamma 0.5, p_base 0.2, threshold 0.1``, so a spiking call (dH 2.9) branches with P = 1
and a flat one never qualifies.

Runs, each through ``MedVRAgentLoopManagerTQ`` (veRL's V1 ``AgentLoopManagerTQ`` with this plugin's
worker, one agent-loop worker), a real in-process TransferQueue, ``medvr_cca`` reward workers and
veRL's ``ReplayBuffer`` (this plugin's subclass), as ``PPOTrainer`` drives them:

* independent: ``evr.enable false``, 8 fresh samples per prompt;
* two-phase EVR, all uncertain: 4 bases, forks planned when all 4 finished;
* streaming EVR, all uncertain: 4 bases, each spiking zoom call forks at once;
* streaming EVR, half uncertain: 2 forks at the spikes, 2 by the ``top_dh`` fallback (ours; the
  recipe's default ``fresh`` would make them fresh samples) after the bases.

Simulated server (:class:`SimulatedServer`, a ``ScriptedLLMClient`` whose answers wait on
:class:`ContinuousBatchingEngine`): one engine with continuous batching. Every in-flight request
advances one token per engine step; a step takes ``STEP_S + PER_SEQ_S * running requests``, so
each request slows down as concurrency grows; a new request first stalls the engine for
``PREFILL_S_PER_TOKEN * prefilled tokens`` (its prompt minus what the prefix cache holds: the
longest common prefix with any earlier request's prompt + response, as vLLM's automatic prefix
caching with sticky sessions on one server). So latency grows with generated tokens, prefilled
tokens and concurrency. The worker's own CPU work (chat templates, image processing, rewards) runs
for real on top.

Measured per run: batch makespan (driver side: from ``generate_sequences`` until the replay buffer
has every group terminal) and per group the time from its start to its last row (the worker's
``medvr/group_time_s`` metric); generated tokens per row (response-mask tokens; for a fork minus
the prefix it shares with its base); original-image decodes per prompt (``medvr/image_decodes``).
Configurations are interleaved and repeated (``--reps``, default 3); ratios use the medians.
Separately, in this process: the zoom tool on a 4096x4096 PNG original, 8 samples zooming at once
through one shared ``OriginalImages``, against a heartbeat coroutine that measures the longest
event-loop stall.

Verdicts (exit 0 when all hold):

1. streaming EVR batch makespan <= 1.10x independent sampling (all uncertain): EVR is only worth
   its tokens if a step does not wait longer for it; a step waits for its slowest group.
2. forks' generated tokens <= 0.5x fresh samples' (same slots of the independent run): a fork must
   reuse its base's prefix instead of writing it again, else it costs what a fresh sample costs.
3. original-image decodes per prompt == 1: M samples and their forks share one decode.
4. longest event-loop stall while 8 samples zoom into a 4096x4096 original < 5 ms, measured as the
   longest event-loop step in main-thread CPU time (a loaded shared machine delays a heartbeat by
   tens of ms with no work at all; that wall-clock figure is printed beside an idle baseline): every
   agent loop of a worker shares its event loop; a decode there (hundreds of ms) stalls all of them.

Not gated, printed: two-phase makespan (bases, then forks: about base + fork time) and streaming
with half the budget left to the fallback (those forks start when the bases finish, so that group
takes a fork's tail longer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VERL_LOGGING_LEVEL", "WARN")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # run from a checkout, uninstalled

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medvr_verl.testing.scripted_server import ScriptedLLMClient  # noqa: E402
from medvr_verl.testing.scripting import SpikeEntropies, is_fork_request, medvr_config, zoom_call  # noqa: E402

TARGET_MAKESPAN_RATIO = 1.10
TARGET_FORK_TOKENS_RATIO = 0.50
TARGET_DECODES_PER_PROMPT = 1
TARGET_STALL_S = 0.005
IMAGE_SIDE = 448  # = sqrt(tiny processor max_pixels): the model sees 448x448 (256 image tokens)
BASE_BOX = [0, 0, 224, 224]  # model-space pixels: the top-left quadrant (a 64-token crop)
THOUGHT_TOKENS = 150
ANSWER_TOKENS = 60
LOW, SPIKE = 0.1, 3.0  # nats: scripted per-token entropies
# simulated engine (seconds)
STEP_S = 0.025
PER_SEQ_S = 0.0005
PREFILL_S_PER_TOKEN = 0.00005
# our top_dh fallback: in "half uncertain" the 2 slots no spike took fork too (the paper's fresh would
# make them fresh samples, which the independent run already measures)
EVR_SETTINGS = "gamma: 0.5, p_base: 0.2, threshold: 0.1, seed: 0, fallback: top_dh"
MC = {"question_type": "multiple_choice", "options": {"A": "left lung", "B": "right lung"}}
WORDS = (
    "the opacity margin lung field nodule apex base hilum lobe dense faint round spiculated border "
    "contour shadow rib overlap vessel pleura effusion left right upper lower middle region appears "
    "looks maybe possibly clearly calcified soft tissue air bronchogram consolidation"
).split()


def text_of_length(tokenizer, rng: random.Random, target: int, opening: str, closing: str) -> str:
    """``<think>opening words...</think>closing`` of about ``target`` tokens."""
    words = [opening]
    while len(tokenizer.encode("<think>" + " ".join(words) + "</think>" + closing)) < target:
        words.append(rng.choice(WORDS))
    return "<think>" + " ".join(words) + "</think>" + closing


class EVRBenchScript:
    """``ScriptedLLMClient`` script: thought + zoom call, then an answer; forks resample the box.

    ``thoughts[key][k]`` is the k-th turn-1 sample of prompt ``key`` (k counts turn-1 calls per key
    in this process); every ``spike_every``-th k (1: all, 2: odd ones) gets an entropy spike on the
    zoom call from its coordinates on. A request
    whose context ends with ``"bbox_2d":`` is a fork: it gets the j-th box of a per-key counter (all
    224x224 model pixels, so every crop is 64 tokens like the base crops).
    """

    def __init__(self, model_path: str, thoughts: dict[str, list[str]], answer: str, spike_every: int = 1):
        self.spike_every = spike_every
        self.entropies = SpikeEntropies(model_path, LOW, SPIKE)
        self.thoughts = thoughts
        self.answer = answer
        self._base: dict[str, itertools.count] = {}
        self._fork: dict[str, itertools.count] = {}

    def __call__(self, ctx):
        from medvr_verl.testing.scripted_server import ScriptedTurn

        if is_fork_request(ctx.text):  # a fork: new coordinates
            j = next(self._fork.setdefault(ctx.key, itertools.count()))
            box = [224 - 16 * (j % 8), 224, 448 - 16 * (j % 8), 448]
            return ScriptedTurn(" " + json.dumps(box) + "}}</tool_call>", extra_fields=self._entropies(False))
        if ctx.turn == 0:
            k = next(self._base.setdefault(ctx.key, itertools.count()))
            text = self.thoughts[ctx.key][k % len(self.thoughts[ctx.key])] + zoom_call(BASE_BOX)
            return ScriptedTurn(text, extra_fields=self._entropies(k % self.spike_every == self.spike_every - 1))
        return ScriptedTurn(self.answer, extra_fields=self._entropies(False))

    def _entropies(self, spike: bool):
        return self.entropies.turn(spike)


def synthetic_image(side: int, seed: int) -> Image.Image:
    """A smooth synthetic 'radiograph' with noise, RGB, ``side`` x ``side``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = 120 + 80 * np.exp(-((xx - 0.35) ** 2 + (yy - 0.45) ** 2) / 0.02)
    pixels = np.clip(base + rng.normal(0, 12, size=(side, side)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").convert("RGB")


class ContinuousBatchingEngine:
    """A fluid model of one vLLM engine with continuous batching (module docstring), in real time.

    Between two events (a request arrives or finishes) the batch is fixed, so every running request
    gains ``elapsed / step`` tokens with ``step = STEP_S + PER_SEQ_S * running``; an arrival first
    stalls the whole engine for its prefill.
    """

    def __init__(self):
        self.running: dict[int, list] = {}  # id -> [tokens left, future]
        self.stall_s = 0.0
        self.seen: list[np.ndarray] = []  # prefix cache: sequences already computed
        self.prefilled = 0
        self.generated = 0
        self._wake = asyncio.Event()
        self._task = None
        self._ids = itertools.count()

    def cached(self, prompt: np.ndarray) -> int:
        best = 0
        for seq in self.seen:
            n = min(len(seq), len(prompt))
            diff = np.flatnonzero(seq[:n] != prompt[:n])
            best = max(best, int(diff[0]) if len(diff) else n)
        return min(best, len(prompt) - 1)  # vLLM recomputes the last prompt token

    async def serve(self, prompt_ids: list[int], response_ids: list[int]) -> None:
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        prefill = len(prompt) - self.cached(prompt)
        self.seen.append(np.concatenate([prompt, np.asarray(response_ids, dtype=np.int64)]))
        self.prefilled += prefill
        self.generated += len(response_ids)
        future = asyncio.get_running_loop().create_future()
        self.running[next(self._ids)] = [float(max(len(response_ids), 1)), future]
        self.stall_s += PREFILL_S_PER_TOKEN * prefill
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.running:
            if self.stall_s > 0:
                stall, self.stall_s = self.stall_s, 0.0
                await asyncio.sleep(stall)
                continue
            step = STEP_S + PER_SEQ_S * len(self.running)
            horizon = min(left for left, _ in self.running.values()) * step
            self._wake.clear()
            start = loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), horizon)
            progress = (loop.time() - start) / step
            for key, entry in list(self.running.items()):
                entry[0] -= progress
                if entry[0] <= 1e-6:
                    del self.running[key]
                    entry[1].set_result(None)


_ENGINE: ContinuousBatchingEngine | None = None


class SimulatedServer(ScriptedLLMClient):
    """The scripted answer, returned when :class:`ContinuousBatchingEngine` has generated it.

    One engine per process (the benchmark runs one agent-loop worker, so one server sees every request).
    """

    async def generate(self, request_id, *, prompt_ids, **kwargs):
        global _ENGINE
        output = await super().generate(request_id, prompt_ids=prompt_ids, **kwargs)
        if _ENGINE is None:
            _ENGINE = ContinuousBatchingEngine()
        from verl.utils import normalize_token_ids

        await _ENGINE.serve(list(normalize_token_ids(prompt_ids)), list(output.token_ids))
        return output


def write_images(directory: Path, prompts: int) -> list[str]:
    paths = []
    for i in range(prompts):
        path = directory / f"case{i}.png"
        synthetic_image(IMAGE_SIDE, seed=i).save(path)
        paths.append(str(path))
    return paths


def make_config(model_path, m: int, evr: str):
    custom = f"+actor_rollout_ref.rollout.custom={{evr: {{{evr}}}}}"
    return medvr_config(model_path, [custom], n=m, num_workers=1, prompt_length=1024, response_length=512)


def run_step(manager, samples: list[dict], global_steps: int) -> dict:
    """One rollout as veRL's V1 ``PPOTrainer`` drives it (as ``medvr_verl.testing.harness.run_manager_v1``,
    with a manager reused across steps); returns makespan, metrics and per-row generated tokens."""
    import transfer_queue as tq

    from medvr_verl.testing.harness import register_prompts_v1, sync_replay_buffer

    uids = [uuid.uuid4().hex for _ in samples]
    batch = register_prompts_v1(samples, global_steps=global_steps, uids=uids)
    sampler = sync_replay_buffer(poll_interval=0.01)
    start = time.perf_counter()
    manager.generate_sequences(batch)
    meta, metrics = sampler.sample(global_steps=global_steps, partition_id="train", batch_size=len(samples))
    makespan = time.perf_counter() - start
    rows = tq.kv_batch_get(keys=meta.keys, partition_id="train")
    tq.kv_clear(keys=meta.keys, partition_id="train")
    generated, slots = [], []
    for pos, key in enumerate(meta.keys):
        mask = rows["response_mask"][pos]
        tokens = int(mask.sum())
        fork = rows["extra_fields"][pos].get("medvr_fork")
        if fork is not None:  # its shared prefix was generated by its base
            prompt_len = int(rows["input_ids"][pos].shape[0]) - int(rows["responses"][pos].shape[0])
            tokens -= fork["prefix_tokens"] - prompt_len
        generated.append(tokens)
        slots.append((int(key.rsplit("_", 2)[1]), fork is not None))
    return {"makespan": makespan, "metrics": metrics, "generated": generated, "slots": slots}


def stop_workers(managers: dict, reward) -> None:
    """Kill the agent-loop workers of every manager and the reward-loop workers (Ray actors)."""
    import ray

    for manager in managers.values():
        for worker in manager.agent_loop_workers:
            ray.kill(worker)
    for handle in reward.reward_loop_workers:
        ray.kill(handle)


def makespan_ratios(results: dict[str, list[dict]], names, width: int) -> dict[str, float]:
    """Median batch makespan of each run over independent sampling's; printed with the single runs."""
    base = statistics.median(r["makespan"] for r in results["independent"])
    ratios = {name: statistics.median(r["makespan"] for r in results[name]) / base for name in names}
    for name in names:
        each = ", ".join(f"{r['makespan']:.2f}" for r in results[name])
        print(f"  batch makespan / independent: {name:{width}s} {ratios[name]:.3f}   (runs: {each} s)")
    return ratios


def zoom_stall(side: int = 4096, samples: int = 8) -> dict:
    """Event-loop blocking and decodes while ``samples`` zooms hit one ``side`` x ``side`` PNG original.

    Blocking is measured two ways: the longest single event-loop step in main-thread CPU time
    (``time.thread_time`` around each callback, so other processes on a loaded machine do not count;
    the gate) and a 1 ms heartbeat's longest wall-clock overshoot (printed with the same heartbeat on
    an idle loop, which shows what the machine's scheduling alone costs). The same run with the
    original decoded on the event loop (what the tool did before) shows what the gate catches.
    """
    from medvr_verl.tools.image_io import OriginalImages
    from medvr_verl.tools.zoom import ORIGINALS_ATTR, ZoomInTool

    tool = ZoomInTool(config={"type": "native"})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "large.png")
        synthetic_image(side, seed=7).save(path)
        messages = [{"role": "user", "content": [{"type": "image", "image": path}]}]
        t0 = time.perf_counter()
        OriginalImages(messages).get(0)
        decode_s = time.perf_counter() - t0
        seen = Image.open(path).convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE))  # veRL's downsized copy

        class AgentData:
            def __init__(self, originals):
                self.image_data = [seen]
                self.extra_fields = {}
                setattr(self, ORIGINALS_ATTR, originals)

        async def measure(decode_on_loop: bool | None):
            loop = asyncio.get_running_loop()
            gaps, done = [], False

            async def heartbeat():
                while not done:
                    t = loop.time()
                    await asyncio.sleep(0.001)
                    gaps.append(loop.time() - t - 0.001)

            beat = asyncio.create_task(heartbeat())
            await asyncio.sleep(0.02)
            originals = OriginalImages(messages)
            longest[0] = 0.0
            if decode_on_loop is None:  # idle: the heartbeat alone
                await asyncio.sleep(0.5)
            else:
                if decode_on_loop:
                    originals.get(0)
                boxes = [[16 * k, 16 * k, 16 * k + 100, 16 * k + 100] for k in range(samples)]
                results = await asyncio.gather(
                    *[
                        tool.execute(f"i{k}", {"bbox_2d": box}, agent_data=AgentData(originals))
                        for k, box in enumerate(boxes)
                    ]
                )
                assert all(r[0].image for r in results), [r[0].text for r in results]
            done = True
            await beat
            return {"step_cpu_s": longest[0], "gap_s": max(gaps), "decodes": originals.decodes}

        longest = [0.0]
        run = asyncio.events.Handle._run

        def timed_run(handle):
            t = time.thread_time()
            try:
                return run(handle)
            finally:
                longest[0] = max(longest[0], time.thread_time() - t)

        asyncio.events.Handle._run = timed_run
        try:
            modes = (("idle", None), ("zoom", False), ("decode on loop", True))
            out = {name: asyncio.run(measure(mode)) for name, mode in modes}
        finally:
            asyncio.events.Handle._run = run
    out["decode_s"] = decode_s
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--m", type=int, default=8, help="samples per prompt (rollout.n)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="show the Ray actors' output")
    parser.add_argument(
        "--engine",
        choices=("model", "vllm"),
        default="model",
        help="model: the stand-in engine's cost formula (default); vllm: vLLM's real engine (CPU build)",
    )
    args = parser.parse_args(argv)
    if args.engine == "vllm":
        import evr_on_vllm

        return evr_on_vllm.run(args, sys.modules[__name__])
    m = args.m
    total_start = time.perf_counter()

    with contextlib.redirect_stdout(io.StringIO()):  # the tool prints its schema
        stall = zoom_stall()

    import transfer_queue as tq
    import verl  # noqa: F401  (loads the plugin)
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop import RewardLoopManager

    from medvr_verl.agent_loop_tq import MedVRAgentLoopManagerTQ
    from medvr_verl.testing.harness import ensure_ray, make_sample, shutdown_ray
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    model_path = tiny_qwen25vl_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rng = random.Random(args.seed)
    thoughts = {
        f"p{i}": [text_of_length(tokenizer, rng, THOUGHT_TOKENS, f"sample {k}:", "") for k in range(m)]
        for i in range(args.prompts)
    }
    answer = text_of_length(tokenizer, rng, ANSWER_TOKENS, "in the crop", "<answer>A</answer>")
    runs = {
        "independent": ("enable: false", 1),
        "two-phase EVR, all uncertain": (f"mode: two_phase, {EVR_SETTINGS}", 1),
        "streaming EVR, all uncertain": (f"mode: streaming, {EVR_SETTINGS}", 1),
        "streaming EVR, half uncertain": (f"mode: streaming, {EVR_SETTINGS}", 2),
    }
    results: dict[str, list[dict]] = {name: [] for name in runs}
    quiet = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet, tempfile.TemporaryDirectory() as tmp:  # Ray forwards the actors' prints to this stdout
        images = write_images(Path(tmp), args.prompts)
        samples = [
            {
                **make_sample(
                    f"[script:p{i}] Case {i}: which lung holds the nodule? <image>",
                    images=[Path(images[i])],
                    extra_info=MC,
                    ground_truth="A",
                ),
                "agent_name": "medvr_agent",
            }
            for i in range(args.prompts)
        ]
        ensure_ray(num_cpus=8, extra_sys_paths=[BENCH_DIR])
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        reward = RewardLoopManager(make_config(model_path, m, "enable: false"))
        managers = {}
        try:
            for name, (evr, spike_every) in runs.items():
                config = make_config(model_path, m, evr)
                client = SimulatedServer(config, script=EVRBenchScript(model_path, thoughts, answer, spike_every))
                managers[name] = MedVRAgentLoopManagerTQ.create(
                    config=config,
                    llm_client=client,
                    teacher_client=None,
                    reward_loop_worker_handles=reward.reward_loop_workers,
                )
            step = 0
            for name in runs:  # warm-up: first-call costs (imports, processor caches) off the clock
                step += 1
                run_step(managers[name], samples[:1], step)
            for _ in range(args.reps):
                for name in runs:
                    step += 1
                    results[name].append(run_step(managers[name], samples, step))
        finally:
            stop_workers(managers, reward)
            shutdown_ray()

    def median(name, get):
        return statistics.median(get(r) for r in results[name])

    half = m - (m + 1) // 2
    print(
        "MODEL (stand-in engine, not a measurement of vLLM; --engine vllm measures the real one)\n"
        f"workload: {args.prompts} prompts x M={m}; turn 1: ~{THOUGHT_TOKENS}-token thought + zoom call, "
        f"turn 2: ~{ANSWER_TOKENS}-token answer; {IMAGE_SIDE}x{IMAGE_SIDE} PNG per prompt; simulated engine: "
        f"step {STEP_S * 1e3:.0f} ms + {PER_SEQ_S * 1e3:.1f} ms per running request, prefill "
        f"{PREFILL_S_PER_TOKEN * 1e6:.0f} us per token; medians of {args.reps} interleaved runs"
    )
    print(
        f"  {'run':32s} {'batch makespan':>14s} {'group mean':>10s} {'group max':>9s} "
        f"{'generated':>9s} {'forks':>5s} {'streamed':>8s} {'decodes/prompt':>14s}"
    )
    for name in runs:
        forks = median(name, lambda r: sum(f for _, f in r["slots"]))
        streamed = median(name, lambda r: r["metrics"].get("medvr/evr/streamed_forks/sum", 0.0))
        print(
            f"  {name:32s} {median(name, lambda r: r['makespan']):12.2f} s "
            f"{median(name, lambda r: r['metrics']['medvr/group_time_s/mean']):8.2f} s "
            f"{median(name, lambda r: r['metrics']['medvr/group_time_s/max']):7.2f} s "
            f"{median(name, lambda r: sum(r['generated'])):9.0f} {forks:5.0f} {streamed:8.0f} "
            f"{median(name, lambda r: r['metrics'].get('medvr/image_decodes/max', float('nan'))):14.0f}"
        )
    ratios = makespan_ratios(results, runs, 32)

    def mean_tokens(name, pick):
        return statistics.mean(g for r in results[name] for g, row in zip(r["generated"], r["slots"]) if pick(*row))

    fork_tokens = mean_tokens("streaming EVR, all uncertain", lambda slot, fork: fork)
    # fresh samples in the slots forks take in EVR runs (the second half of each group)
    fresh_tokens = mean_tokens("independent", lambda slot, fork: slot >= m - half)
    token_ratio = fork_tokens / fresh_tokens
    print(f"  generated tokens per trajectory: streaming forks {fork_tokens:.1f}, fresh samples {fresh_tokens:.1f}")
    decodes = max(max(r["metrics"]["medvr/image_decodes/max"] for r in results[name]) for name in runs)
    decodes_min = min(min(r["metrics"]["medvr/image_decodes/mean"] for r in results[name]) for name in runs)
    zoom, idle, on_loop = stall["zoom"], stall["idle"], stall["decode on loop"]
    print(
        f"zoom on a 4096x4096 PNG original, 8 samples at once through one OriginalImages (one decode alone: "
        f"{stall['decode_s'] * 1e3:.0f} ms):"
    )
    rows = (("idle loop", idle), ("zoom (decode in the executor)", zoom), ("decode on the loop (before)", on_loop))
    for name, st in rows:
        print(
            f"  {name:32s} longest loop step {st['step_cpu_s'] * 1e3:7.2f} ms CPU, heartbeat overshoot "
            f"{st['gap_s'] * 1e3:7.2f} ms wall, decodes {st['decodes']}"
        )
    print(f"total benchmark time: {time.perf_counter() - total_start:.1f} s")

    verdicts = [
        (
            f"streaming EVR batch makespan <= {TARGET_MAKESPAN_RATIO:.2f}x independent sampling "
            f"({ratios['streaming EVR, all uncertain']:.3f}; a training step waits for its slowest group)",
            ratios["streaming EVR, all uncertain"] <= TARGET_MAKESPAN_RATIO,
        ),
        (
            f"forks' generated tokens <= {TARGET_FORK_TOKENS_RATIO:.2f}x fresh samples' ({token_ratio:.3f}; "
            "a fork must reuse its base's prefix, not write it again)",
            token_ratio <= TARGET_FORK_TOKENS_RATIO,
        ),
        (
            f"original-image decodes per prompt == {TARGET_DECODES_PER_PROMPT} "
            f"(min {decodes_min:.0f}, max {decodes:.0f}; "
            "M samples and their forks share one decode)",
            decodes == decodes_min == TARGET_DECODES_PER_PROMPT,
        ),
        (
            f"longest event-loop stall zooming into a 4096x4096 original < {TARGET_STALL_S * 1e3:.0f} ms "
            f"({zoom['step_cpu_s'] * 1e3:.2f} ms, the longest loop step in CPU time; decoding on the loop: "
            f"{on_loop['step_cpu_s'] * 1e3:.0f} ms; {zoom['decodes']} decode for 8 zooms; every agent loop of a "
            "worker shares that loop)",
            zoom["step_cpu_s"] < TARGET_STALL_S and zoom["decodes"] == 1,
        ),
    ]
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
