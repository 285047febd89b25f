"""Which settings can learn the stripes task? A fast probe OUTSIDE veRL's trainer (seconds a step).

    python benchmarks/probe_learning.py read --lr 2e-3 --hit 0.25 --rl      # can the answer be learned?
    python benchmarks/probe_learning.py grpo --lr 2e-3 --kl 0.1 --seed 1    # the whole task, GRPO-like

A DIAGNOSTIC, not a result: it plays the task of :mod:`medvr_verl.cpu.learning` in plain torch with
the same tiny random-weight Qwen2.5-VL, processor, data (:mod:`medvr_verl.data.synthetic`) and
template text (:mod:`medvr_verl.cpu.constrained`), so a setting can be screened in a minute before a
``main_ppo`` run (``benchmarks/bench_learning.py``) spends ten. What it leaves out of veRL's update:
PPO's ratio clipping, mini-batches, the chat template's tool block in the prompt, FSDP; it
approximates CCA on a 2 x 2 grid by "the cell a strict majority of the correct trajectories
zoomed", which equals IoU > 0.5 with the consensus there. Results of this probe are in the README
("Does it learn?"); it showed that ``main_ppo`` moves the policy more slowly than it does, so use it
to rank settings, not to predict step counts.

``read``: only the answer. Each example is the full context up to ``<answer>`` (prompt with the 448
image at the run's pixel budget, the zoom turn, the tool response with the crop at native
resolution); a share ``--hit`` of the crops is the lines' cell, the rest a gray cell. Trains the
answer letter supervised, or with ``--rl`` by REINFORCE (batch-mean baseline) on letters sampled from
the model restricted to A/B. Prints the hidden-state gap between H and V crops at the answer
position first (is the crop's direction there at all?).

``grpo``: zoom and answer, as the ``constrained`` policy samples them (per-token distributions
restricted to the candidates' token trie), ``--batch`` prompts x ``--n``, reward accuracy + tool
reward (``--tool consensus | correct | none``), group-normalized advantages, loss on the full-vocab
log-probs of the decision tokens (as veRL's actor computes them), optional low-var KL to the initial
model (``--kl``), Adam.
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import torch

from medvr_verl.cpu.constrained import ANSWER_PREFIX, ZOOM_PREFIX, ZOOM_SUFFIX, TokenTrie, box_text, grid_boxes
from medvr_verl.cpu.learning import IMAGE_SIZE, SYSTEM_PROMPT
from medvr_verl.data.synthetic import QUESTIONS, cell_box, cell_name, stripes_image
from medvr_verl.testing.tiny_reader import encode

GT_CELL = 3  # the learning run's data: the lines in the bottom-right cell
SEEN = IMAGE_SIZE // 2  # the side of the image as the model sees it


def load(threads: int):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    torch.set_num_threads(threads)
    path = tiny_qwen25vl_path()
    processor = AutoProcessor.from_pretrained(path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, torch_dtype=torch.float32)
    return processor, model


def zoom_context(question: str) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n{ZOOM_PREFIX}"
    )


def answer_context(question: str, box: str) -> str:
    return (
        zoom_context(question) + box + ZOOM_SUFFIX + "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
        f"<|vision_start|><|image_pad|><|vision_end|>Zoomed into [{box}] of image 0.</tool_response><|im_end|>\n"
        f"<|im_start|>assistant\n{ANSWER_PREFIX}"
    )


def example(rng: random.Random, cell: int = GT_CELL):
    horizontal = rng.random() < 0.5
    image = stripes_image(IMAGE_SIZE, cell_box(cell, IMAGE_SIZE, 2), horizontal)
    question = rng.choice(QUESTIONS).format(cell=cell_name(cell, 2))
    return {"image": image, "question": question, "answer": "A" if horizontal else "B", "cell": cell}


def letter_ids(processor) -> list[int]:
    ids = [processor.tokenizer.encode(letter) for letter in ("A", "B")]
    assert all(len(i) == 1 for i in ids), ids
    return [i[0] for i in ids]


def read(args) -> None:
    processor, model = load(args.threads)
    letters = letter_ids(processor)
    boxes = [box_text(b) for b in grid_boxes(SEEN, SEEN, 2)]
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)

    def batch(size, hit, rng):
        rows = [example(rng) for _ in range(size)]
        cells = [GT_CELL if rng.random() < hit else rng.choice([0, 1, 2]) for _ in rows]
        texts = [answer_context(r["question"], boxes[c]) for r, c in zip(rows, cells)]
        images = [im for r, c in zip(rows, cells) for im in (r["image"], r["image"].crop(cell_box(c, IMAGE_SIZE, 2)))]
        target = torch.tensor([0 if r["answer"] == "A" else 1 for r in rows])
        return encode(processor, texts, images), target

    test, test_target = batch(32, 1.0, random.Random(10_000 + args.seed))
    with torch.no_grad():
        out = model(**test, output_hidden_states=True)
        hidden = out.hidden_states[-1][:, -1]
        h, v = hidden[test_target == 0], hidden[test_target == 1]
        print(
            f"hidden state at <answer>: |mean(H) - mean(V)| {(h.mean(0) - v.mean(0)).norm():.3f}, "
            f"within-class std {h.std(0).norm():.3f}"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.monotonic()
    for step in range(1, args.steps + 1):
        enc, target = batch(args.batch, args.hit, rng)
        logp = torch.log_softmax(model(**enc).logits[:, -1, letters], -1)
        if args.rl:
            action = torch.multinomial(logp.exp().detach(), 1).squeeze(1)
            reward = (action == target).float()
            loss = -((reward - reward.mean()) * logp[torch.arange(len(action)), action]).mean()
        else:
            loss = -logp[torch.arange(len(target)), target].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            p_a = torch.softmax(model(**test).logits[:, -1, letters], -1)[:, 0]
        acc = ((p_a < 0.5).long() == test_target).float().mean()
        print(
            f"step {step:3d}  test acc (gt crops) {acc:.2f}  P(A|H) {p_a[test_target == 0].mean():.2f}  "
            f"P(A|V) {p_a[test_target == 1].mean():.2f}  {time.monotonic() - start:.0f} s",
            flush=True,
        )


def low_var_kl(logp, ref_logp):
    d = (ref_logp - logp).clamp(-20, 20)
    return (d.exp() - d - 1).clamp(-10, 10)


def grpo(args) -> None:
    processor, model = load(args.threads)
    tokenizer = processor.tokenizer
    letters = letter_ids(processor)
    boxes = [box_text(b) for b in grid_boxes(SEEN, SEEN, 2)]
    trie = TokenTrie(boxes, tokenizer.encode)
    ref = copy.deepcopy(model).eval() if args.kl else None
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def decision_logps(enc, logits, i, ids):
        """(restricted log-prob: sampling; full-vocab log-prob of the branching tokens: the loss)."""
        assert enc["input_ids"][i, -len(ids) :].tolist() == ids
        lg = logits[i, -len(ids) - 1 : -1]
        restricted, full, positions = 0.0, 0.0, []
        for t in range(len(ids)):
            allowed = trie.allowed(ids[:t])
            if len(allowed) > 1:
                restricted = restricted + lg[t, ids[t]] - torch.logsumexp(lg[t, allowed], -1)
                full = full + torch.log_softmax(lg[t], -1)[ids[t]]
                positions.append(t)
        return restricted, full, positions

    start = time.monotonic()
    for step in range(1, args.steps + 1):
        prompts = [example(rng) for _ in range(args.batch)]
        # zoom: every candidate teacher-forced; the constrained policy's distribution over the cells
        texts = [zoom_context(p["question"]) + b for p in prompts for b in boxes]
        enc = encode(processor, texts, [p["image"] for p in prompts for _ in boxes])
        logits = model(**enc).logits
        ref_logits = ref(**enc).logits.detach() if ref is not None else None
        restricted, full, ref_full = [], [], []
        for i in range(len(texts)):
            ids = tokenizer.encode(boxes[i % len(boxes)])
            r, f, positions = decision_logps(enc, logits, i, ids)
            restricted.append(r)
            full.append(f)
            if ref_logits is not None:
                lr = torch.log_softmax(ref_logits[i, -len(ids) - 1 : -1], -1)
                ref_full.append(sum(lr[t, ids[t]] for t in positions))
        probs = torch.softmax(torch.stack(restricted).detach().view(len(prompts), len(boxes)), -1)
        rows = [(g, torch.multinomial(probs[g], 1).item()) for g in range(len(prompts)) for _ in range(args.n)]
        # answer, after the crop of the sampled cell
        texts = [answer_context(prompts[g]["question"], boxes[c]) for g, c in rows]
        images = [
            im for g, c in rows for im in (prompts[g]["image"], prompts[g]["image"].crop(cell_box(c, IMAGE_SIZE, 2)))
        ]
        enc = encode(processor, texts, images)
        answer_logp = torch.log_softmax(model(**enc).logits[:, -1], -1)
        answer_ref = torch.log_softmax(ref(**enc).logits[:, -1].detach(), -1) if ref is not None else None
        p_a = torch.softmax(answer_logp[:, letters].detach(), -1)[:, 0]
        chosen = [letters[0] if rng.random() < p_a[j].item() else letters[1] for j in range(len(rows))]
        correct = [(c == letters[0]) == (prompts[g]["answer"] == "A") for c, (g, _) in zip(chosen, rows)]
        rewards = []
        for g in range(len(prompts)):
            members = [j for j, (gg, _) in enumerate(rows) if gg == g]
            quorum = [rows[j][1] for j in members if correct[j]]
            majority = [c for c in set(quorum) if quorum.count(c) > len(quorum) / 2]
            for j in members:
                tool = 0.0
                if correct[j] and args.tool == "correct":
                    tool = 1.0
                elif correct[j] and args.tool == "consensus":
                    tool = 1.0 if majority and rows[j][1] == majority[0] else 0.5
                rewards.append(float(correct[j]) + tool)
        r = torch.tensor(rewards).view(len(prompts), args.n)
        advantage = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).view(-1)
        zoom_logp = torch.stack([full[g * len(boxes) + c] for g, c in rows])
        letter_logp = torch.stack([answer_logp[j, chosen[j]] for j in range(len(rows))])
        loss = -(advantage * (zoom_logp + letter_logp)).mean()
        if ref is not None:
            zoom_ref = torch.stack([torch.as_tensor(ref_full[g * len(boxes) + c]) for g, c in rows])
            letter_ref = torch.stack([answer_ref[j, chosen[j]] for j in range(len(rows))])
            loss = loss + args.kl * (low_var_kl(zoom_logp, zoom_ref) + low_var_kl(letter_logp, letter_ref)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hit = sum(c == prompts[g]["cell"] for g, c in rows) / len(rows)
        print(
            f"step {step:3d}  reward {r.mean():.2f}  acc {sum(correct) / len(rows):.2f}  zoom_gt_hit {hit:.2f}  "
            f"P(cell) {[round(x, 2) for x in probs.mean(0).tolist()]}  {time.monotonic() - start:.0f} s",
            flush=True,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("read", "grpo"))
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=None, help="read: examples (16); grpo: prompts (8)")
    parser.add_argument("--n", type=int, default=4, help="grpo: samples per prompt")
    parser.add_argument("--hit", type=float, default=1.0, help="read: share of crops that show the lines")
    parser.add_argument("--rl", action="store_true", help="read: REINFORCE instead of supervised")
    parser.add_argument("--tool", choices=("consensus", "correct", "none"), default="consensus")
    parser.add_argument("--kl", type=float, default=0.0, help="grpo: low-var KL coefficient to the initial model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 16 if args.mode == "read" else 8
    (read if args.mode == "read" else grpo)(args)


if __name__ == "__main__":
    main()
