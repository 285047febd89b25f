"""Plugin import order never matters (issue 10): importing the zoom tool before veRL must still
register ``medvr_agent``, and every importer sees one and the same ``ZoomInTool`` class."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CHECK = """
import sys
{first}
import verl
import medvr_verl.agent_loop as agent_loop
import medvr_verl.tools.zoom as zoom
from medvr_verl.tools import ZoomInTool
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
assert "medvr_agent" in _agent_loop_registry, sorted(_agent_loop_registry)
assert agent_loop.ZoomInTool is zoom.ZoomInTool is ZoomInTool
assert sys.modules["medvr_verl.tools.zoom"] is zoom
{extra}
print("ok")
"""


@pytest.mark.parametrize(
    "first, extra",
    [
        ("from medvr_verl.tools import ZoomInTool as first", "assert first is ZoomInTool"),
        ("from medvr_verl.tools.zoom import ZoomInTool as first, ORIGINALS_ATTR", "assert first is ZoomInTool"),
        ("import medvr_verl.tools.zoom as first", "assert first is zoom"),
        ("import medvr_verl.tools.image_io", ""),
        ("import medvr_verl.agent_loop", ""),
        ("import medvr_verl.reward_manager", ""),
        ("import verl", ""),
    ],
)
def test_any_import_order_registers_the_agent_loop(first, extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK.format(first=first, extra=extra)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
    assert "failed to register" not in proc.stderr, proc.stderr[-3000:]
