"""The tiny reader fixture (:mod:`medvr_verl.testing.tiny_reader`): its context and its training.

Its context is the learning run's own (checked once by hand against a ``main_ppo`` rollout dump,
decoded: equal); here its parts are checked on the real processor and the recipe's chat template,
and a few training steps are shown to teach the answer from the crop.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vl_stack


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    return AutoProcessor.from_pretrained(tiny_qwen25vl_path())


def test_the_context_is_the_runs_prompt_zoom_turn_and_tool_response(processor):
    from medvr_verl.cpu.constrained import ANSWER_PREFIX, ZOOM_PREFIX
    from medvr_verl.cpu.learning import IMAGE_SIZE, SYSTEM_PROMPT
    from medvr_verl.data.prompts import build_messages
    from medvr_verl.data.synthetic import stripes_records
    from medvr_verl.testing.tiny_reader import answer_context

    record = stripes_records(1, size=IMAGE_SIZE)[0]
    text = answer_context(processor, build_messages(record, SYSTEM_PROMPT), [112, 112, 224, 224])
    assert text.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}\n\n# Tools\n")
    assert '"name": "image_zoom_in_tool"' in text  # the learning run's tool schema
    user = f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\n{record.question}\nOptions:\nA."
    assert user in text
    assert f"<|im_start|>assistant\n{ZOOM_PREFIX}112, 112, 224, 224]}}}}\n</tool_call><|im_end|>\n" in text
    assert (
        "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>"
        "Zoomed into [112, 112, 224, 224] of image 0.\n</tool_response><|im_end|>\n"
        f"<|im_start|>assistant\n{ANSWER_PREFIX}"
    ) in text
    assert text.endswith(ANSWER_PREFIX) and text.count("<|image_pad|>") == 2


def test_training_teaches_the_answer_from_the_crop_and_no_letter_on_a_blank_one(tmp_path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path
    from medvr_verl.testing.tiny_reader import train_reader

    result = train_reader(tiny_qwen25vl_path(), tmp_path, steps=12, batch=8, lr=1e-3, seed=0)
    assert result["heldout_acc"] >= 0.9, result  # crops of the lines; random weights: 0.5
    assert 0.3 <= result["heldout_blank_p_a"] <= 0.7, result  # crops of other cells: no letter favoured
    Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    AutoProcessor.from_pretrained(tmp_path)
    assert not (tmp_path / "medvr_tiny_build.json").exists()  # not mistaken for the random tiny model


def test_the_cached_reader_is_readable_by_all():
    import stat

    from medvr_verl.testing.tiny_reader import tiny_reader_path

    path = tiny_reader_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # a shared cache (mkdtemp makes 0700)
