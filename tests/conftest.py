"""Shared pytest fixtures: the tiny RANDOM-weight Qwen2.5-VL model and one local Ray session.

Everything runs offline on CPU. The tiny model is built once into the shared cache
(``$MEDVR_TINY_MODEL_DIR`` or ``~/.cache/medvr_verl/tiny-qwen2.5-vl``) and reused across runs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# No model hub at test time: anything that tries to download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def vl_stack_missing() -> str | None:
    """Why veRL's Qwen2.5-VL multimodal path cannot run here, or ``None`` when it can.

    transformers 5 builds Qwen2.5-VL's processor with a video processor that needs torchvision, and
    veRL extracts images from messages with ``qwen_vl_utils`` (which imports torchvision).
    """
    missing = [m for m in ("torchvision", "qwen_vl_utils") if importlib.util.find_spec(m) is None]
    if not missing:
        try:
            import torchvision  # noqa: F401  (a CUDA-only torchvision wheel fails here on a CPU torch)
        except Exception as exc:  # pragma: no cover - depends on the environment
            return f"torchvision does not import: {exc}"
        return None
    return f"missing {', '.join(missing)} (Qwen2.5-VL processor / veRL vision extraction need them)"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``vl_stack`` when the vision stack is missing, unless MEDVR_REQUIRE_VL=1."""
    reason = vl_stack_missing()
    if reason is None or os.environ.get("MEDVR_REQUIRE_VL") == "1":
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "vl_stack" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "vl_stack: needs torchvision + qwen_vl_utils (Qwen2.5-VL processor)")


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """Path of the tiny RANDOM-weight Qwen2.5-VL model directory (built once, cached)."""
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    return tiny_qwen25vl_path()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session for the whole test run, shut down at the end.

    8 logical CPUs on any machine: Ray's CPU count is a scheduling token, and V1 tests hold
    TransferQueue's controller and storage actors (one CPU each) beside the reward and agent-loop
    workers; the real cores are shared by all of them either way.

    The workers get ``tests/`` and the repository root on ``PYTHONPATH`` so that tools and agent
    loops defined in test modules import inside the Ray actors.
    """
    from medvr_verl.testing.harness import ensure_ray, shutdown_ray

    ensure_ray(num_cpus=8, extra_sys_paths=[TESTS_DIR, REPO_ROOT])
    yield
    shutdown_ray()


@pytest.fixture(scope="session")
def reward_workers(ray_session, tiny_model_path):
    """veRL's RewardLoopManager: two real RewardLoopWorker actors running medvr_cca (group size 4)."""
    import ray
    from cca_script import cca_config
    from verl.experimental.reward_loop import RewardLoopManager

    manager = RewardLoopManager(cca_config(tiny_model_path))
    yield manager.reward_loop_workers
    for handle in manager.reward_loop_workers:
        ray.kill(handle)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_path):
    """The tiny model's tokenizer (Qwen2.5-VL's special tokens over a small byte-level BPE)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)
