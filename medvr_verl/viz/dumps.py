"""veRL rollout dumps (``trainer.rollout_data_dir`` / ``trainer.validation_data_dir`` JSONL) -> PNGs."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medvr_verl import io_utils
from medvr_verl.viz.draw import save_png
from medvr_verl.viz.images import ParquetImages
from medvr_verl.viz.records import F_INDEX, as_int, has_boxes, render_records, uid_of, unique_path


@dataclass
class RenderSummary:
    """Counts of one :func:`render_rollouts` run."""

    records: int = 0
    groups: int = 0
    groups_without_boxes: int = 0
    rendered_groups: int = 0
    written: list[Path] = field(default_factory=list)
    bad_lines: int = 0
    skipped_missing_index: int = 0
    """Records whose group has no usable ``sample_index`` (missing, -1, not an integer)."""
    skipped_missing_row: int = 0
    """Groups whose ``sample_index`` is not a row of the dataset."""
    skipped_image_error: int = 0
    """Groups whose images could not be read or drawn."""
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.skipped_missing_index + self.skipped_missing_row + self.skipped_image_error

    def lines(self) -> list[str]:
        return [
            f"records read:            {self.records} ({self.bad_lines} unreadable lines)",
            f"groups:                  {self.groups} ({self.groups_without_boxes} without any zoom box)",
            f"groups rendered:         {self.rendered_groups} -> {len(self.written)} PNG file(s)",
            f"skipped records, no sample_index: {self.skipped_missing_index}",
            f"skipped groups, row not in dataset: {self.skipped_missing_row}",
            f"skipped groups, image/draw error:   {self.skipped_image_error}",
        ]

    def note(self, message: str, limit: int = 20) -> None:
        """Keep a warning; print the first ``limit`` on stderr (without breaking the progress bar)."""
        self.warnings.append(message)
        if len(self.warnings) <= limit:
            io_utils.progress_write(f"warning: {message}")
        elif len(self.warnings) == limit + 1:
            io_utils.progress_write("warning: further warnings are only counted in the summary")


def _jsonl_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():

            def key(f: Path):
                return (0, int(f.stem), f.name) if f.stem.isdigit() else (1, 0, f.name)

            files.extend(sorted(p.glob("*.jsonl"), key=key))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"rollout file not found: {p}")
    return files


def _read_groups(files: Sequence[Path], step: int | None, summary: RenderSummary) -> OrderedDict[tuple, list[dict]]:
    """Records grouped by ``(step, uid)``, or ``(step, sample_index)`` for a record without a uid."""
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    summary.bad_lines += 1
                    summary.note(f"{path}:{lineno}: unreadable line ({exc})")
                    continue
                rec_step = as_int(rec.get("step"))
                if step is not None and rec_step != step:
                    continue
                summary.records += 1
                uid = uid_of(rec)
                if uid is not None:
                    key = (rec_step, "uid", uid)
                else:
                    index = as_int(rec.get(F_INDEX))
                    if index is None or index < 0:
                        summary.skipped_missing_index += 1
                        summary.note(f"{path}:{lineno}: record has neither uid nor sample_index; skipped")
                        continue
                    key = (rec_step, "idx", index)
                groups.setdefault(key, []).append(rec)
    return groups


def render_rollouts(
    rollouts: Sequence[str | os.PathLike],
    data: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    step: int | None = None,
    max_groups: int | None = None,
    max_side: int = 1024,
    index_by: str = "auto",
    progress: bool = True,
) -> RenderSummary:
    """Draw the groups of veRL rollout dumps (JSONL) over their dataset images.

    Records group by ``(step, uid)``; a record without ``uid`` groups by ``(step, sample_index)``.
    ``max_groups`` counts groups that have boxes (groups without any are counted, not drawn).
    Raises FileNotFoundError / ValueError for missing inputs or a parquet without images; bad
    records, rows and images are counted in the summary instead. ``progress``: a tqdm bar on stderr.
    """
    files = _jsonl_files(rollouts)
    source = ParquetImages(data, index_by=index_by)
    out = Path(out_dir)
    summary = RenderSummary()
    groups = _read_groups(files, step, summary)
    summary.groups = len(groups)

    selected = []
    for (rec_step, kind, ident), records in groups.items():
        if not has_boxes(records):
            summary.groups_without_boxes += 1
            continue
        indices = [i for i in (as_int(r.get(F_INDEX)) for r in records) if i is not None and i >= 0]
        if not indices:
            summary.skipped_missing_index += len(records)
            summary.note(f"group uid={ident} step={rec_step}: no record has a sample_index; skipped")
            continue
        index = max(set(indices), key=lambda i: (indices.count(i), -i))
        if len(set(indices)) > 1:
            summary.note(f"group uid={ident} step={rec_step}: sample_index differs within the group, using {index}")
        selected.append((rec_step, index, ident if kind == "uid" else None, records))
    if max_groups is not None:
        selected = selected[: max(0, max_groups)]

    used: set[str] = set()
    for rec_step, index, uid, records in io_utils.progress(selected, enabled=progress, desc="viz", unit="group"):
        where = f"sample_index {index} (uid={uid}, step={rec_step})"
        if source.row_of(index) is None:
            summary.skipped_missing_row += 1
            summary.note(f"{where} is not a row of the dataset; skipped")
            continue
        try:
            images = source.images(index)
            panels = render_records(images, records, step=rec_step, sample_index=index, uid=uid, max_side=max_side)
        except Exception as exc:
            summary.skipped_image_error += 1
            summary.note(f"{where}: {type(exc).__name__}: {exc}")
            continue
        if not panels:
            summary.skipped_image_error += 1
            summary.note(f"{where}: boxes refer to images the row does not have")
            continue
        for name, img in panels:
            summary.written.append(save_png(img, unique_path(out, name, used)))
        summary.rendered_groups += 1
    return summary
