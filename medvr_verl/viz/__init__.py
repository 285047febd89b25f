"""Pictures of Consensus Credit Assignment: one group's zoom boxes and consensus drawn over the image.

Pillow only; imports neither veRL nor torch. Three ways in:

* :func:`render_group_overlay` / :func:`group_overlays`: draw a group you hold in memory.
* :func:`write_step_overlays`: called during training with the images of a few prompts and the
  per-trajectory ``reward_extra_info`` dicts (plus ``score``) of their groups; writes ``max_groups``
  PNGs.
* ``python -m medvr_verl.viz`` (:mod:`medvr_verl.viz.__main__`) over the JSONL files veRL dumps
  when ``trainer.rollout_data_dir`` (training) or ``trainer.validation_data_dir`` is set.

Modules, one job each: :mod:`~medvr_verl.viz.draw` (drawing), :mod:`~medvr_verl.viz.records`
(records -> views, file names, the training hook), :mod:`~medvr_verl.viz.images` (dataset images
from parquet), :mod:`~medvr_verl.viz.dumps` (rollout dumps -> PNGs), ``__main__`` (the CLI).

What a picture shows
--------------------
The image (any Pillow mode, 16-bit grayscale windowed by :func:`medvr_verl.tools.image_io.to_rgb8`)
scaled so its longer side is at most ``max_side`` (tiny images are enlarged with nearest-neighbour
to ``min_side``); the consensus region as a translucent green fill with an opaque green outline
of the region's boundary; each trajectory's zoom boxes as outlines in its own colour -- **solid for a
correct answer, dashed for a wrong one**, with a filled triangle in the bottom-right corner for an
**EVR fork** -- tagged with the trajectory's label; a legend panel on the right with, per trajectory,
a line-style swatch, label, kind (``base`` / ``fork`` / ``fork of #k``, when the records say),
``ok``/``wrong``, composite reward ``R``, tool reward, IoU with the consensus (``-`` outside the
quorum) and its number of boxes on this image.

Fields read from each trajectory's record (``reward_extra_info`` of the ``medvr_cca`` manager, and
so also every line of veRL's dump): ``zoom_boxes_json`` and ``cca_consensus_json`` (JSON lists of
``[image_index, x1, y1, x2, y2]`` in original-image pixels), ``group_uid`` (the group's ``uid``; a
plain ``uid`` field is read when ``group_uid`` is absent or empty), ``sample_index`` (dataset row,
``extra_info.index``; -1 unknown), ``acc``, ``tool_reward``, ``cca_iou``, ``score`` (the composite
reward; veRL's dump puts the summed token-level score there), optionally ``cca_in_quorum``,
``cca_quorum_size``, ``fork`` (bool; or ``medvr_fork`` as in a V1 row's ``extra_fields``: None for a
base, a dict for a fork) and ``fork_of`` (0-based position of a fork's base in the group). Values
that went through ``json.dumps(default=str)`` as strings are accepted.
"""

from __future__ import annotations

from typing import Any

from medvr_verl.viz.draw import (
    BACKGROUND,
    CONSENSUS_ALPHA,
    CONSENSUS_COLOR,
    MemberView,
    TrajectoryView,
    group_overlays,
    render_group_overlay,
    save_png,
    trajectory_color,
)
from medvr_verl.viz.dumps import RenderSummary, render_rollouts
from medvr_verl.viz.images import ParquetImages
from medvr_verl.viz.records import members_from_records, overlay_filename, parse_image_boxes, write_step_overlays

__all__ = [
    "BACKGROUND",
    "CONSENSUS_ALPHA",
    "CONSENSUS_COLOR",
    "MemberView",
    "ParquetImages",
    "RenderSummary",
    "TrajectoryView",
    "group_overlays",
    "main",
    "members_from_records",
    "overlay_filename",
    "parse_image_boxes",
    "render_group_overlay",
    "render_rollouts",
    "save_png",
    "trajectory_color",
    "write_step_overlays",
]


def __getattr__(name: str) -> Any:
    # The CLI lives in __main__.py; importing it here eagerly would make ``python -m medvr_verl.viz``
    # find it already imported (runpy's RuntimeWarning), so ``main`` is loaded on first access.
    if name == "main":
        from medvr_verl.viz.__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
