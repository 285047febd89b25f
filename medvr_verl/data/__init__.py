"""Converters from public medical VQA releases to veRL parquet.

::

    from medvr_verl.data import convert
    report = convert("slake", "/data/Slake1.0", "slake_test.parquet", split="test")
    print(report.summary())

or ``python -m medvr_verl.data slake /data/Slake1.0 slake_test.parquet --split test``.

One reader per release (:func:`read_vqa_rad`, :func:`read_slake`, :func:`read_path_vqa`,
:func:`read_pmc_vqa`, :func:`read_omnimedvqa`, :func:`read_medxpertqa_mm`, and
:func:`read_huatuo_eval` for HuatuoGPT-Vision's evaluation bundle, MedVLM-R1's data) yields :class:`Record`
objects; :func:`convert` / :func:`write_records` turn them into parquet rows (schema:
:mod:`medvr_verl.data.writer`). Imports neither veRL nor torch.
"""

from medvr_verl.data.prompts import (
    INSTRUCTION_MULTIPLE_CHOICE,
    INSTRUCTION_SHORT_ANSWER,
    SYSTEM_PROMPT,
    TEXT_SYSTEM_PROMPT,
    build_messages,
    build_user_content,
)
from medvr_verl.data.readers import (
    LAYOUTS,
    READERS,
    LayoutError,
    read_huatuo_eval,
    read_medxpertqa_mm,
    read_omnimedvqa,
    read_path_vqa,
    read_pmc_vqa,
    read_slake,
    read_vqa_rad,
)
from medvr_verl.data.records import OPTION_LETTERS, ConversionReport, ImageRef, Record, split_role
from medvr_verl.data.writer import (
    AUTO,
    DEFAULT_AGENT_NAME,
    build_row,
    convert,
    resolve_dataset,
    row_schema,
    write_records,
)

__all__ = [
    "AUTO",
    "DEFAULT_AGENT_NAME",
    "INSTRUCTION_MULTIPLE_CHOICE",
    "INSTRUCTION_SHORT_ANSWER",
    "LAYOUTS",
    "OPTION_LETTERS",
    "READERS",
    "SYSTEM_PROMPT",
    "TEXT_SYSTEM_PROMPT",
    "ConversionReport",
    "ImageRef",
    "LayoutError",
    "Record",
    "build_messages",
    "build_row",
    "build_user_content",
    "convert",
    "read_huatuo_eval",
    "read_medxpertqa_mm",
    "read_omnimedvqa",
    "read_path_vqa",
    "read_pmc_vqa",
    "read_slake",
    "read_vqa_rad",
    "resolve_dataset",
    "row_schema",
    "split_role",
    "write_records",
]
