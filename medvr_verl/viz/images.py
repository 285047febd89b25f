"""The images of veRL dataset rows, read lazily from parquet (what the rollout-dump CLI draws over)."""

from __future__ import annotations

import base64
import binascii
import bisect
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from medvr_verl.tools.image_io import load_medical_image
from medvr_verl.viz.records import as_int


def decode_image(entry: Any, base_dir: Path | None) -> Image.Image:
    """One cell entry of veRL's ``images`` column -> PIL image (8-bit ``L``/``RGB``).

    Accepted: a PIL image, encoded bytes, ``{"bytes": ...}`` / ``{"image" | "path" | "image_url" |
    "url": ...}``, a ``data:image/...;base64,`` URL, a file path (``file://`` allowed; relative paths
    also tried against ``base_dir``). Remote URLs are refused (no network access here).
    """
    if isinstance(entry, Image.Image):
        return entry
    if isinstance(entry, (bytes, bytearray, memoryview)):
        return load_medical_image(bytes(entry))
    if isinstance(entry, Mapping):
        if entry.get("bytes") is not None:
            return load_medical_image(bytes(entry["bytes"]))
        for key in ("image", "path", "image_url", "url"):
            if entry.get(key) is not None:
                return decode_image(entry[key], base_dir)
        raise ValueError(f"image entry has none of bytes/image/path: keys {sorted(entry)}")
    if isinstance(entry, str):
        text = entry.strip()
        if text.startswith("data:image") and "," in text:
            try:
                return load_medical_image(base64.b64decode(text.split(",", 1)[1], validate=False))
            except binascii.Error as exc:
                raise ValueError(f"bad base64 image data: {exc}") from exc
        if text.startswith(("http://", "https://")):
            raise ValueError(f"remote image {text[:80]!r} is not fetched (no network access in viz)")
        if text.startswith("file://"):
            text = text[len("file://") :]
        path = Path(text).expanduser()
        if not path.is_absolute() and not path.exists() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        if not path.exists():
            raise FileNotFoundError(f"image file not found: {text}")
        return load_medical_image(str(path))
    raise ValueError(f"unsupported image entry of type {type(entry).__name__}")


class ParquetImages:
    """Images of veRL dataset rows, read lazily from one or more parquet files (concatenated in order).

    ``index_by``: ``"extra_info"`` maps a sample index through ``extra_info.index`` (what the reward
    manager writes as ``sample_index``); ``"row"`` uses the row position; ``"auto"`` (default) uses
    ``extra_info.index`` when every row has a distinct integer one, else the row position.
    Only the ``images`` column of the row group holding a row is read (two row groups cached).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], index_by: str = "auto", image_key: str = "images"):
        import pyarrow.parquet as pq

        if index_by not in ("auto", "row", "extra_info"):
            raise ValueError(f"index_by must be auto, row or extra_info, got {index_by!r}")
        self.image_key = image_key
        self._parts: list[tuple[Path, Any, int]] = []  # (path, ParquetFile, first global row)
        self._groups: list[tuple[int, int, int, int]] = []  # (first row, n rows, part, row group)
        row = 0
        for p in paths:
            path = Path(p)
            if not path.is_file():
                raise FileNotFoundError(f"dataset parquet not found: {path}")
            pf = pq.ParquetFile(str(path))
            names = pf.schema_arrow.names
            if image_key not in names:
                raise ValueError(f"{path} has no {image_key!r} column (columns: {names})")
            part = len(self._parts)
            self._parts.append((path, pf, row))
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                self._groups.append((row, n, part, rg))
                row += n
        self.num_rows = row
        self._starts = [g[0] for g in self._groups]
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._index_map: dict[int, int] | None = None
        self.index_by = "row"
        if index_by != "row":
            mapping = self._extra_info_index()
            if mapping is not None:
                self._index_map, self.index_by = mapping, "extra_info"
            elif index_by == "extra_info":
                raise ValueError("extra_info.index is missing or not unique in the dataset; use index_by='row'")

    def _extra_info_index(self) -> dict[int, int] | None:
        mapping: dict[int, int] = {}
        for _path, pf, first in self._parts:
            if "extra_info" not in pf.schema_arrow.names:
                return None
            values = pf.read(columns=["extra_info"]).column("extra_info").to_pylist()
            for offset, info in enumerate(values):
                idx = as_int(info.get("index")) if isinstance(info, Mapping) else None
                if idx is None or idx in mapping:
                    return None
                mapping[idx] = first + offset
        return mapping

    def row_of(self, sample_index: int) -> int | None:
        """Global row of a sample index, None when the dataset has no such row."""
        if self._index_map is not None:
            return self._index_map.get(sample_index)
        return sample_index if 0 <= sample_index < self.num_rows else None

    def _column(self, g: int):
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        _, _, part, rg = self._groups[g]
        column = self._parts[part][1].read_row_group(rg, columns=[self.image_key]).column(self.image_key)
        self._cache[g] = column
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return column

    def images(self, sample_index: int) -> list[Image.Image]:
        """Decoded images of a sample. Raises KeyError (no such row), ValueError/OSError (bad image)."""
        row = self.row_of(sample_index)
        if row is None:
            raise KeyError(f"sample_index {sample_index} not in the dataset ({self.num_rows} rows, by {self.index_by})")
        g = bisect.bisect_right(self._starts, row) - 1
        first, _, part, _ = self._groups[g]
        cell = self._column(g)[row - first].as_py()
        if cell is None:
            return []
        if not isinstance(cell, (list, tuple)):
            cell = [cell]
        base_dir = self._parts[part][0].parent
        return [decode_image(entry, base_dir) for entry in cell]
