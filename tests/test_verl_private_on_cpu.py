"""Every private veRL name the plugin relies on still exists in the installed veRL (one list)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medvr_verl import verl_private

PACKAGE = Path(verl_private.__file__).resolve().parent


def test_installed_verl_has_every_private_symbol():
    verl_private.check()


def test_check_names_a_symbol_that_is_gone(monkeypatch):
    gone = verl_private.PrivateSymbol("verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ._gone", "test", "")
    monkeypatch.setattr(verl_private, "PRIVATE_SYMBOLS", (*verl_private.PRIVATE_SYMBOLS, gone))
    with pytest.raises(RuntimeError, match=r"AgentLoopWorkerTQ\._gone"):
        verl_private.check()


def test_every_private_veRL_import_is_listed():
    """``from verl... import _name`` and ``verl_module._NAME`` in the package are all in the list."""
    listed = {s.path.rpartition(".")[2] for s in verl_private.PRIVATE_SYMBOLS}
    used = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for names in re.findall(r"^from verl[\w.]* import \(?([^)\n]*)", text, flags=re.M):
            used |= {n.strip().split(" as ")[0] for n in names.split(",") if n.strip().startswith("_")}
        used |= set(re.findall(r"\bbase\.(_[A-Z_]+)\b", text))
    assert used <= listed, used - listed
