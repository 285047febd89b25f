"""Hydra search-path plugin: a relative ``--config-path`` also means the working directory.

``python -m verl.trainer.main_ppo --config-path=recipes/medvr --config-name=medvr`` from a checkout's
root: Hydra resolves a relative config path against the module that declares ``@hydra.main``
(veRL's ``main_ppo.py``) and stops with "Primary config directory not found". This
``SearchPathPlugin`` rewrites a primary config directory that does not exist to the same relative
path under the working directory, when that one exists. Every other search path is left as it is,
and so is every run whose config path exists (``pkg://medvr_verl.recipes.medvr``, absolute paths,
veRL's own ``config``). :func:`register` adds it with Hydra's public ``Plugins.register`` when the
plugin loads (``import verl``, before ``@hydra.main`` runs); a plugin in Hydra's ``hydra_plugins``
namespace package would not be found from an editable install.
"""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin


class MedVRWorkingDirectoryConfigPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            if element.provider != "main" or not element.path:
                continue
            relative = _relative_part(element.path)
            if relative is None or _exists(element.path):
                continue
            candidate = os.path.abspath(relative)
            if os.path.isdir(candidate):
                element.path = f"file://{candidate}"


def _relative_part(path: str) -> str | None:
    """The user's relative ``--config-path`` inside a primary path Hydra built from it, if any."""
    arg = _config_path_argument()
    if arg is None or arg.startswith(("pkg://", "file://", "/")):
        return None
    norm = arg.strip().rstrip("/")
    return norm if norm and path.rstrip("/").endswith(norm.replace(os.sep, "/")) else None


def _config_path_argument() -> str | None:
    import sys

    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--config-path="):
            return arg.split("=", 1)[1]
        if arg in ("--config-path", "-cp") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("-cp="):
            return arg.split("=", 1)[1]
    return None


def _exists(path: str) -> bool:
    if path.startswith("file://"):
        return os.path.isdir(path[len("file://") :])
    if path.startswith("pkg://"):
        import importlib.util

        module = path[len("pkg://") :].replace("/", ".").strip(".")
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False
    return os.path.isdir(path)


def register() -> None:
    """Add the plugin to Hydra's plugin registry (idempotent: Hydra keeps one entry per class)."""
    Plugins.instance().register(MedVRWorkingDirectoryConfigPath)
