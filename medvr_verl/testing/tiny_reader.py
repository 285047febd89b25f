"""The tiny Qwen2.5-VL taught to read the stripes in a crop: perception trained, where to look not.

TEST / BENCHMARK FIXTURE. The learning run (:mod:`medvr_verl.cpu.learning`) from the random-weight
tiny model must learn two things at once from its own rollouts: to read the lines' direction in a
crop, and where to zoom. Only the 1 zoom in 4 that hits the lines carries signal for reading, and
until the model reads, the zoom gets none from accuracy; when the rise starts then varies from run
to run (README, "Does it learn?"). MedVR starts from a pretrained VLM that perceives and teaches it
where to look. This fixture does the same at toy scale: :func:`tiny_reader_path` trains the tiny
model supervised, for :data:`READER_STEPS` steps, to answer the stripes question from the crop of
the lines' cell, and to give A and B equal odds on a crop of another cell (it cannot see there; a
reader sure of "A" on blank crops, as the first version was, P(A) 0.88, hands RL a letter bias
that one run amplified into answering "A" everywhere, erasing the reading). It is trained in the
run's own context (the recipe's tool chat template, the learning run's system prompt and tool
schema, the ``constrained`` policy's zoom turn and the tool response with the crop). The zoom is
never trained here: which cell to zoom is left to the RL run, from the random model's prior
(about 1 in 4).

Built once per parameter set and cached beside the tiny model (``...-reader``), like
:func:`medvr_verl.testing.tiny_qwen25vl.tiny_qwen25vl_path`; about half a minute on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medvr_verl.testing.tiny_qwen25vl import build_cached, read_build_marker, tiny_qwen25vl_path

READER_STEPS = 30
READER_BATCH = 16
READER_LR = 1e-3
_MARKER = "medvr_tiny_reader.json"
CHAT_TEMPLATE = "medvr_verl.recipes.medvr/qwen2_5_vl_tool_chat_template.jinja"


def answer_context(processor, messages: list[dict], box: list[int]) -> str:
    """The learning run's context up to the answer letter: the row's ``messages`` (as the stripes
    set's converter writes them, ``<image>`` placeholder in the user turn) under the recipe's tool
    chat template with the learning run's tool schema, the ``constrained`` zoom turn into ``box``
    (pixels of the image as the model sees it), the tool response with the crop, and the answer
    turn's template text up to the letter."""
    from medvr_verl.cpu.constrained import ANSWER_PREFIX, ZOOM_PREFIX, ZOOM_SUFFIX, box_text
    from medvr_verl.cpu.learning import TOOL_CONFIG
    from medvr_verl.resolvers import pkg_text

    box = box_text(box)
    chat = []
    for message in messages:
        if message["role"] == "user":  # veRL's dataset splits the user turn at the placeholder
            before, _, after = message["content"].partition("<image>")
            content = ([{"type": "text", "text": before}] if before else []) + [{"type": "image"}]
            chat.append({"role": "user", "content": content + [{"type": "text", "text": after}]})
        else:
            chat.append(message)
    chat += [
        {"role": "assistant", "content": ZOOM_PREFIX + box + ZOOM_SUFFIX},
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": f"Zoomed into [{box}] of image 0."}]},
    ]
    text = processor.apply_chat_template(
        chat,
        tools=[tool["tool_schema"] for tool in TOOL_CONFIG["tools"]],
        tokenize=False,
        add_generation_prompt=True,
        chat_template=pkg_text(CHAT_TEMPLATE),
    )
    return text + ANSWER_PREFIX


def encode(processor, texts: list[str], images: list) -> dict:
    """Processor inputs at the learning run's pixel budget (every image, crops too, resized to
    :data:`medvr_verl.cpu.learning.PIXELS`), left-padded so the last position is the answer's."""
    from medvr_verl.cpu.learning import PIXELS

    return processor(
        text=texts,
        images=images,
        return_tensors="pt",
        padding=True,
        padding_side="left",
        min_pixels=PIXELS,
        max_pixels=PIXELS,
    )


def _batch(processor, records, cells):
    """Processor inputs of ``records`` (stripes rows, as the learning run's data), record ``i``
    zoomed into cell ``cells[i]``, and the target distribution over (A, B): the answer (A:
    horizontal, B: vertical) where the cell is the lines' cell, (0.5, 0.5) where the crop shows
    none of them."""
    import torch

    from medvr_verl.cpu.constrained import grid_boxes
    from medvr_verl.cpu.learning import IMAGE_SIZE, SYSTEM_PROMPT
    from medvr_verl.data.prompts import build_messages
    from medvr_verl.data.synthetic import cell_box

    texts, images, targets = [], [], []
    for record, cell in zip(records, cells):
        grid = record.meta["grid"]
        seen_box = grid_boxes(IMAGE_SIZE // 2, IMAGE_SIZE // 2, grid)[cell]
        texts.append(answer_context(processor, build_messages(record, SYSTEM_PROMPT), seen_box))
        image = record.images[0].pil
        images += [image, image.crop(cell_box(cell, IMAGE_SIZE, grid))]
        if cell != record.meta["cell"]:
            targets.append([0.5, 0.5])
        else:
            targets.append([1.0, 0.0] if record.answer == "A" else [0.0, 1.0])
    return encode(processor, texts, images), torch.tensor(targets)


def _cells(records, rng, miss_share: float) -> list[int]:
    """The lines' cell for each record, another cell (drawn) for a share ``miss_share``."""
    out = []
    for record in records:
        cell, grid = record.meta["cell"], record.meta["grid"]
        others = [c for c in range(grid * grid) if c != cell]
        out.append(rng.choice(others) if rng.random() < miss_share else cell)
    return out


def train_reader(base: Path, out: Path, *, steps: int, batch: int, lr: float, seed: int) -> dict:
    """Train ``base``'s answer letter on :func:`_batch`: half of each batch zoomed into the lines
    (target: the answer), half into another cell (target: A and B equally likely; a reader sure of
    a letter on a blank crop hands RL a letter bias to amplify). Cross-entropy over A/B at the
    answer position, Adam. Saves the model, processor and tokenizer to ``out``; returns the final
    loss, the held-out accuracy on crops of the lines and the held-out mean P(A) on blank crops."""
    import random

    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from medvr_verl.cpu.learning import IMAGE_SIZE
    from medvr_verl.data.synthetic import stripes_records

    torch.manual_seed(seed)
    rng = random.Random(seed)
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, torch_dtype=torch.float32)
    letters = [processor.tokenizer.encode(letter, add_special_tokens=False)[0] for letter in "AB"]
    # other records than the learning run's data (its seeds are small)
    records = stripes_records(steps * batch + 64, seed=10_000 + seed, size=IMAGE_SIZE)
    heldout, records = records[:64], records[64:]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        part = records[step * batch : (step + 1) * batch]
        inputs, target = _batch(processor, part, _cells(part, rng, 0.5))
        logp = torch.log_softmax(model(**inputs).logits[:, -1, letters], -1)
        loss = -(target * logp).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        hits = [r.meta["cell"] for r in heldout[:32]]
        inputs, target = _batch(processor, heldout[:32], hits)
        hit_acc = (model(**inputs).logits[:, -1, letters].argmax(-1) == target.argmax(-1)).float().mean()
        inputs, _ = _batch(processor, heldout[32:], _cells(heldout[32:], random.Random(seed), 1.0))
        blank_p_a = torch.softmax(model(**inputs).logits[:, -1, letters], -1)[:, 0].mean()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for extra in Path(base).iterdir():  # the tiny model's own extras (its build marker stays behind)
        if extra.is_file() and not (out / extra.name).exists() and not extra.name.startswith("medvr_"):
            shutil.copy(extra, out / extra.name)
    return {"loss": loss.item(), "heldout_acc": hit_acc.item(), "heldout_blank_p_a": blank_p_a.item()}


def tiny_reader_path(
    *, steps: int = READER_STEPS, batch: int = READER_BATCH, lr: float = READER_LR, seed: int = 0
) -> Path:
    """Build (once) and return the cached tiny reader (module docstring); concurrency-safe, as
    :func:`medvr_verl.testing.tiny_qwen25vl.build_cached` builds."""
    base = tiny_qwen25vl_path()
    base_build = read_build_marker(base)  # a rebuilt tiny model: retrain
    spec = {
        "base": str(base),
        "base_build": base_build,
        "targets": "answer on the lines' cell, uniform on the others (half each)",
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
    }
    default = (steps, batch, lr, seed) == (READER_STEPS, READER_BATCH, READER_LR, 0)
    out = base.with_name(f"{base.name}-reader" + ("" if default else f"-{steps}-{batch}-{lr}-{seed}"))

    def complete() -> bool:
        try:
            return json.loads((out / _MARKER).read_text())["spec"] == spec
        except (OSError, ValueError, KeyError):
            return False

    def write(tmp: Path) -> None:
        result = train_reader(base, tmp, steps=steps, batch=batch, lr=lr, seed=seed)
        (tmp / _MARKER).write_text(json.dumps({"spec": spec, **result}, indent=1))

    return build_cached(out, complete=complete, ours=lambda: (out / _MARKER).exists(), write=write, what="tiny reader")
