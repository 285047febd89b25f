"""veRL's ``RLHFDataset`` with a length filter that says what it dropped (imports veRL, unlike the
rest of :mod:`medvr_verl.data`; nothing there imports this module).

veRL's ``data.filter_overlong_prompts`` drops every prompt whose tokens (text plus the image tokens
of ``data.mm_processor_kwargs``' pixel budget) exceed ``data.max_prompt_length`` and only prints the
size that is left. A budget that does not fit (images larger than the budget allows, a question with
several images) then shrinks a training or evaluation set without a word. :class:`MedVRDataset`
counts the dropped prompts, logs a warning with the count, the share and the first few of them
(``data_source`` and ``extra_info.index``), and keeps them as :attr:`MedVRDataset.filtered_out` /
:attr:`MedVRDataset.filtered_out_examples`. Select it with::

    data:
      custom_cls: {path: pkg://medvr_verl.data.dataset, name: MedVRDataset}

(the MedVR recipes do). Everything else is veRL's ``RLHFDataset``.
"""

from __future__ import annotations

import logging
import os

from verl.utils.dataset.rl_dataset import RLHFDataset

__all__ = ["MedVRDataset", "ROW_COLUMN"]

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

ROW_COLUMN = "__medvr_row"
"""Temporary column: each row's position before the filter, to name the rows it dropped."""
MAX_EXAMPLES = 10


class MedVRDataset(RLHFDataset):
    """``RLHFDataset`` whose overlong-prompt filter counts and logs the prompts it drops.

    Attributes:
        filtered_out: prompts dropped by the length filter (0 when the filter is off).
        filtered_out_examples: up to :data:`MAX_EXAMPLES` ``(data_source, extra_info.index)`` of them.
    """

    filtered_out: int = 0
    filtered_out_examples: list = []

    def maybe_filter_out_long_prompts(self, dataframe=None):
        self.filtered_out, self.filtered_out_examples = 0, []
        if dataframe is None or not self.filter_overlong_prompts:
            return super().maybe_filter_out_long_prompts(dataframe)
        before = len(dataframe)
        tagged = dataframe.add_column(ROW_COLUMN, list(range(before)))
        kept = super().maybe_filter_out_long_prompts(tagged)
        kept_rows = set(kept[ROW_COLUMN])
        kept = kept.remove_columns(ROW_COLUMN)
        dropped = [row for row in range(before) if row not in kept_rows]
        self.filtered_out = len(dropped)
        if dropped:
            self.filtered_out_examples = [_describe(dataframe[row]) for row in dropped[:MAX_EXAMPLES]]
            files = ", ".join(os.path.basename(str(f)) for f in self.original_data_files)
            logger.warning(
                "MedVR dataset %s: %d of %d prompts (%.1f%%) are longer than data.max_prompt_length=%d "
                "tokens and were dropped (data.filter_overlong_prompts). Image tokens follow "
                "data.mm_processor_kwargs=%s. First dropped (data_source, extra_info.index): %s. Raise "
                "max_prompt_length or lower the pixel budget to keep them.",
                files,
                self.filtered_out,
                before,
                100.0 * self.filtered_out / max(before, 1),
                self.max_prompt_length,
                dict(self.mm_processor_kwargs or {}),
                self.filtered_out_examples,
            )
        else:
            logger.info("MedVR dataset: no prompt is longer than %d tokens", self.max_prompt_length)
        return kept


def _describe(row: dict) -> tuple:
    extra = row.get("extra_info") or {}
    index = extra.get("index") if isinstance(extra, dict) else None
    return (row.get("data_source"), index)
