"""OmegaConf resolvers for files shipped in an installed package: ``medvr.pkg_file`` and ``medvr.pkg_text``.

veRL resolves file paths in its config (``multi_turn.tool_config_path``) against the working
directory and its own install, which breaks for a plugin installed elsewhere and on remote Ray
nodes. Recipes name such files by package instead::

    tool_config_path: ${medvr.pkg_file:medvr_verl.recipes.medvr/zoom_tool.yaml}
    custom_chat_template: ${medvr.pkg_text:medvr_verl.recipes.medvr/qwen2_5_vl_tool_chat_template.jinja}

Registered on ``import verl`` (the plugin entry point), so it resolves in the driver and in workers.
"""

from __future__ import annotations

from importlib import resources

from omegaconf import OmegaConf

RESOLVER = "medvr.pkg_file"


def pkg_file(spec: str) -> str:
    """``"package.module/relative/file"`` -> absolute path of that file; FileNotFoundError if absent."""
    package, sep, relative = spec.partition("/")
    if not sep or not package or not relative:
        raise ValueError(f"${{{RESOLVER}:...}} takes 'package.name/relative/path', got {spec!r}")
    path = resources.files(package).joinpath(relative)
    if not path.is_file():
        raise FileNotFoundError(f"{relative!r} is not shipped in package {package!r} (looked at {path})")
    return str(path)


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, pkg_file)


TEXT_RESOLVER = "medvr.pkg_text"


def pkg_text(spec: str) -> str:
    """The text of a shipped file (same ``package/relative/path`` spec), e.g. a chat template."""
    with open(pkg_file(spec), encoding="utf-8") as f:
        return f.read()


if not OmegaConf.has_resolver(TEXT_RESOLVER):
    OmegaConf.register_new_resolver(TEXT_RESOLVER, pkg_text)
