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


# ---- issue 19 item 6: the CPU backend is a runtime package: no test fixtures, no import cycle -------


def _package_imports(package: str) -> dict[str, set[str]]:
    """``{module: {medvr_verl modules it imports}}`` for every module of ``package``, function-level
    imports included (read from the source, nothing imported)."""
    import ast
    import importlib.util
    from pathlib import Path

    root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
    graph = {}
    for path in sorted(root.glob("*.py")):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in imported if m.startswith("medvr_verl")}
    return graph


def test_cpu_backend_imports_no_test_fixture():
    graph = _package_imports("medvr_verl.cpu")
    assert "medvr_verl.cpu.scripted_client" in graph and "medvr_verl.cpu.script" in graph
    offenders = {m: sorted(i for i in imports if i.startswith("medvr_verl.testing")) for m, imports in graph.items()}
    assert not any(offenders.values()), offenders


def test_cpu_backend_has_no_import_cycle():
    graph = _package_imports("medvr_verl.cpu")
    edges = {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}
    # the cycle this replaced: cpu.script imported cpu.server, which imports cpu.script
    assert "medvr_verl.cpu.script" in edges["medvr_verl.cpu.server"]
    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for nxt in edges[module]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, module, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, module])
        state[module] = 2

    for module in edges:
        if module not in state:
            visit(module, [])


def test_cpu_backend_loads_without_the_testing_package():
    """Importing every CPU backend module (the scripted policy's client included) loads no module of
    ``medvr_verl.testing``."""
    code = (
        "import sys\n"
        "import medvr_verl.cpu.server, medvr_verl.cpu.script, medvr_verl.cpu.scripted_client\n"
        "import medvr_verl.cpu.rollout, medvr_verl.cpu.platform, medvr_verl.cpu.fixes, medvr_verl.cpu.tiny_run\n"
        "medvr_verl.cpu.script.build_scripted_client\n"
        "print(sorted(m for m in sys.modules if m.startswith('medvr_verl.testing')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
