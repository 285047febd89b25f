"""A tiny Qwen2.5-VL model directory for tests and demos -- RANDOM weights, built offline.

.. warning::
   This is a TEST / DEMO FIXTURE. The weights are random (``torch.manual_seed(seed)``); the model
   produces gibberish. It exists so that veRL's real loading code (``HFModelConfig``,
   ``AutoProcessor``, the Continuous Token builders, ``get_rope_index``, the agent loops) can run end
   to end on a CPU-only machine without any model hub. (Only those paths are tested so far; FSDP
   model building and vLLM on a GPU box have not been tried with it.)

What gets written (the same file set as a real ``Qwen/Qwen2.5-VL-*-Instruct`` checkout):

* ``tokenizer.json`` / ``vocab.json`` / ``merges.txt`` / ``tokenizer_config.json`` -- a real
  byte-level BPE tokenizer built with :mod:`tokenizers` from a fixed built-in text: Qwen2's
  pre-tokenizer regex, NFC normalizer and ByteLevel decoder; the 256 byte tokens (GPT-2 byte order)
  plus ~150 merges learned deterministically from :data:`_MERGE_CORPUS` (408 base tokens). The 22 added
  tokens of Qwen2.5-VL follow the base vocabulary contiguously and in the real order
  (``<|endoftext|>`` first, then ``<|im_start|>``, ``<|im_end|>``, ..., ``<|image_pad|>``,
  ``<|video_pad|>``, then the NON-special ``<tool_call>``, ``</tool_call>``, FIM and repo tokens).
  pad = ``<|endoftext|>``, eos = ``<|im_end|>``, no bos -- as in the real tokenizer.
* ``chat_template.json`` and ``tokenizer_config.json["chat_template"]`` -- the OFFICIAL
  Qwen2.5-VL-Instruct chat template, verbatim (``qwen2_5_vl_chat_template.jinja`` next to this
  module). Note: the official template has NO tool-schema support: a ``tools=`` argument is
  ignored and ``role: tool`` messages render as ``<|im_start|>tool ... <|im_end|>``. Recipes that
  want the hermes ``# Tools`` system block must set ``actor_rollout_ref.model.custom_chat_template``
  (as veRL's own multimodal tool examples do); the tokenizer still has ``<tool_call>`` /
  ``</tool_call>`` as added tokens and veRL's ``hermes`` parser works on generated text either way.
* ``preprocessor_config.json`` -- the real Qwen2.5-VL values (patch 14, merge 2, temporal patch 2,
  CLIP mean/std, ``min_pixels`` 3136) except ``max_pixels``, which defaults to
  :data:`DEFAULT_MAX_PIXELS` (256 merged tokens = 256*28*28 pixels) instead of the real
  12845056 to keep test prompts short. Pass ``max_pixels=REAL_MAX_PIXELS`` for the real value.
* ``config.json`` / ``generation_config.json`` / ``model.safetensors`` -- a ``Qwen2_5_VLConfig``
  with a 2-layer 64-wide text model (4 heads, 2 kv heads, head_dim 16, ``mrope_section``
  ``[2, 3, 3]`` summing to head_dim/2; ``head_dim=32``: 2 heads, 1 kv head, ``[4, 6, 6]``, the same
  weight shapes, for vLLM's CPU attention) and a 2-block 64-wide vision tower (patch 14, merge 2,
  window 112, ``fullatt_block_indexes=[1]``), text vocab 448 (``len(tokenizer)`` = 430 rounded up
  to a multiple of 64), random float32 weights (372k parameters, 1.5 MB).

Builds are cached: a marker file written last records the build spec (seed, pixels, template hash,
format version, transformers version); a directory holding the same spec is returned untouched.
Builds go to a temporary sibling directory that is renamed into place, under a file lock, so
concurrent processes (pytest-xdist, Ray workers) never see a half-written directory.

Usage::

    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path
    path = tiny_qwen25vl_path()          # ~/.cache/medvr_verl/tiny-qwen2.5-vl (or $MEDVR_TINY_MODEL_DIR)

    python -m medvr_verl.testing.tiny_qwen25vl /tmp/tiny-qwen    # build into a given directory

Size (over 500 lines): it writes a whole model directory (tokenizer, processor, config, weights)
offline, as a real checkout has it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ADDED_TOKENS",
    "CHAT_TEMPLATE_RESOURCE",
    "DEFAULT_HEAD_DIM",
    "DEFAULT_MAX_PIXELS",
    "HEAD_DIMS",
    "MIN_PIXELS",
    "REAL_MAX_PIXELS",
    "TinyModelSpec",
    "build_cached",
    "build_tiny_qwen25vl",
    "load_chat_template",
    "read_build_marker",
    "tiny_qwen25vl_path",
]

#: Name of the packaged jinja file holding the official Qwen2.5-VL-Instruct chat template.
CHAT_TEMPLATE_RESOURCE = "qwen2_5_vl_chat_template.jinja"

#: Real Qwen2.5-VL ``min_pixels`` (4 merged tokens of 28x28 pixels).
MIN_PIXELS = 3136
#: Real Qwen2.5-VL ``max_pixels`` (16384 merged tokens).
REAL_MAX_PIXELS = 12845056
#: Default ``max_pixels`` of the tiny build: at most 256 image tokens per image.
DEFAULT_MAX_PIXELS = 256 * 28 * 28

#: Text attention head size of the default build (4 heads of 16, 2 KV heads).
DEFAULT_HEAD_DIM = 16
#: Text attention layouts on offer, as head_dim -> (attention heads, KV heads, mrope_section); every
#: one is 64 wide, so all weight shapes are equal. vLLM's CPU attention refuses head_dim 16
#: ("Unsupported CPU attention configuration"; it takes 32, 64, 80 and up): use 32 with vLLM's CPU build.
HEAD_DIMS: dict[int, tuple[int, int, list[int]]] = {16: (4, 2, [2, 3, 3]), 32: (2, 1, [4, 6, 6])}

#: Bumped whenever the written files change, so cached builds get rebuilt.
_BUILD_FORMAT = 1
_MARKER_NAME = "medvr_tiny_build.json"
_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "chat_template.json",
)
_DEFAULT_CACHE_DIR = Path("~/.cache/medvr_verl/tiny-qwen2.5-vl")

#: Added tokens of Qwen2.5-VL-Instruct, in id order, as ``(content, special)``. They follow the base
#: vocabulary contiguously (real checkpoint: ids 151643..151664).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Qwen2's pre-tokenizer split (identical to transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX).
_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

# Fixed text the BPE merges are learned from. Changing it changes the tokenizer: bump _BUILD_FORMAT.
_MERGE_CORPUS = (
    "You are a helpful assistant.",
    "You are a careful medical imaging assistant. Think step by step before you answer.",
    "The image shows a chest X-ray of the patient. There is an opacity in the right lower lobe.",
    "The CT scan of the abdomen shows the liver, the kidneys and the spleen. No lesion is seen.",
    "An MRI of the brain shows a small region of high signal in the left temporal lobe.",
    "Question: Which of the following is the most likely diagnosis? Options: A. pneumonia "
    "B. pleural effusion C. pneumothorax D. normal. Answer with the letter of the option.",
    "<think>I should look at the region more closely before I answer the question.</think>",
    "<think>The zoomed region shows the finding clearly, so the answer is A.</think><answer>A</answer>",
    '<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 110, 120], '
    '"label": "lesion"}}\n</tool_call>',
    '{"type": "function", "function": {"name": "image_zoom_in_tool", "description": "Zoom in on a '
    'region of the image given a bounding box.", "parameters": {"type": "object", "properties": '
    '{"bbox_2d": {"type": "array", "items": {"type": "number"}}}, "required": ["bbox_2d"]}}}',
    "<tool_response>\nHere is the zoomed in image of the region.\n</tool_response>",
    "system\nuser\nassistant\ntool\nthe of and to in is that for on with as by this are at from",
    "0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 60 70 80 90 100 128 224 256 448 512 1024",
)
_MERGE_VOCAB_SIZE = 256 + 512  # upper bound; the corpus yields fewer merges


class TinyModelSpec(dict):
    """The parameters a build depends on (stored in the marker file, compared for cache hits)."""

    @classmethod
    def make(cls, *, seed: int, min_pixels: int, max_pixels: int, head_dim: int = DEFAULT_HEAD_DIM) -> TinyModelSpec:
        import transformers

        if not (0 < min_pixels <= max_pixels):
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels=} {max_pixels=}")
        if head_dim not in HEAD_DIMS:
            raise ValueError(f"head_dim must be one of {sorted(HEAD_DIMS)}, got {head_dim!r}")
        # the default build's spec (hence its cache marker) is unchanged by the head_dim option
        extra = {} if head_dim == DEFAULT_HEAD_DIM else {"head_dim": int(head_dim)}
        return cls(
            **extra,
            build_format=_BUILD_FORMAT,
            seed=int(seed),
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
            chat_template_sha256=hashlib.sha256(load_chat_template().encode("utf-8")).hexdigest(),
            transformers_version=transformers.__version__,
        )


def load_chat_template() -> str:
    """Return the official Qwen2.5-VL-Instruct chat template shipped with this package."""
    text = resources.files("medvr_verl.testing").joinpath(CHAT_TEMPLATE_RESOURCE).read_text(encoding="utf-8")
    # The official template has no trailing newline; tolerate one added by an editor.
    return text[:-1] if text.endswith("\n") else text


# ----------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map, in GPT-2's (and Qwen's) id order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _qwen_pipeline(tokenizer) -> None:
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


def _learn_merges() -> list[tuple[str, str]]:
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE

    scratch = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    _qwen_pipeline(scratch)
    trainer = trainers.BpeTrainer(
        vocab_size=_MERGE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    scratch.train_from_iterator(list(_MERGE_CORPUS), trainer=trainer)
    merges = json.loads(scratch.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _build_tokenizer():
    """Return ``(tokenizers.Tokenizer, base_vocab: dict[str, int], merges: list[tuple[str, str]])``."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE

    vocab: dict[str, int] = {}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []
    for left, right in _learn_merges():
        merged = left + right
        if left in vocab and right in vocab and merged not in vocab:
            vocab[merged] = len(vocab)
            merges.append((left, right))

    tok = Tokenizer(
        BPE(
            vocab=dict(vocab),
            merges=list(merges),
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    _qwen_pipeline(tok)
    for content, special in ADDED_TOKENS:  # one call per token keeps the id order
        added = AddedToken(content, lstrip=False, rstrip=False, single_word=False, normalized=False, special=special)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    for offset, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(content) == len(vocab) + offset, content
    return tok, vocab, merges


def _tokenizer_config(base_vocab_size: int, chat_template: str) -> dict[str, Any]:
    added = {
        str(base_vocab_size + i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [c for c, special in ADDED_TOKENS[1:] if special],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# ----------------------------------------------------------------------------------------------
# processor / model
# ----------------------------------------------------------------------------------------------


def _preprocessor_config(min_pixels: int, max_pixels: int) -> dict[str, Any]:
    return {
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }


def _write_model(
    out: Path, *, seed: int, token_ids: dict[str, int], tokenizer_len: int, head_dim: int = DEFAULT_HEAD_DIM
) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab_size = -(-tokenizer_len // 64) * 64  # round up to a multiple of 64, like the real 152064
    hidden = 64
    heads, kv_heads, mrope_section = HEAD_DIMS[head_dim]
    assert hidden // heads == head_dim and sum(mrope_section) == head_dim // 2
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "use_sliding_window": False,
            "sliding_window": 32768,
            "max_window_layers": 2,
            "attention_dropout": 0.0,
            "rope_parameters": {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 1000000.0},
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "hidden_act": "silu",
            "intermediate_size": 128,
            "num_heads": 4,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [1],
        },
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    # Top-level copies (as in the real flat config.json) for code that reads them off the root config.
    config.bos_token_id = token_ids["<|endoftext|>"]
    config.eos_token_id = token_ids["<|im_end|>"]
    config.pad_token_id = token_ids["<|endoftext|>"]

    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<|endoftext|>"],
        pad_token_id=token_ids["<|endoftext|>"],
        eos_token_id=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        do_sample=True,
        repetition_penalty=1.05,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
    )
    from transformers.utils import logging as hf_logging

    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


def _write_all(out: Path, spec: TinyModelSpec) -> None:
    chat_template = load_chat_template()
    tok, vocab, merges = _build_tokenizer()
    base = len(vocab)
    token_ids = {content: base + i for i, (content, _) in enumerate(ADDED_TOKENS)}

    tok.save(str(out / "tokenizer.json"))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    _dump_json(out / "tokenizer_config.json", _tokenizer_config(base, chat_template))
    _dump_json(out / "preprocessor_config.json", _preprocessor_config(spec["min_pixels"], spec["max_pixels"]))
    _dump_json(out / "chat_template.json", {"chat_template": chat_template})
    _write_model(
        out,
        seed=spec["seed"],
        token_ids=token_ids,
        tokenizer_len=base + len(ADDED_TOKENS),
        head_dim=spec.get("head_dim", DEFAULT_HEAD_DIM),
    )
    # The marker goes last: its presence means the directory is complete.
    _dump_json(out / _MARKER_NAME, dict(spec))
    for child in out.iterdir():
        os.chmod(child, 0o644)


def _dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# cached build
# ----------------------------------------------------------------------------------------------


def read_build_marker(out: Path) -> dict | None:
    """The build spec a complete tiny-model build in ``out`` records, None where there is none."""
    try:
        return json.loads((out / _MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(out: Path, spec: TinyModelSpec) -> bool:
    return read_build_marker(out) == dict(spec) and all((out / name).is_file() for name in _REQUIRED_FILES)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: rely on the atomic rename alone
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_tiny_qwen25vl(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_pixels: int = MIN_PIXELS,
    head_dim: int = DEFAULT_HEAD_DIM,
) -> Path:
    """Write a tiny RANDOM-weight Qwen2.5-VL model directory into ``out_dir`` and return its path.

    TEST / DEMO FIXTURE: the weights are random. The directory loads offline with
    ``AutoConfig`` / ``AutoTokenizer`` / ``AutoProcessor`` / ``Qwen2_5_VLForConditionalGeneration``
    ``.from_pretrained`` and with veRL's ``HFModelConfig(path=...)``.

    Args:
        out_dir: target directory. If it already holds a complete build with the same parameters it
            is returned as is (cheap). If it holds another build of this function it is replaced. A
            non-empty directory that is not such a build is refused (``FileExistsError``).
        seed: seed of the random weights (``torch.manual_seed``); the tokenizer does not depend on it.
        max_pixels: image processor ``max_pixels`` (the real model uses :data:`REAL_MAX_PIXELS`);
            the default :data:`DEFAULT_MAX_PIXELS` caps an image at 256 placeholder tokens.
        min_pixels: image processor ``min_pixels`` (real value :data:`MIN_PIXELS`).
        head_dim: text attention head size, a key of :data:`HEAD_DIMS` (32 for vLLM's CPU build).

    Safe to call concurrently from several processes: the build happens in a temporary sibling
    directory that is renamed into place under an exclusive file lock.
    """
    out = Path(out_dir).expanduser().absolute()
    spec = TinyModelSpec.make(seed=seed, min_pixels=min_pixels, max_pixels=max_pixels, head_dim=head_dim)
    return build_cached(
        out,
        complete=lambda: _is_complete(out, spec),
        ours=lambda: read_build_marker(out) is not None,
        write=lambda tmp: _write_all(tmp, spec),
        what="tiny Qwen2.5-VL",
    )


def build_cached(
    out: Path,
    *,
    complete: Callable[[], bool],
    ours: Callable[[], bool],
    write: Callable[[Path], None],
    what: str,
) -> Path:
    """Return ``out`` once it holds a complete build (``complete()``), building it if need be.

    Safe under concurrent processes: under an exclusive file lock beside ``out``, checked again
    (another process may have finished while this one waited), then ``write(tmp)`` into a temporary
    sibling, made readable by all (0755: a shared cache) and renamed into place, so no reader sees
    a half-written build. An older build of ours (``ours()``) is replaced; any other non-empty
    ``out`` is refused (``FileExistsError``)."""
    if complete():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out.parent / f".{out.name}.lock"):
        if complete():
            return out
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not ours())):
            raise FileExistsError(f"{out} exists and is not a {what} build; refusing to overwrite it")
        _build_in_place(out, write)
    return out


def _build_in_place(out: Path, write: Callable[[Path], None]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        # mkdtemp makes the directory 0700; a shared cache must be readable by everyone.
        os.chmod(tmp, 0o755)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def tiny_model_path_for(backend: str = "cpu") -> Path:
    """The tiny model of :mod:`medvr_verl.cpu.tiny_run`'s ``backend``: head_dim 32 for ``cpu_vllm``
    (vLLM's CPU attention refuses 16), the default otherwise (built once, cached)."""
    return tiny_qwen25vl_path(head_dim=32) if backend == "cpu_vllm" else tiny_qwen25vl_path()


def tiny_qwen25vl_path(
    *,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_pixels: int = MIN_PIXELS,
    head_dim: int = DEFAULT_HEAD_DIM,
) -> Path:
    """Build (once) and return the cached tiny Qwen2.5-VL directory.

    The directory is ``$MEDVR_TINY_MODEL_DIR`` if set, else ``~/.cache/medvr_verl/tiny-qwen2.5-vl``;
    non-default parameters get a suffixed sibling (``...-seed1-px3136-200704``, ``...-hd32``). Safe under
    concurrent processes (see :func:`build_tiny_qwen25vl`).
    """
    base = Path(os.environ.get("MEDVR_TINY_MODEL_DIR") or _DEFAULT_CACHE_DIR).expanduser()
    if (seed, min_pixels, max_pixels) != (0, MIN_PIXELS, DEFAULT_MAX_PIXELS):
        base = base.with_name(f"{base.name}-seed{seed}-px{min_pixels}-{max_pixels}")
    if head_dim != DEFAULT_HEAD_DIM:
        base = base.with_name(f"{base.name}-hd{head_dim}")
    return build_tiny_qwen25vl(base, seed=seed, max_pixels=max_pixels, min_pixels=min_pixels, head_dim=head_dim)


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny RANDOM-weight Qwen2.5-VL test model.")
    parser.add_argument("out_dir", nargs="?", help="target directory (default: the shared cache dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--min-pixels", type=int, default=MIN_PIXELS)
    parser.add_argument("--head-dim", type=int, default=DEFAULT_HEAD_DIM, choices=sorted(HEAD_DIMS))
    args = parser.parse_args()
    kwargs = dict(seed=args.seed, max_pixels=args.max_pixels, min_pixels=args.min_pixels, head_dim=args.head_dim)
    print(build_tiny_qwen25vl(args.out_dir, **kwargs) if args.out_dir else tiny_qwen25vl_path(**kwargs))
