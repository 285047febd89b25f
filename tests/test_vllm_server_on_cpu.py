"""medvr_vllm without vLLM or a GPU: veRL 0.9.1's own vLLM server code run against a stand-in vLLM.

``vllm_stub.stub_vllm`` lets veRL's ``vllm_async_server`` / ``vllm_rollout`` import; the tests then
run veRL's code itself: the replica's ``launch_servers`` (actor names), the weight-sync adapter's
server lookup, the server's ``launch_server`` up to the vLLM command line (``max_logprobs``) and its
``generate`` over an engine that builds logprobs the way vLLM 0.24.0 does (sampled token first, then
the top k; ``FlatLogprobs``).
"""

from __future__ import annotations

import asyncio
import math
import random
from types import SimpleNamespace

import pytest
import verl  # noqa: F401  (loads the plugin through the verl.plugins entry point)
from vllm_stub import FlatLogprobs, Logprob, stub_vllm, vllm_sample_logprobs

from medvr_verl.entropy import TOKEN_ENTROPY_KEY, topk_entropy, topk_entropy_error_bound
from medvr_verl.vllm_server import (
    ROLLOUT_NAME,
    _TopKEngine,
    check_entropy_settings,
    configured_top_k,
    max_logprobs_for,
    position_entropies,
    sampled_token_logprobs,
)


def exact_entropy(logprobs):
    """Reference: entropy (nats) of a full distribution given as logprobs over the whole vocabulary."""
    return -sum(math.exp(lp) * lp for lp in logprobs if math.isfinite(lp))


@pytest.fixture
def vllm_stub():
    with stub_vllm():
        yield


def _plugin_rollout_names() -> list[str]:
    """Rollout names this plugin registered with veRL (their loader lives in medvr_verl)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return sorted(
        name
        for name, loader in RolloutReplicaRegistry._registry.items()
        if str(getattr(loader, "__module__", "")).startswith("medvr_verl")
    )


def _rollout_config(name: str, **fields):
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    from medvr_verl.testing.harness import make_trainer_config

    config = make_trainer_config("/nonexistent/model", rollout_name=name)
    rollout = config.actor_rollout_ref.rollout
    for key, value in fields.items():
        OmegaConf.update(rollout, key, value, force_add=True)
    return omega_conf_to_dataclass(rollout)


def test_medvr_vllm_is_registered_with_veRL():
    from verl.workers.rollout import base

    assert ROLLOUT_NAME in _plugin_rollout_names()
    assert base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] == base._ROLLOUT_REGISTRY[("vllm", "async")]


# --------------------------------------------------------------------------------------------------
# 1. The weight-sync adapter finds the server actor the replica created
# --------------------------------------------------------------------------------------------------


class _Remote:
    def __init__(self, value=None):
        self._value = value

    def remote(self, *args, **kwargs):
        fut = asyncio.get_event_loop().create_future()
        fut.set_result(self._value)
        return fut


_REPLIES = {"get_master_address": ("127.0.0.1", 1, 2), "get_server_address": ("127.0.0.1", 8000)}


class _FakeHandle:
    """A Ray actor handle whose every ``method.remote()`` resolves at once (addresses where asked)."""

    def __getattr__(self, method):
        return _Remote(_REPLIES.get(method))


class _RecordingActorClass:
    """What the patched ``ray.remote(cls)`` returns: records the actor names it is asked to create."""

    def __init__(self, names: list[str]):
        self._names = names

    def options(self, *, name=None, **kwargs):
        self._names.append(name)
        return self

    def remote(self, *args, **kwargs):
        return _FakeHandle()


class _Cluster:
    """Fake Ray runtime context: the worker that is running ``__ray_call__`` reports its node and GPU."""

    def __init__(self):
        self.current = None

    def context(self):
        from verl.utils.device import get_resource_name

        node, gpu = self.current or ("f" * 56, "0")
        return SimpleNamespace(
            get_node_id=lambda: node,
            get_accelerator_ids=lambda: {get_resource_name(): [gpu]},
            get_job_id=lambda: "01000000",
        )

    def worker(self, node_index: int, gpu: int):
        cluster, info = self, (f"{node_index + 1:056x}", str(gpu))

        class Worker:
            class __ray_call__:  # noqa: N801
                @staticmethod
                def remote(fn):
                    cluster.current = info
                    try:
                        return _Remote(fn(None)).remote()
                    finally:
                        cluster.current = None

        return Worker()


def _names_created(replica_cls, config, replica_rank: int, gpus_per_node: int, monkeypatch) -> list[str] | None:
    """Actor names the replica's own ``launch_servers`` creates; None when it refuses the layout."""
    import ray

    names: list[str] = []
    cluster = _Cluster()
    with monkeypatch.context() as patch:
        patch.setattr(ray, "remote", lambda *a, **k: _RecordingActorClass(names))
        patch.setattr(ray, "get_runtime_context", cluster.context)
        replica = replica_cls(
            replica_rank=replica_rank, config=config, model_config=None, gpus_per_node=gpus_per_node
        )
        replica.workers = [
            cluster.worker(i // replica.gpus_per_replica_node, i % replica.gpus_per_replica_node)
            for i in range(replica.world_size)
        ]
        try:
            asyncio.run(replica.launch_servers())
        except ValueError:  # e.g. medvr_cpu serves one process per replica
            return None
    return names


_LOOKUPS = ("_ensure_server_handle", "_server_handle")
"""Adapter methods that look their server actor up by name: veRL's vLLM adapter, medvr_cpu's."""


def _names_looked_up(adapter_cls, config, rank: int, gpus_per_node: int, monkeypatch) -> list[str]:
    """Actor names the training rank's weight-sync adapter asks Ray for."""
    import ray

    looked_up: list[str] = []
    with monkeypatch.context() as patch:
        patch.setenv("RANK", str(rank))
        patch.setenv("RAY_LOCAL_WORLD_SIZE", str(gpus_per_node))
        patch.setattr(ray, "get_runtime_context", _Cluster().context)
        patch.setattr(ray, "get_actor", lambda name, *a, **k: looked_up.append(name) or _FakeHandle())
        adapter = adapter_cls(config=config, model_config=None, device_mesh=None)
        if getattr(adapter, "_has_server", True) is False:
            return []
        lookup = next((getattr(adapter, m) for m in _LOOKUPS if hasattr(adapter, m)), None)
        if lookup is None:  # pragma: no cover - a future adapter type
            pytest.fail(f"{adapter_cls.__qualname__} has none of {_LOOKUPS}: extend this test for it")
        lookup()
    return looked_up


@pytest.fixture
def all_plugin_rollouts(monkeypatch):
    """Also register rollouts that the plugin registers only on request (``medvr_cpu``, if present)."""
    import importlib.util

    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    monkeypatch.setattr(RolloutReplicaRegistry, "_registry", dict(RolloutReplicaRegistry._registry))
    monkeypatch.setattr(base, "_ROLLOUT_REGISTRY", dict(base._ROLLOUT_REGISTRY))
    if importlib.util.find_spec("medvr_verl.cpu") is not None:
        try:
            from medvr_verl.cpu.rollout import register_rollout
        except ImportError:  # pragma: no cover - the CPU backend is not there (yet)
            register_rollout = None
        if register_rollout is not None:
            register_rollout()
    yield


@pytest.mark.parametrize("tp, gpus_per_node, n_gpus", [(1, 2, 2), (2, 2, 4), (2, 1, 2)])
def test_weight_sync_adapter_finds_the_server_the_replica_created(
    vllm_stub, all_plugin_rollouts, monkeypatch, tp, gpus_per_node, n_gpus
):
    """Every trainer rank that owns a server looks up a name its replica created, for every rollout
    name the plugin registers with veRL (veRL's own replica and adapter code runs on both sides)."""
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    names = _plugin_rollout_names()
    assert ROLLOUT_NAME in names
    checked = []
    for name in names:
        config = _rollout_config(name, tensor_model_parallel_size=tp)
        replica_cls = RolloutReplicaRegistry.get(name)
        adapter_cls = get_rollout_class(name, "async")
        created = [_names_created(replica_cls, config, r, gpus_per_node, monkeypatch) for r in range(n_gpus // tp)]
        if any(c is None for c in created):
            assert name != ROLLOUT_NAME
            continue  # this backend refuses the layout: nothing to look up
        created = [n for c in created for n in c]
        looked_up = [
            n for rank in range(n_gpus) for n in _names_looked_up(adapter_cls, config, rank, gpus_per_node, monkeypatch)
        ]
        assert looked_up, name
        assert set(looked_up) <= set(created), (name, looked_up, created)
        # every replica's first server is the one its trainer ranks drive
        assert len(set(looked_up)) == n_gpus // tp, (name, looked_up)
        checked.append(name)
    assert ROLLOUT_NAME in checked


# --------------------------------------------------------------------------------------------------
# 2. Top-k entropy from vLLM's k or k + 1 entries
# --------------------------------------------------------------------------------------------------


def _softmax_logprobs(logits):
    top = max(logits)
    norm = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - norm for x in logits]


def _vllm_rows(dists, sampled, max_num_logprobs):
    """The sampler's rows: ``[sampled] + top max_num_logprobs`` tokens by logprob, and the rank."""
    rows = []
    for logprobs, token in zip(dists, sampled):
        order = sorted(range(len(logprobs)), key=lambda t: -logprobs[t])
        top = order[:max_num_logprobs]
        rank = 1 + sum(lp > logprobs[token] for lp in logprobs)
        rows.append(([token, *top], [logprobs[token], *[logprobs[t] for t in top]], rank))
    return rows


def _case(seed: int, k: int, vocab: int = 60, positions: int = 12):
    rng = random.Random(seed)
    dists = [_softmax_logprobs([rng.gauss(0, 2.5) for _ in range(vocab)]) for _ in range(positions)]
    sampled = []
    for i, logprobs in enumerate(dists):
        order = sorted(range(vocab), key=lambda t: -logprobs[t])
        # most positions sample outside the top k (k + 1 entries), some inside
        sampled.append(order[rng.randrange(0, k)] if i % 3 == 0 else order[rng.randrange(k, vocab)])
    return dists, sampled


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_position_entropies_use_exactly_the_top_k(flat, seed):
    k = 5
    dists, sampled = _case(seed, k)
    # the batch may ask for more than this request (max_num_logprobs of the batch): vLLM keeps k + 1
    logprobs = vllm_sample_logprobs(_vllm_rows(dists, sampled, k + 3), k, flat=flat)
    sizes = [len(set(p)) for p in logprobs]
    assert k + 1 in sizes and k in sizes  # both cases occur
    got = position_entropies(logprobs, k)
    for h, dist in zip(got, dists):
        top = sorted(dist, reverse=True)[:k]
        assert h == pytest.approx(topk_entropy(top))
        assert h <= exact_entropy(dist) + 1e-9
        assert exact_entropy(dist) - h <= topk_entropy_error_bound(top, len(dist)) + 1e-9


def test_sampled_token_logprobs_keep_what_veRL_reads():
    k = 4
    dists, sampled = _case(0, k)
    for flat in (False, True):
        full = vllm_sample_logprobs(_vllm_rows(dists, sampled, k), k, flat=flat)
        slim = sampled_token_logprobs(full, sampled)
        # veRL's server: log_probs = [logprobs[token_ids[i]].logprob for i, logprobs in enumerate(...)]
        assert [pos[sampled[i]].logprob for i, pos in enumerate(slim)] == pytest.approx(
            [dists[i][t] for i, t in enumerate(sampled)]
        )
        assert all(len(pos) == 1 for pos in slim)


# --------------------------------------------------------------------------------------------------
# 3. top_k validation and max_logprobs in the engine's command line
# --------------------------------------------------------------------------------------------------


def test_top_k_config_and_refusals():
    assert configured_top_k(SimpleNamespace(custom={"evr": {"top_k": 5}})) == 5
    assert configured_top_k(SimpleNamespace(custom=None)) == 20
    assert configured_top_k({"custom": {"evr": {}}}) == 20
    for bad in (0, -1, 2.5, True, "20"):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            configured_top_k({"custom": {"evr": {"top_k": bad}}})
    assert max_logprobs_for(5) == 20 and max_logprobs_for(50) == 50
    assert max_logprobs_for(50, 64) == 64 and max_logprobs_for(50, -1) == -1
    with pytest.raises(ValueError, match="max_logprobs=30 is below"):
        max_logprobs_for(50, 30)


def test_logprobs_mode_logits_is_refused_and_sampling_changes_warn(caplog):
    with pytest.raises(ValueError, match="returns logits"):
        check_entropy_settings({"logprobs_mode": "processed_logits"}, 20)
    check_entropy_settings({"logprobs_mode": None, "temperature": 0.5}, 20)  # vLLM's raw_logprobs: no warning
    with caplog.at_level("WARNING", logger="medvr_verl.vllm_server"):
        check_entropy_settings({"logprobs_mode": "processed_logprobs", "temperature": 1.0, "top_p": 1.0}, 20)
        assert not caplog.records
        check_entropy_settings({"logprobs_mode": "processed_logprobs", "temperature": 0.7, "top_p": 1.0}, 20)
        assert "sampling distribution" in caplog.text


class _StopAtParse(Exception):
    pass


def _server(config, processor=None):
    """A ``medvr_vllm`` server object with the state veRL's __init__ would give it (no engine yet)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    server = object.__new__(RolloutReplicaRegistry.get(ROLLOUT_NAME).http_server_class)
    server.config = config
    server.model_config = SimpleNamespace(
        processor=processor,
        tokenizer=None,
        lora_rank=0,
        lora={},
        hf_config=SimpleNamespace(),
        local_path="/models/tiny",
        trust_remote_code=False,
    )
    server._disaggregation_role = "null"
    server._pd_decode_peers = []
    server.replica_rank, server.node_rank, server.nnodes, server.gpus_per_node = 1, 0, 1, 1
    server.workers = []
    server.global_steps = None
    server._submission_paused, server._admitting, server._rejecting = False, 0, False
    server._master_address, server._master_port, server._dp_rpc_port = "127.0.0.1", 1, 2
    server.profiler_controller = SimpleNamespace(check_enable=lambda: False)
    server._warned_missing_spec_decode_stats = False
    return server


@pytest.mark.parametrize(
    "top_k, user_max, expected", [(20, None, "20"), (5, None, "20"), (64, None, "64"), (64, 100, "100")]
)
def test_launch_server_passes_max_logprobs_to_vllm(vllm_stub, monkeypatch, top_k, user_max, expected):
    """veRL's own launch_server builds the `vllm serve` command line with --max_logprobs from top_k."""
    from verl.workers.rollout.vllm_rollout import vllm_async_server

    fields = {"custom": {"evr": {"top_k": top_k}}, "max_model_len": 4096}
    if user_max is not None:
        fields["engine_kwargs"] = {"vllm": {"max_logprobs": user_max}}
    config = _rollout_config(ROLLOUT_NAME, **fields)
    server = _server(config)
    seen = {}

    class Parser:
        def __init__(self, *args, **kwargs):
            pass

        def add_subparsers(self, **kwargs):
            return SimpleNamespace()

        def parse_args(self, args):
            seen["argv"] = list(args)
            raise _StopAtParse

    monkeypatch.setattr(vllm_async_server, "FlexibleArgumentParser", Parser)
    server._get_cli_modules = lambda: []
    with pytest.raises(_StopAtParse):
        asyncio.run(server.launch_server())
    argv = seen["argv"]
    assert argv[:2] == ["serve", "/models/tiny"]
    assert argv[argv.index("--max_logprobs") + 1] == expected
    assert argv[argv.index("--logprobs_mode") + 1] == "processed_logprobs"


def test_launch_server_refuses_top_k_below_one_and_a_small_max_logprobs(vllm_stub):
    server = _server(_rollout_config(ROLLOUT_NAME, custom={"evr": {"top_k": 0}}, max_model_len=4096))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        asyncio.run(server.launch_server())
    fields = {"custom": {"evr": {"top_k": 50}}, "max_model_len": 4096, "engine_kwargs": {"vllm": {"max_logprobs": 20}}}
    server = _server(_rollout_config(ROLLOUT_NAME, **fields))
    with pytest.raises(ValueError, match="max_logprobs=20 is below"):
        asyncio.run(server.launch_server())


# --------------------------------------------------------------------------------------------------
# veRL's generate over an engine that answers as vLLM 0.24.0 does
# --------------------------------------------------------------------------------------------------


class _VLLMLikeEngine:
    """Yields RequestOutputs whose logprobs follow vLLM 0.24.0 (sampled first, then the top k)."""

    def __init__(self, dists, sampled, max_logprobs=20):
        self.dists, self.sampled, self.max_logprobs = dists, sampled, max_logprobs
        self.seen = None

    async def generate(self, prompt, sampling_params, request_id, **kwargs):
        self.seen = sampling_params
        k = sampling_params.num_logprobs
        if k is not None and k > self.max_logprobs:  # SamplingParams._validate_logprobs
            raise ValueError(f"Requested sample logprobs of {k}, which is greater than max allowed")
        logprobs = None
        if k is not None:
            logprobs = vllm_sample_logprobs(
                _vllm_rows(self.dists, self.sampled, k), k, flat=bool(sampling_params.flat_logprobs)
            )
        for n in (1, len(self.sampled)):
            completion = SimpleNamespace(
                token_ids=list(self.sampled[:n]), logprobs=logprobs, finish_reason="stop" if n > 1 else None
            )
            await asyncio.sleep(0)
            yield SimpleNamespace(outputs=[completion], prompt_logprobs=None, num_cached_tokens=0)

    def other_method(self):
        return "forwarded"


@pytest.mark.parametrize("wants_logprobs", [True, False])
def test_generate_returns_top_k_entropies_through_veRLs_server(vllm_stub, wants_logprobs):
    k = 6
    dists, sampled = _case(3, k, positions=9)
    config = _rollout_config(ROLLOUT_NAME, custom={"evr": {"top_k": k}}, max_model_len=4096, prompt_length=64)
    server = _server(config)
    engine = _VLLMLikeEngine(dists, sampled)
    server.engine = engine

    async def run():
        server._resume_event = asyncio.Event()
        server._resume_event.set()
        params = {"temperature": 1.0, "top_p": 1.0, "logprobs": wants_logprobs}
        return await server.generate([1, 2, 3], params, "req-1")

    output = asyncio.run(run())
    assert engine.seen.num_logprobs == k and engine.seen.flat_logprobs is True
    assert output.token_ids == sampled
    expected = [topk_entropy(sorted(d, reverse=True)[:k]) for d in dists]
    assert output.extra_fields[TOKEN_ENTROPY_KEY] == pytest.approx(expected)
    if wants_logprobs:
        assert output.log_probs == pytest.approx([d[t] for d, t in zip(dists, sampled)])
    else:
        assert output.log_probs is None
    assert server.engine.entropies == {}  # nothing left behind
    assert server.engine.other_method() == "forwarded"


def test_topk_engine_keeps_a_callers_larger_logprobs_request():
    dists, sampled = _case(1, 3, positions=4)
    inner = _VLLMLikeEngine(dists, sampled)
    engine = _TopKEngine(inner, top_k=3)
    from vllm_stub import SamplingParams

    params = SamplingParams(logprobs=8)

    async def run():
        return [o async for o in engine.generate(prompt="p", sampling_params=params, request_id="r")]

    outputs = asyncio.run(run())
    assert len(outputs) == 2 and inner.seen.num_logprobs == 8
    assert engine.entropies["r"] == pytest.approx([topk_entropy(sorted(d, reverse=True)[:3]) for d in dists])


def test_stub_is_gone_after_the_block():
    import importlib.util
    import sys

    installed = importlib.util.find_spec("vllm") is not None  # vLLM's CPU build (./.venv-vllm) or a GPU stack
    with stub_vllm():
        import vllm  # noqa: F401
    assert "vllm" not in sys.modules
    assert (importlib.util.find_spec("vllm") is not None) == installed
    assert isinstance(FlatLogprobs(), FlatLogprobs) and Logprob(0.0).rank is None


def test_stub_logprobs_match_vllms_own_module():
    """With ``MEDVR_VLLM_SOURCE`` = an unpacked vLLM 0.24.0 wheel's ``vllm/`` folder: the stand-in's
    logprob layout equals what vLLM's own ``vllm/logprobs.py`` builds (it imports no torch), and the
    server's helpers read vLLM's real ``FlatLogprobs``. (``pip download --no-deps vllm==0.24.0``.)"""
    import importlib.util
    import os

    source = os.environ.get("MEDVR_VLLM_SOURCE")
    if not source or not os.path.isfile(os.path.join(source, "logprobs.py")):
        pytest.skip("set MEDVR_VLLM_SOURCE to an unpacked vllm/ folder of vLLM 0.24.0")
    spec = importlib.util.spec_from_file_location("_vllm_logprobs", os.path.join(source, "logprobs.py"))
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    k = 5
    dists, sampled = _case(2, k)
    rows = _vllm_rows(dists, sampled, k + 3)
    for flat in (False, True):
        theirs = real.create_sample_logprobs(flat)
        for tokens, logprobs, rank in rows:
            real.append_logprobs_for_next_position(theirs, tokens, logprobs, [None] * len(tokens), rank, k)
        mine = vllm_sample_logprobs(rows, k, flat=flat)
        assert [{t: (v.logprob, v.rank) for t, v in p.items()} for p in mine] == [
            {t: (v.logprob, v.rank) for t, v in p.items()} for p in theirs
        ]
        assert position_entropies(theirs, k) == position_entropies(mine, k)
        slim = sampled_token_logprobs(theirs, sampled)
        assert type(slim) is type(theirs)
        assert [p[t].logprob for p, t in zip(slim, sampled)] == [d[t] for d, t in zip(dists, sampled)]
