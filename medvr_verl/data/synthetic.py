"""A synthetic zoom task whose answer is visible only inside a known region: ``stripes``.

Each image is a uniform gray square (``size`` pixels, default 224; the learning run uses 448) with
one ``grid x grid`` cell holding black-and-white lines one pixel wide, horizontal (answer ``A``) or
vertical (answer ``B``).
Seen whole at the recipe's pixel budget (``data.mm_processor_kwargs``: half the side, so 112 x 112
for the default size) the image is shrunk 2x, which averages every pair of lines to the background's
gray: the whole image says nothing about the answer. A zoom into the cell crops at native resolution
and shows the lines. So a policy answers right beyond chance only when it zooms where the lines are.

Where the lines sit: ``cells`` (default ``(3,)``, the bottom-right cell; a fixed prior) -- one cell
per record, drawn from the list; the question names it in words, so with several cells the place
follows from the question text. The cell is the record's ``gt_boxes`` (pixels of the image at its
original resolution, as SLAKE's converter writes its detection boxes), so the consensus monitor
(``medvr/cca_gt_iou``, ``medvr/zoom_gt_iou``) and ``medvr_verl.eval``'s grounding check can score
zooms against it.

The rows are written by the converters' own writer (:func:`medvr_verl.data.write_records`: veRL's
schema, the zoom-tool system prompt, images embedded)::

    from medvr_verl.data.synthetic import write_stripes
    write_stripes("stripes.parquet", num_records=64, seed=0)

Imports neither veRL nor torch.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from medvr_verl.data.records import ConversionReport, ImageRef, Record

DATASET = "synthetic_stripes"
OPTIONS = {"A": "horizontal", "B": "vertical"}
CELL_NAMES_2X2 = ("top-left", "top-right", "bottom-left", "bottom-right")
BACKGROUND = 128
#: question wordings of different lengths, one drawn per record: with one wording every trajectory of a
#: converged policy has the same length, and veRL 0.9.1's mini-batch split (index_select on the
#: nested 3-D position ids, ``verl/utils/tensordict_utils.py``) fails on a batch whose rows all have
#: one length ("split_with_sizes expects split_sizes to sum exactly to ...")
QUESTIONS = (
    "The lines are in the {cell} part of the image. Are they horizontal or vertical?",
    "Look at the {cell} part: are the lines there horizontal or vertical?",
    "There are lines in the {cell} part of this image. Are they horizontal or are they vertical?",
    "Lines, {cell} part. Horizontal or vertical?",
    "In the {cell} part of the image you will find lines. Which way do they run, horizontal or vertical?",
    "Which way do the lines in the {cell} part run?",
    "The {cell} part of the picture holds thin lines. Are those lines horizontal or vertical?",
    "Horizontal or vertical: the lines in the {cell} part of the image?",
)


def cell_box(cell: int, size: int, grid: int) -> list[float]:
    """Pixel box ``[x1, y1, x2, y2]`` of row-major ``cell`` of a ``grid x grid`` partition."""
    if not 0 <= cell < grid * grid:
        raise ValueError(f"cell must lie in [0, {grid * grid}), got {cell}")
    step = size / grid
    col, row = cell % grid, cell // grid
    return [col * step, row * step, (col + 1) * step, (row + 1) * step]


def cell_name(cell: int, grid: int) -> str:
    if grid == 2:
        return CELL_NAMES_2X2[cell]
    return f"row {cell // grid + 1}, column {cell % grid + 1}"


def stripes_image(size: int, box: Sequence[float], horizontal: bool):
    """The gray image with 1-pixel black/white lines inside ``box`` (PIL ``RGB``)."""
    import numpy as np
    from PIL import Image

    pixels = np.full((size, size), BACKGROUND, dtype=np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    ys, xs = np.mgrid[y1:y2, x1:x2]
    pixels[y1:y2, x1:x2] = np.where(((ys if horizontal else xs) % 2) == 0, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def stripes_records(
    num_records: int,
    *,
    seed: int = 0,
    size: int = 224,
    grid: int = 2,
    cells: Sequence[int] = (3,),
    split: str = "train",
) -> list[Record]:
    """``num_records`` questions, answers balanced A/B in a seeded random order."""
    if size % (2 * grid):
        raise ValueError(f"size must be a multiple of 2 * grid, got {size} with grid {grid}")
    if not cells:
        raise ValueError("cells must name at least one cell")
    rng = random.Random(seed)
    answers = ["A", "B"] * ((num_records + 1) // 2)
    rng.shuffle(answers)
    records = []
    for i in range(num_records):
        cell = cells[rng.randrange(len(cells))] if len(cells) > 1 else cells[0]
        box = cell_box(cell, size, grid)
        answer = answers[i]
        records.append(
            Record(
                dataset=DATASET,
                split=split,
                source_id=f"{seed}-{i}",
                question=QUESTIONS[rng.randrange(len(QUESTIONS))].format(cell=cell_name(cell, grid)),
                answer=answer,
                question_type="multiple_choice",
                options=dict(OPTIONS),
                images=[ImageRef(name=f"stripes_{seed}_{i}.png", pil=stripes_image(size, box, answer == "A"))],
                gt_boxes=[box],
                gt_box_labels=["lines"],
                meta={"cell": cell, "grid": grid},
            )
        )
    return records


def write_stripes(
    out_path: str | os.PathLike,
    num_records: int = 64,
    *,
    seed: int = 0,
    size: int = 224,
    grid: int = 2,
    cells: Sequence[int] = (3,),
    split: str = "train",
    system_prompt: str | None = None,
    progress: bool = False,
) -> ConversionReport:
    """Write :func:`stripes_records` to ``out_path`` with :func:`medvr_verl.data.write_records`."""
    from medvr_verl.data.writer import write_records

    records = stripes_records(num_records, seed=seed, size=size, grid=grid, cells=cells, split=split)
    report = ConversionReport(dataset=DATASET, split=split)
    return write_records(records, out_path, report=report, system_prompt=system_prompt, progress=progress)
