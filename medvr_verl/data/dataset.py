"""veRL's ``RLHFDataset`` with a length filter that says what it dropped (imports veRL, unlike the
rest of :mod:`medvr_verl.data`; nothing there imports this module).

veRL's ``data.filter_overlong_prompts`` drops every prompt whose tokens (text plus the image tokens
of ``data.mm_processor_kwargs``' pixel budget) exceed ``data.max_prompt_length`` and only prints the
size that is left. A budget that does not fit (images larger than the budget allows, a question with
several images) then shrinks a training or evaluation set without a word. :class:`MedVRDataset`
counts the dropped prompts, logs a warning with the count, the share and the first few of them
(``data_source`` and ``extra_info.index``), and keeps them as :attr:`MedVRDataset.filtered_out` /
:attr:`MedVRDataset.filtered_out_examples`. veRL's filter also drops a row whose image cannot be read
(it prints the processor's traceback and counts the row as too long): each dropped row is checked
again, and rows with an unreadable image get their own count (:attr:`MedVRDataset.dropped_unreadable`),
their own warning (the error, and the fix: repair or remove the row, not a longer prompt) and
examples, apart from the over-length ones (:attr:`MedVRDataset.dropped_overlong`). Select it with::

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
        filtered_out: prompts dropped by the length filter (0 when the filter is off), both causes.
        filtered_out_examples: up to :data:`MAX_EXAMPLES` ``(data_source, extra_info.index)`` of them.
        dropped_overlong: of those, prompts longer than ``data.max_prompt_length``.
        dropped_unreadable: of those, prompts whose images (or prompt) could not be processed.
        unreadable_examples: up to :data:`MAX_EXAMPLES` ``(data_source, extra_info.index, error)``.
    """

    filtered_out: int = 0
    filtered_out_examples: list = []
    dropped_overlong: int = 0
    dropped_unreadable: int = 0
    unreadable_examples: list = []

    def maybe_filter_out_long_prompts(self, dataframe=None):
        self.filtered_out, self.filtered_out_examples = 0, []
        self.dropped_overlong, self.dropped_unreadable, self.unreadable_examples = 0, 0, []
        if dataframe is None or not self.filter_overlong_prompts:
            return super().maybe_filter_out_long_prompts(dataframe)
        before = len(dataframe)
        tagged = dataframe.add_column(ROW_COLUMN, list(range(before)))
        kept = super().maybe_filter_out_long_prompts(tagged)
        kept_rows = set(kept[ROW_COLUMN])
        kept = kept.remove_columns(ROW_COLUMN)
        dropped = [row for row in range(before) if row not in kept_rows]
        self.filtered_out = len(dropped)
        if not dropped:
            logger.info("MedVR dataset: no prompt is longer than %d tokens", self.max_prompt_length)
            return kept
        self.filtered_out_examples = [_describe(dataframe[row]) for row in dropped[:MAX_EXAMPLES]]
        overlong = []
        for row in dropped:
            error = self._processing_error(dataframe[row])
            if error is None:
                overlong.append(row)
            else:
                self.dropped_unreadable += 1
                if len(self.unreadable_examples) < MAX_EXAMPLES:
                    self.unreadable_examples.append((*_describe(dataframe[row]), error))
        self.dropped_overlong = len(overlong)
        files = ", ".join(os.path.basename(str(f)) for f in self.original_data_files)
        if self.dropped_unreadable:
            logger.warning(
                "MedVR dataset %s: %d of %d prompts (%.1f%%) were dropped because their image cannot be read "
                "(veRL printed the error above for each; the length filter counts them as too long). First "
                "(data_source, extra_info.index, error): %s. Repair or remove those rows (python -m "
                "medvr_verl.data decodes every image when it converts); a longer max_prompt_length does not "
                "keep them.",
                files,
                self.dropped_unreadable,
                before,
                100.0 * self.dropped_unreadable / max(before, 1),
                self.unreadable_examples,
            )
        if overlong:
            logger.warning(
                "MedVR dataset %s: %d of %d prompts (%.1f%%) are longer than data.max_prompt_length=%d "
                "tokens and were dropped (data.filter_overlong_prompts). Image tokens follow "
                "data.mm_processor_kwargs=%s. First dropped (data_source, extra_info.index): %s. Raise "
                "max_prompt_length or lower the pixel budget to keep them.",
                files,
                len(overlong),
                before,
                100.0 * len(overlong) / max(before, 1),
                self.max_prompt_length,
                dict(self.mm_processor_kwargs or {}),
                [_describe(dataframe[row]) for row in overlong[:MAX_EXAMPLES]],
            )
        return kept

    def _processing_error(self, doc: dict) -> str | None:
        """Why veRL's filter could not process ``doc`` (its images, as veRL's ``doc2len`` reads
        them), or ``None`` when it could, i.e. the row was dropped for its length."""
        if self.processor is None:
            return None
        try:
            messages = self._build_messages(dict(doc), key=self.prompt_key)
            self._process_multi_modal_info(messages, self.image_patch_size, self.config)
        except Exception as e:
            return f"{type(e).__name__}: {e}"[:300]
        return None


def _describe(row: dict) -> tuple:
    extra = row.get("extra_info") or {}
    index = extra.get("index") if isinstance(extra, dict) else None
    return (row.get("data_source"), index)
