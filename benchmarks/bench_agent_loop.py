"""Per-turn overhead of ``medvr_agent`` against veRL's stock ``tool_agent``, measured in the same run.

Run from the repository root:

    python benchmarks/bench_agent_loop.py

One scripted multi-turn workload (8 prompts x n=2; each trajectory: a thought and a zoom call, the
tool's crop, then an answer turn; 32 assistant turns per run) goes through veRL's real
``AgentLoopWorker.generate_sequences`` in this process (what
``medvr_verl.testing.harness.run_agent_loop_worker(..., use_ray=False)`` runs; the worker is built
once per agent loop and reused, so loading the tokenizer, processor and tools is not timed) with
``agent_name="tool_agent"`` (stock) and with ``agent_name="medvr_agent"``: same trainer config,
same zoom tool YAML, same tool chat template, the same scripted server (the tiny offline
Qwen2.5-VL tokenizer/processor). The image is 448x448 RGB, exactly the tiny processor's pixel
budget, so veRL's resize is a no-op and both loops crop the same pixels (checked: identical
response tokens and pixel values). Both are warmed up, then timed in alternating repetitions (ABBA,
a garbage collection before each, BLAS single-threaded); the median wall time of a run over the
number of assistant turns is the per-turn time. The ratio ``medvr_agent`` / ``tool_agent`` is the
median over the repetitions of the ratio of the two back-to-back runs: on a shared 2-core machine,
other processes' load moves single runs by 10-40% and drifts within a minute, which a ratio of the
two loops' medians picks up but a pair ~2 s apart mostly cancels (the ratio of the medians and of
the fastest runs, and the load average, are printed too). PASS if that ratio <= 1.05. Also printed:
the main work ``medvr_agent`` adds per zoom turn (``MedVRAgentLoop._coordinate_token_spans``,
the coordinates' token span, for fork points), timed alone.

Also times the zoom tool alone (``ZoomInTool.execute`` with the recipe's tool config) on a
4096x4096 RGB image: median milliseconds of a 200x200 box, a 1000x1000 box and the whole image
(the whole image is scaled down to the tool's ``max_pixels``). Reported, not gated.

Exit status 1 on FAIL. Total runtime about 1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VERL_LOGGING_LEVEL", "WARN")
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # no BLAS oversubscription on 2 cores
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medvr_verl.testing.scripting import TOOL_CHAT_TEMPLATE, ZOOM_TOOL_YAML, zoom_call  # noqa: E402

TARGET_RATIO = 1.05
IMAGE_SIDE = 448  # = sqrt(tiny processor max_pixels): veRL's resize leaves it as is
ZOOM_BOX = [112, 96, 336, 320]  # model-space pixels (the model sees 448x448): a 224x224 crop
THOUGHT = "<think>The opacity sits in the middle of the left lung field; zoom in to check its margins.</think>"
ANSWER = "<think>The margins are smooth and well defined, a benign nodule.</think><answer>A</answer>"


def synthetic_image(side: int, seed: int = 0) -> Image.Image:
    """A smooth synthetic 'radiograph' with noise, RGB, ``side`` x ``side``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = 120 + 80 * np.exp(-((xx - 0.35) ** 2 + (yy - 0.45) ** 2) / 0.02)
    pixels = np.clip(base + rng.normal(0, 12, size=(side, side)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").convert("RGB")


def make_config(model_path, n: int):
    from medvr_verl.testing.harness import make_trainer_config

    return make_trainer_config(
        model_path,
        [f"+actor_rollout_ref.model.custom_chat_template={TOOL_CHAT_TEMPLATE}"],
        tool_config_path=ZOOM_TOOL_YAML,
        n=n,
        response_length=512,
        max_assistant_turns=3,
    )


def make_batch(agent_name: str, prompts: int, n: int, image: Image.Image):
    from medvr_verl.testing.harness import make_agent_batch, make_sample

    samples = [
        make_sample(f"[script:zoom] Case {i}: which lung holds the nodule? A. left B. right", images=[image])
        for i in range(prompts)
    ]
    return make_agent_batch(samples, n=n, agent_name=agent_name)


def check_output(output, tokenizer, expected_rows: int) -> None:
    """Every trajectory zoomed once (crop in its context) and answered."""
    assert len(output) == expected_rows, len(output)
    for row in range(expected_rows):
        grid = output.non_tensor_batch["multi_modal_inputs"][row]["image_grid_thw"]
        assert len(grid) == 2, f"row {row}: {len(grid)} images (expected prompt + crop)"
        text = tokenizer.decode(output.batch["responses"][row], skip_special_tokens=True)
        assert "<answer>A</answer>" in text, text


def time_agent_loops(args, model_path) -> tuple[dict[str, list[float]], int, float]:
    import torch
    import verl  # noqa: F401  (loads the plugin: medvr_agent, resolvers)
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    from medvr_verl.testing.scripted_server import ScriptedLLMClient

    config = make_config(model_path, args.n)
    image = synthetic_image(IMAGE_SIDE)
    client = ScriptedLLMClient(config, turns={"zoom": [THOUGHT + zoom_call(ZOOM_BOX), ANSWER]})
    with contextlib.redirect_stdout(io.StringIO()):  # veRL's BaseTool prints its schema
        workers = {name: AgentLoopWorker(config, client, None, None) for name in ("tool_agent", "medvr_agent")}
    rows = args.prompts * args.n

    def run_once(name: str):
        batch = make_batch(name, args.prompts, args.n, image)
        client.calls.clear()
        gc.collect()  # garbage of the previous run is not charged to this one
        start = time.perf_counter()
        output = asyncio.run(workers[name].generate_sequences(batch))
        elapsed = time.perf_counter() - start
        assert len(client.calls) == 2 * rows, len(client.calls)
        return elapsed, output

    turns = 2 * rows
    tokenizer = client.hf_tokenizer
    outputs = {}
    for name in workers:  # warm-up (first-call imports, processor caches), and a correctness check
        for _ in range(args.warmup):
            _, outputs[name] = run_once(name)
        check_output(outputs[name], tokenizer, rows)
    stock, medvr = outputs["tool_agent"], outputs["medvr_agent"]
    spans_ms = time_coordinate_spans(tokenizer, THOUGHT + zoom_call(ZOOM_BOX) + "<|im_end|>", args.reps)
    assert torch.equal(stock.batch["responses"], medvr.batch["responses"]), "the loops produced different tokens"
    for row in range(rows):  # the same crop pixels reach the model
        a, b = (o.non_tensor_batch["multi_modal_inputs"][row]["pixel_values"] for o in (stock, medvr))
        assert torch.equal(a, b), f"row {row}: different pixel values"
    assert all(len(z) == 1 for z in medvr.non_tensor_batch["medvr_zoom_calls"]), "medvr_agent records one zoom"

    times: dict[str, list[float]] = {name: [] for name in workers}
    order = list(workers)
    for rep in range(args.reps):
        for name in order if rep % 2 == 0 else order[::-1]:  # ABBA: drifts hit both alike
            times[name].append(run_once(name)[0])
    return times, turns, spans_ms


def time_coordinate_spans(tokenizer, turn_text: str, reps: int) -> float:
    """Median ms of ``MedVRAgentLoop._coordinate_token_spans`` on one zoom turn (its main extra work).

    It runs once per turn that calls a tool (in the executor): a decode of the turn and a binary
    search of decodes for the coordinates' token span.
    """
    from types import SimpleNamespace

    from medvr_verl.agent_loop import MedVRAgentLoop
    from medvr_verl.tools.zoom import TOOL_NAME

    loop = SimpleNamespace(tokenizer=tokenizer, zoom_tool_name=TOOL_NAME)  # all the method reads
    token_ids = tokenizer.encode(turn_text, add_special_tokens=False)
    times = []
    for _ in range(max(reps, 5) * 4):
        start = time.perf_counter()
        spans = MedVRAgentLoop._coordinate_token_spans(loop, token_ids)
        times.append(time.perf_counter() - start)
    assert len(spans) == 1, spans
    return statistics.median(times) * 1e3


def time_zoom_tool(reps: int) -> dict[str, float]:
    """Median ms of ``ZoomInTool.execute`` on a 4096x4096 image, per box size."""
    import yaml
    from omegaconf import OmegaConf

    import medvr_verl.resolvers  # noqa: F401
    from medvr_verl.tools.zoom import ZoomInTool

    path = OmegaConf.create({"p": ZOOM_TOOL_YAML}).p
    tool_config = yaml.safe_load(Path(path).read_text())["tools"][0]["config"]
    with contextlib.redirect_stdout(io.StringIO()):
        tool = ZoomInTool(tool_config, None)
    side = 4096
    image = synthetic_image(side, seed=1)
    model_w, model_h = tool.model_size(side, side)  # the model's view: boxes are given in it
    scale = model_w / side

    class _AgentData:  # what the tool reads: image_data and extra_fields
        def __init__(self):
            self.image_data = [image]
            self.extra_fields = {}

    boxes = {
        "200x200 region": [1800, 1800, 2000, 2000],
        "1000x1000 region": [1000, 1200, 2000, 2200],
        "whole image": [0, 0, side, side],
    }
    out = {}
    for label, box in boxes.items():
        model_box = [round(v * scale) for v in box]

        async def run(model_box=model_box):
            times = []
            for _ in range(reps + 1):
                start = time.perf_counter()
                response, _, metrics = await tool.execute("bench", {"bbox_2d": model_box}, agent_data=_AgentData())
                times.append(time.perf_counter() - start)
                assert metrics["valid"], response.text
            return times[1:], metrics["crop_size"]

        times, crop_size = asyncio.run(run())
        out[f"{label} -> crop {crop_size[0]}x{crop_size[1]}"] = statistics.median(times) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per agent loop")
    parser.add_argument("--reps", type=int, default=15, help="timed runs per agent loop (alternating)")
    parser.add_argument("--zoom-reps", type=int, default=10)
    args = parser.parse_args(argv)

    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    times, turns, spans_ms = time_agent_loops(args, tiny_qwen25vl_path())
    stock = statistics.median(times["tool_agent"])
    medvr = statistics.median(times["medvr_agent"])
    ratio = medvr / stock
    paired = statistics.median(m / s for s, m in zip(times["tool_agent"], times["medvr_agent"]))
    print(
        f"workload: {args.prompts} prompts x n={args.n}, zoom turn + answer turn, {IMAGE_SIDE}x{IMAGE_SIDE} image; "
        f"{turns} assistant turns per run; {args.reps} alternating runs per loop"
    )
    for name, label in (("tool_agent", "stock tool_agent"), ("medvr_agent", "medvr_agent")):
        run_ms = statistics.median(times[name]) * 1e3
        print(
            f"{label:17s} {run_ms:8.1f} ms/run  {run_ms / turns:6.2f} ms/turn  "
            f"(min {min(times[name]) * 1e3:.0f}, max {max(times[name]) * 1e3:.0f} ms/run)"
        )
    print(
        f"ratio medvr_agent / tool_agent: {paired:.3f} (median of the {args.reps} back-to-back pairs' ratios; "
        f"ratio of the medians {ratio:.3f}, {(medvr - stock) / turns * 1e3:+.2f} ms/turn; "
        f"ratio of the fastest runs {min(times['medvr_agent']) / min(times['tool_agent']):.3f})"
    )
    print(f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"medvr_agent's own extra work, coordinate token spans of a zoom turn: {spans_ms:.3f} ms (median)")

    zoom = time_zoom_tool(args.zoom_reps)
    print(f"zoom tool on a 4096x4096 RGB image (median of {args.zoom_reps} calls):")
    for label, ms in zoom.items():
        print(f"  {label:40s} {ms:8.2f} ms")
    print(f"total benchmark time: {time.perf_counter() - start:.1f} s")

    checks = {f"medvr_agent / tool_agent per-turn time <= {TARGET_RATIO}": paired <= TARGET_RATIO}
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
