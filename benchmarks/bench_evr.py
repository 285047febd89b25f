"""Tokens an EVR group generates and prefills against M independent samples, measured in the same run.

Run from the repository root:

    python benchmarks/bench_evr.py

Workload: 4 prompts x M=8 samples of the tiny offline Qwen2.5-VL (its real tokenizer, processor and
tool chat template; a scripted server plays vLLM), each with a 448x448 image (256 image tokens).
A sample writes a ~150-token thought and a zoom call (turn 1), gets the crop back (64 image tokens)
and writes a ~60-token answer (turn 2). Thoughts differ from sample to sample (different words
from the first one on), as sampled thoughts would.

* EVR: ``medvr_verl.rollout.EVRAgentLoopManager`` + ``medvr_agent``, ``rollout.custom.evr`` =
  ``{gamma: 0.5, p_base: 0, threshold: 0.5}``. Per prompt, 4 base samples run first; the scripted
  server returns per-token entropies, flat (0.1 nats) except on the zoom coordinates of odd base
  samples (3.0 nats), so ``dH`` = 2.9 there and every fork branches at those calls: the 4 forks
  continue a base's context up to ``"bbox_2d":`` and sample new coordinates (a different box),
  then answer.
* Independent: ``medvr_verl.rollout.GroupAgentLoopManager`` + ``medvr_agent``: 8 fresh samples.

Both run through veRL's real Ray workers (2 agent-loop workers, local Ray with 2 CPUs) and score
with veRL's ``RewardLoopManager`` running ``medvr_cca`` (2 reward workers), as in training. Every
server call is recorded with its token ids (``ScriptedLLMClient(record_ids=True)`` and a call
recorder actor) and attributed to the trajectory (output row) whose final sequence it is a prefix
of.

Counted per trajectory: **generated** tokens (the sum of its calls' response lengths) and
**prefilled** tokens under a simulated engine prefix cache. The simulation models ONE vLLM server
with automatic prefix caching and sticky sessions (veRL routes all turns of a trajectory, and EVR's
forks, which reuse their base's request id, to the same server): the cache is global and never
evicts, and it is block-free (token granularity, where vLLM caches whole 16-token blocks). For each
request in call order, its cached tokens are the longest common prefix of its ``prompt_ids`` with
any earlier request's ``prompt_ids + response_ids`` (generated tokens are in the KV cache once
decoded), at most ``len(prompt_ids) - 1`` (vLLM always recomputes the last prompt token); prefilled =
prompt length - cached. Each group's dataset prompt is prefilled once and charged to the group,
not to a trajectory: whichever sample's request happens to come first would otherwise pay it,
which in the independent run is a random slot and in the EVR run always a base sample. Image
placeholder tokens are compared as token ids, while vLLM also hashes the image content: the prompts
are written so that differing text always comes before an image (the question before the prompt
image, the zoom call's coordinates before a crop), so no two different images are ever compared.
veRL's real vLLM server reports the engine's own figure, ``num_cached_tokens``, per request in
``TokenOutput.extra_fields``; the EVR worker could log it on a GPU run.

Reported: totals of both runs, prefilled and generated tokens per trajectory kind, and the key
ratio "forks' prefill / fresh samples' prefill": the mean prefilled tokens of EVR's fork
trajectories over the mean prefilled tokens of the samples in the same slots of the independent
run (the second half of each group), with the same ratio for generated tokens. Cross-checks of the
prefill ratio: the same server with the group's prompt charged to whichever request came first,
and ``--replicas`` (8) servers with their own caches where each new session goes to the next server
in turn (veRL balances new sessions by least in-flight requests) and later turns and forks follow
their session. Note what the single-server model implies: a fresh sample finds the prompt cached
(its group's first request) and its own earlier turns cached, so it prefills only its tool
response and chat-template glue, as a fork does; EVR's saving there is generated tokens. Prefill
is saved when fresh samples land on servers that have not seen their prompt (the replica model).

Checked against the target "forks prefill at most 60% of what the fresh samples prefill" under both
cache models, one verdict each; exit status 1 if either fails. Total runtime about 45-60 s on 2
cores (most of it starting Ray actors); actor output is swallowed unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VERL_LOGGING_LEVEL", "WARN")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medvr_verl.testing.scripting import SpikeEntropies, is_fork_request, medvr_config, zoom_call  # noqa: E402

TARGET_PREFILL_RATIO = 0.60
IMAGE_SIDE = 448  # = sqrt(tiny processor max_pixels): the model sees 448x448 (256 image tokens)
BASE_BOX = [0, 0, 224, 224]  # model-space pixels: the top-left quadrant (a 64-token crop)
THOUGHT_TOKENS = 150
ANSWER_TOKENS = 60
LOW, SPIKE = 0.1, 3.0  # nats: scripted per-token entropies
EVR = "+actor_rollout_ref.rollout.custom={evr: {gamma: 0.5, p_base: 0.0, threshold: 0.5, seed: 0}}"
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
    in this process); odd k get an entropy spike on the zoom call from its coordinates on. A request
    whose context ends with ``"bbox_2d":`` is a fork: it gets the j-th box of a per-key counter (all
    224x224 model pixels, so every crop is 64 tokens like the base crops).
    """

    def __init__(self, model_path: str, thoughts: dict[str, list[str]], answer: str):
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
            return ScriptedTurn(text, extra_fields=self._entropies(k % 2 == 1))
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


def make_config(model_path, m: int, *extra):
    return medvr_config(model_path, extra, n=m, num_workers=2, prompt_length=1024, response_length=512)


def run_step(manager_cls, config, script, reward_workers, prompts: int, m: int):
    """One step of ``manager_cls``; returns the output DataProto, the call records and the wall time."""
    import ray

    from medvr_verl.testing.harness import make_agent_batch, make_sample, run_manager
    from medvr_verl.testing.scripted_server import ScriptedLLMClient, create_call_recorder, get_call_records

    samples = [
        make_sample(
            f"[script:p{i}] Case {i}: which lung holds the nodule? <image>",
            images=[synthetic_image(IMAGE_SIDE, seed=i)],
            extra_info=MC,
            ground_truth="A",
        )
        for i in range(prompts)
    ]
    batch = make_agent_batch(samples, n=m, agent_name="medvr_agent", meta_info={"global_steps": 1})
    recorder = create_call_recorder()
    client = ScriptedLLMClient(config, script=script, recorder=recorder, record_ids=True)
    try:
        start = time.perf_counter()  # includes starting the workers
        output = run_manager(manager_cls, config, client, batch, reward_loop_worker_handles=reward_workers)
        elapsed = time.perf_counter() - start
        records = get_call_records(recorder)
    finally:
        ray.kill(recorder)
    return output, records, elapsed


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def simulate_prefix_cache(records: list[dict], *, replicas: int = 1, warm: list[np.ndarray] = ()) -> list[int]:
    """Prefilled tokens of each request (in call order) under the simulated prefix cache (module doc).

    ``replicas`` > 1: that many servers with their own caches; a request id seen for the first time
    goes to the next server in turn, later requests with that id to the same one (sticky sessions;
    EVR's forks reuse their base's id). ``warm``: sequences already in the (single) server's cache.
    """
    seen: list[list[np.ndarray]] = [list(warm)] + [[] for _ in range(replicas - 1)]
    server_of: dict[str, int] = {}
    prefilled = []
    for rec in records:
        server = server_of.setdefault(rec["request_id"], len(server_of) % replicas)
        prompt = np.asarray(rec["prompt_ids"], dtype=np.int64)
        cached = max((_lcp(prompt, s) for s in seen[server]), default=0)
        cached = min(cached, len(prompt) - 1)  # vLLM recomputes the last prompt token
        prefilled.append(len(prompt) - cached)
        seen[server].append(np.concatenate([prompt, np.asarray(rec["response_ids"], dtype=np.int64)]))
    return prefilled


def row_sequences(output) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each output row's dataset prompt ids and its whole sequence (prompt + response) ids."""
    prompt_width = output.batch["prompts"].shape[1]
    mask = output.batch["attention_mask"].bool()
    prompts, sequences = [], []
    for row in range(len(output)):
        assert int(mask[row, prompt_width:].sum()) < output.batch["responses"].shape[1], f"row {row} was truncated"
        prompts.append(output.batch["input_ids"][row, :prompt_width][mask[row, :prompt_width]].numpy())
        sequences.append(output.batch["input_ids"][row][mask[row]].numpy())
    return prompts, sequences


def calls_per_row(sequences: list[np.ndarray], records: list[dict]) -> list[list[int]]:
    """Calls of each output row: those whose prompt + response is a prefix of the row's sequence."""
    calls = []
    for ids in sequences:
        mine = []
        for c, rec in enumerate(records):
            seq = np.asarray(rec["prompt_ids"] + rec["response_ids"], dtype=np.int64)
            if len(seq) <= len(ids) and _lcp(seq, ids) == len(seq):
                mine.append(c)
        calls.append(mine)
    used = sorted(c for mine in calls for c in mine)
    assert used == list(range(len(records))), "every call belongs to exactly one trajectory"
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--m", type=int, default=8, help="samples per prompt (rollout.n)")
    parser.add_argument("--replicas", type=int, default=8, help="servers of the multi-replica scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="show the Ray actors' output")
    args = parser.parse_args(argv)
    m = args.m
    total_start = time.perf_counter()

    import ray
    import verl  # noqa: F401  (loads the plugin)
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop import RewardLoopManager

    from medvr_verl.rollout import EVRAgentLoopManager, GroupAgentLoopManager
    from medvr_verl.testing.harness import ensure_ray, shutdown_ray
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    model_path = tiny_qwen25vl_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rng = random.Random(args.seed)
    thoughts = {
        f"p{i}": [text_of_length(tokenizer, rng, THOUGHT_TOKENS, f"sample {k}:", "") for k in range(m)]
        for i in range(args.prompts)
    }
    answer = text_of_length(tokenizer, rng, ANSWER_TOKENS, "in the crop", "<answer>A</answer>")

    runs = {}
    quiet = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:  # Ray forwards the actors' prints (tool schemas, dataset class) to this stdout
        ensure_ray(num_cpus=2)
        evr_config = make_config(model_path, m, EVR)
        reward = RewardLoopManager(evr_config)
        try:
            for name, manager_cls, config in (
                ("independent", GroupAgentLoopManager, make_config(model_path, m)),
                ("EVR", EVRAgentLoopManager, evr_config),
            ):
                script = EVRBenchScript(model_path, thoughts, answer)
                runs[name] = run_step(manager_cls, config, script, reward.reward_loop_workers, args.prompts, m)
        finally:
            for handle in reward.reward_loop_workers:
                ray.kill(handle)
            shutdown_ray()

    half = m - (m + 1) // 2
    second_half = [row for row in range(args.prompts * m) if row % m >= m - half]
    first_half = [row for row in range(args.prompts * m) if row % m < m - half]
    stats = {}
    for name, (output, records, _) in runs.items():
        assert output.batch["rm_scores"].shape[0] == args.prompts * m  # scored by medvr_cca
        forks = output.non_tensor_batch.get("medvr_fork", np.array([None] * len(output), dtype=object))
        fork_rows = [row for row in range(len(output)) if forks[row] is not None]
        assert fork_rows == (second_half if name == "EVR" else []), f"{name}: forks in rows {fork_rows}"
        prompts, sequences = row_sequences(output)
        calls = calls_per_row(sequences, records)
        group_prompts = [prompts[g * m] for g in range(args.prompts)]
        scenarios = {
            "warm": simulate_prefix_cache(records, warm=group_prompts),
            "literal": simulate_prefix_cache(records),
            "replicas": simulate_prefix_cache(records, replicas=args.replicas),
        }
        warm_cost = simulate_prefix_cache(
            [{"request_id": "", "prompt_ids": list(p), "response_ids": []} for p in group_prompts]
        )
        stats[name] = {
            "records": records,
            "prompt_prefill": sum(warm_cost),
            "generated": [sum(len(records[c]["response_ids"]) for c in mine) for mine in calls],
            **{key: [sum(pre[c] for c in mine) for mine in calls] for key, pre in scenarios.items()},
        }

    def mean(name, key, rows):
        return statistics.mean(stats[name][key][r] for r in rows)

    print(
        f"workload: {args.prompts} prompts x M={m}; turn 1: ~{THOUGHT_TOKENS}-token thought + zoom call, "
        f"turn 2: ~{ANSWER_TOKENS}-token answer; {IMAGE_SIDE}x{IMAGE_SIDE} image (256 tokens), 64-token crops"
    )
    print("one server, each group's prompt prefilled once (charged to the group):")
    print(
        f"  {'':22s} {'requests':>8s} {'prompt tokens':>13s} {'group prompts':>13s} {'prefilled':>9s} {'generated':>9s}"
    )
    for name, st in stats.items():
        sent = sum(len(r["prompt_ids"]) for r in st["records"])
        print(
            f"  {name:22s} {len(st['records']):8d} {sent:13d} {st['prompt_prefill']:13d} "
            f"{st['prompt_prefill'] + sum(st['warm']):9d} {sum(st['generated']):9d}"
        )
    print("  mean per trajectory:                      prefilled  generated")
    for label, name, rows in (
        ("independent, first half of each group", "independent", first_half),
        ("independent, second half (fresh)", "independent", second_half),
        ("EVR base samples (first half)", "EVR", first_half),
        ("EVR forks (second half)", "EVR", second_half),
    ):
        print(f"    {label:40s} {mean(name, 'warm', rows):9.1f} {mean(name, 'generated', rows):10.1f}")

    def fork_ratio(key):
        return mean("EVR", key, second_half) / mean("independent", key, second_half)

    prefill_ratio = fork_ratio("warm")
    print(f"forks' prefill / fresh samples' prefill:     {prefill_ratio:.3f}")
    print(f"forks' generated / fresh samples' generated: {fork_ratio('generated'):.3f}")
    prefilled = {name: st["prompt_prefill"] + sum(st["warm"]) for name, st in stats.items()}
    generated = {name: sum(st["generated"]) for name, st in stats.items()}
    print(
        f"EVR / independent, whole groups: prefilled {prefilled['EVR'] / prefilled['independent']:.3f}, "
        f"generated {generated['EVR'] / generated['independent']:.3f}"
    )
    print("cross-checks of the prefill ratio under other cache models:")
    print(
        f"  one server, a group's prompt charged to whichever request came first: {fork_ratio('literal'):.3f} "
        f"(forks {mean('EVR', 'literal', second_half):.1f}, fresh {mean('independent', 'literal', second_half):.1f};"
        " scheduling order decides which slot pays)"
    )
    print(
        f"  {args.replicas} sticky replicas, new sessions round-robin: {fork_ratio('replicas'):.3f} "
        f"(forks {mean('EVR', 'replicas', second_half):.1f}, fresh {mean('independent', 'replicas', second_half):.1f})"
    )
    print(
        "wall time per step (incl. starting its workers; the first run also warms the reward workers): "
        + ", ".join(f"{n} {r[2]:.1f} s" for n, r in runs.items())
    )
    print(f"total benchmark time: {time.perf_counter() - total_start:.1f} s")

    checks = {
        f"forks' prefill <= {TARGET_PREFILL_RATIO:.0%} of fresh samples' (one server)": prefill_ratio
        <= TARGET_PREFILL_RATIO,
        f"forks' prefill <= {TARGET_PREFILL_RATIO:.0%} of fresh samples' ({args.replicas} sticky replicas)": fork_ratio(
            "replicas"
        )
        <= TARGET_PREFILL_RATIO,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
