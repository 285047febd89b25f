"""Every veRL name the plugin touches that is not public API, in one place, and a check for each.

A veRL upgrade may rename or remove any of these without notice. :func:`check` finds each one in the
installed veRL's source (by parsing it, so modules that need a GPU stack, like veRL's vLLM server, are
checked without importing them) and raises naming every symbol that is gone;
``tests/test_verl_private_on_cpu.py`` runs it. Run it by hand after upgrading veRL::

    python -m medvr_verl.verl_private

Public seams the plugin uses are not listed: the ``verl.plugins`` entry point, the agent-loop,
reward-manager, rollout-replica, platform and engine registries' ``register`` functions,
``BaseTool``, ``ToolAgentLoop``, ``AgentLoopManagerTQ`` / ``ReplayBuffer`` subclassing, Hydra configs.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PrivateSymbol:
    module: str
    """veRL module holding the symbol."""
    path: str
    """``name`` (module level) or ``Class.name`` (attribute or method, inherited names included)."""
    used_by: str
    why: str


PRIVATE_SYMBOLS: tuple[PrivateSymbol, ...] = (
    PrivateSymbol(
        "verl.experimental.agent_loop.agent_loop",
        "_agent_loop_registry",
        "medvr_verl.agent_loop.is_medvr_agent, medvr_verl.__main__",
        "which class an agent-loop name resolves to (EVR forks only medvr_agent); no public lookup",
    ),
    PrivateSymbol(
        "verl.workers.rollout.replica",
        "RolloutReplicaRegistry._registry",
        "medvr_verl.__main__",
        "read only: whether rollout medvr_vllm is registered, without loading vLLM (get() would)",
    ),
    PrivateSymbol(
        "verl.workers.rollout.base",
        "_ROLLOUT_REGISTRY",
        "medvr_verl.vllm_server, medvr_verl.cpu.rollout",
        "the training worker looks its rollout adapter up by (name, mode); no public registration",
    ),
    PrivateSymbol(
        "verl.trainer.ppo.v1.agent_loop_tq",
        "AgentLoopWorkerTQ._run_prompt",
        "medvr_verl.agent_loop_tq.MedVRAgentLoopWorkerTQ",
        "overridden: a prompt's sessions (EVR bases then forks), group reward, terminal status",
    ),
    PrivateSymbol(
        "verl.trainer.ppo.v1.agent_loop_tq",
        "AgentLoopWorkerTQ._agent_loop_postprocess",
        "medvr_verl.agent_loop_tq.MedVRAgentLoopWorkerTQ",
        "overridden and called: hold rows for the group reward, then veRL's own TransferQueue write",
    ),
    PrivateSymbol(
        "verl.trainer.ppo.v1.agent_loop_tq",
        "AgentLoopWorkerTQ._run_agent_loop",
        "medvr_verl.agent_loop_tq",
        "called to run one session with the EVR kwargs",
    ),
    PrivateSymbol(
        "verl.experimental.agent_loop.agent_loop",
        "AgentLoopWorker._compute_score",
        "medvr_verl.agent_loop_tq",
        "called: per-row scoring of a row whose group is not held for one reward call",
    ),
    PrivateSymbol(
        "verl.experimental.agent_loop.tool_agent_loop",
        "ToolAgentLoop._handle_pending_state",
        "medvr_verl.agent_loop.MedVRAgentLoop",
        "overridden: hand the tool the original images; a fork restores its base's state here",
    ),
    PrivateSymbol(
        "verl.experimental.agent_loop.tool_agent_loop",
        "ToolAgentLoop._handle_generating_state",
        "medvr_verl.agent_loop.MedVRAgentLoop",
        "overridden: record per-token entropy and each zoom call's coordinate tokens",
    ),
    PrivateSymbol(
        "verl.workers.rollout.vllm_rollout.vllm_async_server",
        "vLLMHttpServer._preprocess_engine_kwargs",
        "medvr_verl.vllm_server",
        "overridden: max_logprobs for the top-k entropy request",
    ),
    PrivateSymbol(
        "verl.workers.rollout.replica",
        "RolloutReplica._server_handle",
        "medvr_verl.cpu.rollout",
        "the replica's server actor, to push weights (CPU rollout)",
    ),
    PrivateSymbol(
        "verl.utils.distributed",
        "initialize_global_process_group_ray",
        "medvr_verl.cpu.fixes",
        "CPU only: builds 'cpu:gloo,cpu:gloo', which torch refuses; wrapped to pass backend='gloo'",
    ),
    PrivateSymbol(
        "verl.workers.engine_workers",
        "initialize_global_process_group_ray",
        "medvr_verl.cpu.fixes",
        "CPU only: the name bound in engine_workers is rebound to the gloo wrapper too",
    ),
    PrivateSymbol(
        "verl.workers.rollout.replica",
        "RolloutReplica._server_address",
        "medvr_verl.cpu.rollout",
        "set by the CPU replica's launch_servers; veRL's LLMServerManager reads it",
    ),
    PrivateSymbol(
        "verl.workers.engine.fsdp.transformer_impl",
        "CPUOffloadPolicy",
        "medvr_verl.cpu.fixes",
        "CPU only: the reference model's offload policy pins memory (needs a driver); rebound unpinned",
    ),
    PrivateSymbol(
        "verl.workers.engine.base",
        "EngineRegistry._engines",
        "medvr_verl.cpu",
        "CPU only: read to keep the CPU engine registration idempotent",
    ),
    PrivateSymbol(
        "verl.models.transformers.qwen2_vl",
        "_get_input_embeds",
        "medvr_verl.qwen2_vl_fix",
        "text-only rows: the dummy vision pass calls .mean() on transformers 5's output object; wrapped",
    ),
)


def _source(module: str) -> tuple[ast.Module, bool]:
    """The parsed source of a module of the installed top-level package (its parents not imported:
    some of veRL's, such as its vLLM rollout package, raise on import without vLLM)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"package {top} not found")
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest.split(".")) if rest else None
    for path in (base.with_suffix(".py"), base / "__init__.py") if base else ():
        if path.is_file():
            return ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py"
    raise LookupError(f"module {module} not found")


def _top_level_names(tree: ast.Module) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update({t.id: node for t in targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
    return names


def _class_members(node: ast.ClassDef) -> set[str]:
    members = set()
    for item in ast.walk(node):
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            members.add(item.name)
        elif isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name) and item.value.id in ("self", "cls"):
            members.add(item.attr)
        elif isinstance(item, ast.Name):
            members.add(item.id)
    return members


def _find(module: str, path: str, seen: frozenset[str] = frozenset(), depth: int = 0) -> bool:
    """Whether ``path`` exists in ``module``'s source, following imports and base classes."""
    if depth > 20:
        return False
    tree, is_package = _source(module)
    names = _top_level_names(tree)
    head, _, member = path.partition(".")
    node = names.get(head)
    if node is None:
        return False
    if not member:
        return True
    if isinstance(node, ast.ImportFrom) and (node.module or node.level):
        package = module if is_package else module.rpartition(".")[0]
        source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        return _find(source, path, seen, depth + 1)
    if not isinstance(node, ast.ClassDef):
        return False
    if member in _class_members(node):
        return True
    for base in node.bases:  # inherited: look in the base class (same module or imported)
        name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
        if name and name not in seen and name in names:
            if _find(module, f"{name}.{member}", seen | {head}, depth + 1):
                return True
    return False


def missing() -> list[str]:
    """``module:path`` of each listed symbol the installed veRL no longer has."""
    gone = []
    for symbol in PRIVATE_SYMBOLS:
        try:
            found = _find(symbol.module, symbol.path)
        except (LookupError, SyntaxError, OSError, ValueError):
            found = False
        if not found:
            gone.append(f"{symbol.module}:{symbol.path} (used by {symbol.used_by})")
    return gone


def check() -> None:
    """Raise ``RuntimeError`` naming every private veRL symbol the plugin needs and veRL lacks."""
    gone = missing()
    if gone:
        raise RuntimeError("veRL changed private names medvr-verl relies on: " + "; ".join(gone))


if __name__ == "__main__":
    check()
    print(f"all {len(PRIVATE_SYMBOLS)} private veRL symbols medvr-verl relies on are present")
