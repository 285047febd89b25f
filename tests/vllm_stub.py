"""A stand-in ``vllm`` package so veRL 0.9.1's own vLLM server code imports and runs on CPU.

veRL's ``vllm_async_server`` / ``vllm_rollout`` modules import vLLM at module level and check that a
``vllm`` distribution is installed. :func:`stub_vllm` puts, for the duration of a ``with`` block:

* an import hook that answers every ``vllm`` / ``vllm.*`` import with a stub module whose unknown
  attributes are fresh placeholder classes (any call or subclassing works);
* a ``vllm-0.24.0.dist-info`` folder on ``sys.path`` (the version ``verl[vllm]==0.9.1`` pins), so
  ``importlib.metadata.version("vllm")`` answers as it would with vLLM installed;
* faithful copies of the few vLLM 0.24.0 pieces the tests exercise: ``SamplingParams`` (the fields
  veRL sets, ``num_logprobs`` as a property as in ``vllm/sampling_params.py``), ``Logprob`` and
  ``FlatLogprobs`` (``vllm/logprobs.py``), and :func:`vllm_sample_logprobs`, which builds a
  request's logprobs exactly as ``vllm/v1/engine/logprobs.py`` +
  ``append_logprobs_for_next_position`` do from the sampler's ``[sampled, top-1 .. top-k]`` rows.

On exit every module it brought in (``vllm*`` and veRL's vLLM modules) leaves ``sys.modules`` so
the rest of the test session sees no vLLM, as before.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import itertools
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

VLLM_VERSION = "0.24.0"

# veRL modules that import vLLM (or cache whether it is there) and must be re-imported afterwards
_VERL_VLLM_MODULES = (
    "verl.workers.rollout.vllm_rollout",
    "verl.utils.vllm",
    "verl.third_party.vllm",
)


# ----------------------------------------------------------------------------------------------
# vLLM 0.24.0 pieces, copied down to what the tests use
# ----------------------------------------------------------------------------------------------


@dataclass
class Logprob:
    """``vllm.logprobs.Logprob``."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class FlatLogprobs:
    """``vllm.logprobs.FlatLogprobs`` (the parts the plugin and veRL read)."""

    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)
    decoded_tokens: list[str | None] = field(default_factory=list)

    def append_fast(self, token_ids, logprobs, ranks, decoded_tokens) -> None:
        self.start_indices.append(len(self.logprobs))
        for token_id, logprob, rank, decoded_token in zip(token_ids, logprobs, ranks, decoded_tokens):
            self.token_ids.append(token_id)
            self.logprobs.append(logprob)
            self.ranks.append(rank)
            self.decoded_tokens.append(decoded_token)
        self.end_indices.append(len(self.logprobs))

    def __len__(self) -> int:
        return len(self.start_indices)

    def __getitem__(self, index: int):
        return {
            self.token_ids[i]: Logprob(self.logprobs[i], self.ranks[i], self.decoded_tokens[i])
            for i in range(self.start_indices[index], self.end_indices[index])
        }

    def __iter__(self):
        for i in range(len(self.start_indices)):
            yield self[i]


def vllm_sample_logprobs(rows, num_logprobs: int, *, flat: bool):
    """A request's ``CompletionOutput.logprobs`` as vLLM 0.24.0 builds it.

    ``rows``: one ``(token_ids, logprobs, sampled_rank)`` per generated token, where ``token_ids`` /
    ``logprobs`` are the sampler's row: the sampled token first, then the top ``>= num_logprobs``
    tokens by logprob (``Sampler.gather_logprobs``). ``append_logprobs_for_next_position`` zips the
    row with the ranks ``(sampled_rank, 1, ..., num_logprobs)``, which keeps ``num_logprobs + 1``
    entries; the dict form then merges a sampled token that is also in the top k, the flat form
    keeps both copies.
    """
    out = FlatLogprobs() if flat else []
    for token_ids, logprobs, rank in rows:
        ranks = itertools.chain((rank,), range(1, num_logprobs + 1))
        decoded = itertools.repeat(None)
        if flat:
            out.append_fast(token_ids, logprobs, ranks, decoded)
        else:
            out.append(
                {t: Logprob(lp, r, d) for t, lp, r, d in zip(token_ids, logprobs, ranks, decoded)}
            )
    return out


class SamplingParams:
    """``vllm.SamplingParams``: the keyword fields veRL sets; ``num_logprobs`` is a property in 0.24.0."""

    def __init__(self, max_tokens=16, logprobs=None, prompt_logprobs=None, flat_logprobs=False, **kwargs):
        self.max_tokens = max_tokens
        self.logprobs = 1 if logprobs is True else logprobs
        self.prompt_logprobs = prompt_logprobs
        self.flat_logprobs = flat_logprobs
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def num_logprobs(self):
        return self.logprobs


def _tokens_prompt(**kwargs):
    return dict(kwargs)


@dataclass
class AsyncEngineArgs:
    """``vllm.engine.arg_utils.AsyncEngineArgs``: a few fields (veRL reads the optional-bool ones)."""

    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    max_logprobs: int = 20
    logprobs_mode: str = "raw_logprobs"


_KNOWN = {
    "vllm": {"SamplingParams": SamplingParams, "__version__": VLLM_VERSION},
    "vllm.sampling_params": {"SamplingParams": SamplingParams},
    "vllm.logprobs": {"Logprob": Logprob, "FlatLogprobs": FlatLogprobs},
    "vllm.inputs": {"TokensPrompt": _tokens_prompt},
    "vllm.engine.arg_utils": {"AsyncEngineArgs": AsyncEngineArgs},
}


# ----------------------------------------------------------------------------------------------
# The import hook
# ----------------------------------------------------------------------------------------------


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        placeholder = type(name, (), {"__init__": lambda self, *a, **k: None, "__module__": self.__name__})
        setattr(self, name, placeholder)
        return placeholder


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "vllm" or fullname.startswith("vllm."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        for key, value in _KNOWN.get(spec.name, {}).items():
            setattr(module, key, value)
        return module

    def exec_module(self, module):
        return None


def _drop_modules() -> None:
    for name in list(sys.modules):
        if name == "vllm" or name.startswith("vllm.") or name.startswith(_VERL_VLLM_MODULES):
            del sys.modules[name]


@contextlib.contextmanager
def stub_vllm():
    """Within the block, ``import vllm`` and veRL's vLLM modules work without vLLM (see module doc)."""
    finder = _StubFinder()
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / f"vllm-{VLLM_VERSION}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}\n")
        _drop_modules()
        sys.meta_path.insert(0, finder)
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            sys.path.remove(tmp)
            _drop_modules()
            importlib.invalidate_caches()
