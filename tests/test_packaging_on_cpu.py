"""Packaging: pyproject.toml lists every package, ships the recipes, and the wheel carries them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(_project()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "medvr_verl").rglob("__init__.py")}
    found |= {
        "medvr_verl." + ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "recipes").rglob("__init__.py")
    }
    assert found == listed


def test_one_version_and_the_pinned_verl():
    import medvr_verl

    project = _project()["project"]
    assert project["dynamic"] == ["version"] and medvr_verl.__version__
    assert "verl[verl-core]==0.9.1" in project["dependencies"]
    assert project["optional-dependencies"]["vllm"] == ["verl[vllm]==0.9.1"]
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_setup_py_is_a_shim_without_metadata():
    """setup.py exists for tools that call it, and holds no metadata: one ``setup()`` call, no arguments
    (everything lives in pyproject.toml)."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [(c.func.id, c.args, c.keywords) for c in calls] == [("setup", [], [])]


def test_wheel_ships_recipes_and_entry_point(tmp_path):
    import shutil
    import subprocess
    import sys

    source = tmp_path / "src"  # a copy: setuptools leaves build/ and *.egg-info beside the sources
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "tests", "medvr_demo*")
    shutil.copytree(REPO, source, ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("medvr_verl-*.whl")
    # the setup.py shim reads the same metadata from pyproject.toml
    import medvr_verl

    shim = subprocess.run(
        [sys.executable, "setup.py", "--name", "--version"], cwd=source, capture_output=True, text=True, check=True
    )
    assert shim.stdout.split()[-2:] == ["medvr-verl", medvr_verl.__version__]
    names = zipfile.ZipFile(wheel).namelist()
    for path in (
        "medvr_verl/recipes/medvr/medvr.yaml",
        "medvr_verl/recipes/medvr/zoom_tool.yaml",
        "medvr_verl/recipes/medvr/qwen2_5_vl_tool_chat_template.jinja",
        "medvr_verl/recipes/medvlm_r1/medvlm_r1.yaml",
        "medvr_verl/testing/qwen2_5_vl_chat_template.jinja",
    ):
        assert path in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "medvr = medvr_verl.plugin" in zipfile.ZipFile(wheel).read(entry_points).decode()
