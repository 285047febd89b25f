"""veRL tools of medvr-verl.

``medvr_verl.tools.ZoomInTool`` (pinned name) is the zoom-in tool ``image_zoom_in_tool``; its YAML is
``recipes/medvr/zoom_tool.yaml``. The export is lazy so that importing :mod:`medvr_verl.tools.image_io`
(pure Pillow/numpy) does not import veRL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ZoomInTool"]

if TYPE_CHECKING:  # pragma: no cover
    from medvr_verl.tools.zoom import ZoomInTool


def __getattr__(name: str) -> Any:
    if name == "ZoomInTool":
        from medvr_verl.tools.zoom import ZoomInTool

        return ZoomInTool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
