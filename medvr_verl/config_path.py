"""Hydra search-path plugin: a relative ``--config-path`` also means the working directory.

``python -m verl.trainer.main_ppo --config-path=recipes/medvr --config-name=medvr`` from a checkout's
root: Hydra resolves a relative config path against the module that declares ``@hydra.main``
(veRL's ``main_ppo.py``) and stops with "Primary config directory not found". This
``SearchPathPlugin`` rewrites a primary config directory that does not exist to the same relative
path under the working directory, when that one exists. Every other search path is left as it is,
and so is every run whose config path exists (``pkg://medvr_verl.recipes.medvr``, absolute paths,
veRL's own ``config``). ``./recipes/medvr`` and ``recipes/medvr/`` mean the same (Hydra normalises the
path it builds). A primary config directory that exists nowhere gets one line on stderr suggesting the
installed package, ``--config-path=pkg://medvr_verl.recipes.medvr``, before Hydra's own "Primary config
directory not found". :func:`register` adds it with Hydra's public ``Plugins.register`` when the
plugin loads (``import verl``, before ``@hydra.main`` runs); a plugin in Hydra's ``hydra_plugins``
namespace package would not be found from an editable install.
"""

from __future__ import annotations

import os
import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

PACKAGE_HINT = (
    "the MedVR recipes ship inside the installed package: use "
    "--config-path=pkg://medvr_verl.recipes.medvr (or pkg://medvr_verl.recipes.medvlm_r1), from any directory"
)
_hinted: set[str] = set()


class MedVRWorkingDirectoryConfigPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for element in search_path.get_path():
            if element.provider != "main" or not element.path or _exists(element.path):
                continue
            relative = _relative_part(element.path)
            candidate = os.path.abspath(relative) if relative is not None else None
            if candidate is not None and os.path.isdir(candidate):
                element.path = f"file://{candidate}"
            elif element.path not in _hinted:  # Hydra stops next with "Primary config directory not found"
                _hinted.add(element.path)
                shown = _config_path_argument() or element.path
                print(f"medvr-verl: config directory {shown!r} not found; {PACKAGE_HINT}", file=sys.stderr)


def resolve_config_dir(config_path: str) -> str:
    """The directory a ``--config-path`` names (``pkg://``, absolute, or relative to the working
    directory), without importing the package's own module (``importlib.util.find_spec``).

    Raises FileNotFoundError with :data:`PACKAGE_HINT` when there is none.
    """
    import importlib.util

    path = config_path.strip()
    if path.startswith("pkg://"):
        module = path[len("pkg://") :].replace("/", ".").strip(".")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            return list(spec.submodule_search_locations)[0]
    else:
        path = path[len("file://") :] if path.startswith("file://") else path
        candidate = os.path.abspath(os.path.normpath(path))
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"config directory {config_path!r} not found; {PACKAGE_HINT}")


def _relative_part(path: str) -> str | None:
    """The user's relative ``--config-path`` inside a primary path Hydra built from it, if any."""
    arg = _config_path_argument()
    if arg is None or arg.startswith(("pkg://", "file://", "/")):
        return None
    norm = os.path.normpath(arg.strip()).replace(os.sep, "/")  # "./recipes/medvr/" -> "recipes/medvr"
    if not norm or norm == ".":
        return None
    return norm if path.rstrip("/").endswith(norm) else None


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
