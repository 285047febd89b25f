"""The MedVR pipeline end to end on a CPU, in a minute: ``python -m medvr_verl.demo [--out DIR]``.

THE MODEL HAS RANDOM WEIGHTS. A tiny Qwen2.5-VL (built offline, random weights) supplies the real
tokenizer, processor, vision placeholders, mrope positions and the logprobs/entropies of every token;
its turns are scripted (random weights write no zoom calls): a stand-in policy zooms into a region of
the image and answers right when the region holds the imaged anatomy. Everything else is the real
code path of a MedVR training step, the plugin's and veRL's:

real medical images (pydicom's bundled CT and MR test DICOMs, read by ``load_medical_image``) ->
veRL's RLHFDataset-style batch -> ``EVRAgentLoopManager`` (ceil(M/2) base trajectories per prompt
through veRL's AgentLoopWorker and ``medvr_agent``, with the zoom tool cropping the DICOM at native
resolution, then forks at the zoom calls chosen by entropy) -> ``medvr_cca`` rewards in veRL's
RewardLoopWorker actors -> GRPO advantages by veRL's ``compute_grpo_outcome_advantage`` -> a
summary table and PNG overlays of each group's zooms and consensus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BANNER = (
    "=" * 100 + "\nMedVR CPU demo -- THE MODEL HAS RANDOM WEIGHTS: its turns are scripted (a stand-in policy), its\n"
    "logprobs and entropies are real forward passes of the random tiny model. The pipeline is the real one.\n"
    + "="
    * 100
)

# Prompts: pydicom test file, question, options, ground truth, the side of the image as the model sees it
CASES = {
    "ct": (
        "CT_small.dcm",
        "Which imaging modality produced this image?",
        {"A": "CT", "B": "MRI", "C": "X-ray"},
        "A",
        140,
    ),
    "mr": ("MR_small.dcm", "Is this a magnetic resonance image?", None, "yes", 56),
}
_BOX = re.compile(r'"bbox_2d": \[([^\]]*)\]')


class StandInPolicy:
    """Scripted turns: base k zooms into one of three regions; forks resample the region; the answer is
    right when the last zoom covers the centre of the image (where both test scans hold the anatomy)."""

    # fractions of the image side: centre, top-left corner, bottom-right corner
    REGIONS = ((0.2, 0.2, 0.8, 0.8), (0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 1.0, 1.0))

    def __init__(self):
        self._calls: dict[str, int] = {}

    def __call__(self, ctx):
        from medvr_verl.testing.scripted_server import ScriptedTurn
        from medvr_verl.testing.scripting import is_fork_request, zoom_call

        side = CASES[ctx.key][4]
        if is_fork_request(ctx.text):  # an EVR fork: sample the coordinates anew
            k = self._next(ctx.key + "/fork")
            return ScriptedTurn(" " + json.dumps(self._region((k + 2) % 3, side)) + "}}</tool_call>")
        if ctx.turn == 0:
            k = self._next(ctx.key)
            return f"<think>Let me look closer at region {k % 3}.</think>" + zoom_call(self._region(k % 3, side))
        x1, y1, x2, y2 = (float(v) for v in _BOX.findall(ctx.text)[-1].split(","))
        sees = x1 <= side / 2 <= x2 and y1 <= side / 2 <= y2
        answer = {"ct": "A" if sees else "B", "mr": "yes" if sees else "no"}[ctx.key]
        return f"<think>The region {'shows' if sees else 'misses'} the anatomy.</think><answer>{answer}</answer>"

    def _region(self, k: int, side: int) -> list[int]:
        return [round(f * side) for f in self.REGIONS[k]]

    def _next(self, key: str) -> int:
        self._calls[key] = self._calls.get(key, -1) + 1
        return self._calls[key]


def run(out_dir: Path, n: int) -> list[dict]:
    import pydicom.data

    from medvr_verl.testing.harness import ensure_ray, make_agent_batch, make_sample
    from medvr_verl.testing.real_logprob_client import RealLogprobLLMClient
    from medvr_verl.testing.scripting import medvr_config
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path
    from medvr_verl.tools.image_io import load_medical_image

    model = tiny_qwen25vl_path()
    config = medvr_config(
        model,
        ["+actor_rollout_ref.rollout.custom={evr: {seed: 0}, viz: {dir: " + str(out_dir) + ", interval: 1}}"],
        reward_workers=1,
        n=n,
        num_workers=1,
    )
    samples = []
    for key, (file, question, options, answer, _) in CASES.items():
        image = load_medical_image(pydicom.data.get_testdata_file(file)).convert("RGB")
        kind = "multiple_choice" if options else "closed"
        samples.append(
            make_sample(
                f"[script:{key}] {question}",
                images=[image],
                ground_truth=answer,
                extra_info={"question_type": kind, "options": options},
                data_source=f"demo_{key}",
            )
        )

    ensure_ray()
    from verl.experimental.reward_loop import RewardLoopManager
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from medvr_verl.rollout import EVRAgentLoopManager

    reward = RewardLoopManager(config)
    manager = EVRAgentLoopManager.create(
        config=config,
        llm_client=RealLogprobLLMClient(config, script=StandInPolicy()),
        teacher_client=None,
        reward_loop_worker_handles=reward.reward_loop_workers,
    )
    batch = make_agent_batch(samples, n=n, agent_name="medvr_agent", meta_info={"global_steps": 1})
    output = manager.generate_sequences(batch)
    advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards=output.batch["rm_scores"],
        response_mask=output.batch["response_mask"],
        index=batch.non_tensor_batch["uid"],
    )
    nt = output.non_tensor_batch
    rows = []
    for i in range(len(output)):
        boxes = json.loads(nt["zoom_boxes_json"][i])
        rows.append(
            {
                "prompt": list(CASES)[i // n],
                "trajectory": i % n + 1,
                "kind": "fork" if nt["medvr_fork"][i] is not None else "base",
                "zoom (original px)": " ".join("[" + ",".join(f"{v:.0f}" for v in b[1:]) + "]" for b in boxes) or "-",
                "answer": nt["pred"][i],
                "acc": float(nt["acc"][i]),
                "R_tool": float(nt["tool_reward"][i]),
                "IoU": float(nt["cca_iou"][i]),
                "R": float(output.batch["rm_scores"][i].sum()),
                "advantage": float(advantages[i][output.batch["response_mask"][i].bool()][0]),
            }
        )
    return rows, output.meta_info["timing"]


def print_table(rows: list[dict]) -> None:
    header = list(rows[0])
    widths = [max(len(h), *(len(_fmt(r[h])) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(_fmt(r[h]).ljust(w) for h, w in zip(header, widths)))


def _fmt(value) -> str:
    return f"{value:+.3f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvr_verl.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("medvr_demo"), help="where the overlay PNGs go")
    parser.add_argument("--n", type=int, default=4, help="trajectories per prompt (M; half base, half forks)")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2 (one base trajectory and one fork)")
    print(BANNER)
    rows, timing = run(args.out.resolve(), args.n)
    print_table(rows)
    print(
        f"\nEVR: fork rate {timing.get('medvr/evr/fork_rate/mean', 0):.2f}, "
        f"prefix tokens reused {timing.get('medvr/evr/prefix_tokens_reused/sum', 0):.0f}; "
        f"CCA: mean tool reward {timing.get('medvr/tool_reward/mean', 0):.2f}"
    )
    pngs = sorted(args.out.glob("*.png"))
    print(f"overlays of the groups' zooms and consensus: {len(pngs)} PNG(s) in {args.out.resolve()}")
    print("(random weights: the numbers show the mechanics of a training step, not a trained model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
