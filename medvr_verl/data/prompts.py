"""Prompts written into the ``prompt`` column: the system prompts and the user turn of a record.

The user turn is ``<image>`` placeholders (one per image, in order; veRL's ``RLHFDataset`` replaces
each by the next entry of the row's ``images``), the question, the options (multiple choice, unless
the question already lists them) and one answer instruction. The instruction for closed and open
questions is the same sentence, so it never gives away which kind of answer is expected.

``prompt_style="medvlm_r1"`` writes MedVLM-R1's own user turn instead (Pan et al. 2025, the
``QUESTION_TEMPLATE`` of its training script ``src/open-r1-multimodal/src/open_r1/grpo.py`` for the
HuatuoGPT-Vision data, github.com/JZPeterPan/MedVLM-R1): the image, then the template around its
``problem`` (the question, then one ``"A) option"`` line per option), and no system turn (its
trainer sends none, so Qwen2-VL's chat template adds its default one).
"""

from __future__ import annotations

from medvr_verl.data.records import Record

__all__ = [
    "INSTRUCTION_MULTIPLE_CHOICE",
    "INSTRUCTION_SHORT_ANSWER",
    "MEDVLM_R1_QUESTION_TEMPLATE",
    "PROMPT_STYLES",
    "SYSTEM_PROMPT",
    "TEXT_SYSTEM_PROMPT",
    "build_messages",
    "build_user_content",
    "default_system_prompt",
    "medvlm_r1_problem",
]

#: System prompt of the MedVR agent (zoom-in tool available). ``image_zoom_in_tool`` and its
#: ``bbox_2d`` / ``image_index`` arguments are those of :mod:`medvr_verl.tools.zoom`; the tool's JSON
#: schema itself reaches the model through the chat template (the recipe's tool config).
SYSTEM_PROMPT = (
    "You are an expert in medical imaging. Answer the question about the medical image(s).\n"
    "Think step by step inside <think> </think>. When a region of an image needs a closer look, you may "
    "call the tool `image_zoom_in_tool` with `bbox_2d` = [x1, y1, x2, y2], the region in pixel "
    "coordinates of the image as you see it, and `image_index` (images count from 0 in the order shown, "
    "default 0); it returns the region cropped at full resolution. You may zoom in more than once.\n"
    "Your final reply must be your reasoning in <think> </think> followed by the answer in "
    "<answer> </answer>, nothing else: the option letter for a multiple-choice question, yes or no for "
    "a yes/no question, otherwise a short word or phrase."
)

#: System prompt without the tool (the MedVLM-R1 style text-reasoning GRPO baseline).
TEXT_SYSTEM_PROMPT = (
    "You are an expert in medical imaging. Answer the question about the medical image(s).\n"
    "Think step by step inside <think> </think>, then give the answer in <answer> </answer>, nothing "
    "else after it: the option letter for a multiple-choice question, yes or no for a yes/no question, "
    "otherwise a short word or phrase."
)

#: MedVLM-R1's question template for multiple-choice medical questions, character for character as
#: its training script has it (a triple-quoted string: the leading newline, the 8-space indent and
#: the trailing spaces are its own, and the model was trained on them). ``{Question}`` is
#: :func:`medvlm_r1_problem`.
MEDVLM_R1_QUESTION_TEMPLATE = (
    "\n"
    "        {Question} \n"
    "        Your task: \n"
    "        1. Think through the question step by step, enclose your reasoning process in <think>...</think> tags. \n"
    "        2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.\n"
    "        3. No extra information or text outside of these tags.\n"
    "        "
)

#: ``medvr``: our system prompt (with or without the tool) and user turn; ``medvlm_r1``: MedVLM-R1's
#: template, no system turn (multiple-choice questions only).
PROMPT_STYLES = ("medvr", "medvlm_r1")

INSTRUCTION_MULTIPLE_CHOICE = "Answer with the option's letter."
INSTRUCTION_SHORT_ANSWER = "Answer yes or no if it is a yes/no question; otherwise answer with a short word or phrase."

# veRL splits message content on these; a literal one in a question would misalign the images.
_PLACEHOLDERS = ("<image>", "<video>", "<audio>")


def default_system_prompt(tool_prompt: bool = True) -> str:
    return SYSTEM_PROMPT if tool_prompt else TEXT_SYSTEM_PROMPT


def _sanitize(text: str) -> str:
    for tag in _PLACEHOLDERS:
        if tag in text:
            text = text.replace(tag, tag[1:-1])
    return text.strip()


def medvlm_r1_problem(record: Record) -> str:
    """MedVLM-R1's ``problem``: the question, then ``"A) text"`` per option, joined by newlines."""
    lines = [_sanitize(record.question)]
    if record.options and not record.options_in_question:
        lines += [f"{k}) {_sanitize(v)}" for k, v in record.options.items()]
    return "\n".join(lines)


def build_user_content(record: Record, prompt_style: str = "medvr") -> str:
    """``"<image>\\n" * n`` + question + options + instruction; or, ``prompt_style="medvlm_r1"``,
    ``"<image>" * n`` + :data:`MEDVLM_R1_QUESTION_TEMPLATE` (its image part comes straight before
    the text, as in its ``[{"type": "image"}, {"type": "text", ...}]`` message)."""
    if prompt_style == "medvlm_r1":
        if record.question_type != "multiple_choice":
            raise ValueError(
                f"prompt_style 'medvlm_r1' is for multiple-choice questions (its template asks for a letter); "
                f"record {record.source_id!r} is {record.question_type}"
            )
        return "<image>" * len(record.images) + MEDVLM_R1_QUESTION_TEMPLATE.format(Question=medvlm_r1_problem(record))
    if prompt_style != "medvr":
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    parts = ["<image>\n" * len(record.images) + _sanitize(record.question)]
    if record.question_type == "multiple_choice":
        if record.options and not record.options_in_question:
            parts.append("Options:\n" + "\n".join(f"{k}. {_sanitize(v)}" for k, v in record.options.items()))
        parts.append(INSTRUCTION_MULTIPLE_CHOICE)
    else:
        parts.append(INSTRUCTION_SHORT_ANSWER)
    return "\n".join(parts)


def build_messages(record: Record, system_prompt: str | None, prompt_style: str = "medvr") -> list[dict[str, str]]:
    """Chat messages of a record: an optional system turn, then the user turn."""
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": build_user_content(record, prompt_style)})
    return messages
