"""Training subsets picked from a reader's records: by imaging modality, the first N, a seeded shuffle.

MedVLM-R1's training set (Pan et al. 2025, arXiv 2502.19634; its training script
``src/open-r1-multimodal/src/open_r1/grpo.py``, github.com/JZPeterPan/MedVLM-R1) is, in its own
steps: HuatuoGPT-Vision's evaluation bundle -> the records whose ``subset`` is
``"MR (Mag-netic Resonance Imaging)"`` -> the first N in file order -> ``shuffle(seed=42)``. The
paper and the model card say 600 MRI questions; the released script selects ``range(500)``.
:data:`MEDVLM_R1_SUBSET` is the paper's 600 (``first=500`` gives the script's). The shuffle is
``datasets``' own (``numpy.random.default_rng(seed).permutation``), so the row order is the one
MedVLM-R1 trained in.

Pure Python plus numpy: no veRL, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from medvr_verl.data.records import ConversionReport, Record

__all__ = ["MEDVLM_R1_SUBSET", "MODALITY_ALIASES", "modality_matches", "select_records"]

#: Spellings of one modality across the releases (OmniMedVQA's and so HuatuoGPT-Vision's labels,
#: SLAKE's ``modality``), lowercased. ``--modality MRI`` matches any of them; any other value
#: matches a record's modality exactly (case and surrounding spaces aside).
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "mri": ("mri", "mr", "mr (mag-netic resonance imaging)", "mr (magnetic resonance imaging)"),
    "ct": ("ct", "ct(computed tomography)", "ct (computed tomography)"),
    "x-ray": ("x-ray", "xray", "x ray"),
}


def _canonical(modality: str) -> str:
    key = " ".join(str(modality).strip().lower().split())
    for name, spellings in MODALITY_ALIASES.items():
        if key == name or key in spellings:
            return name
    return key


def modality_matches(record_modality: str | None, wanted: str) -> bool:
    """Whether a record's modality label is ``wanted`` (aliases of :data:`MODALITY_ALIASES` agree)."""
    return record_modality is not None and _canonical(record_modality) == _canonical(wanted)


#: MedVLM-R1's training subset (keyword arguments of :func:`select_records`): MRI, the first 600 in
#: the source's order, shuffled with seed 42.
MEDVLM_R1_SUBSET: dict = {"modality": "MR (Mag-netic Resonance Imaging)", "first": 600, "shuffle_seed": 42}


def select_records(
    records: Iterable[Record],
    *,
    modality: str | None = None,
    first: int | None = None,
    shuffle_seed: int | None = None,
    report: ConversionReport | None = None,
) -> Iterator[Record]:
    """The records of ``modality`` (all when None), the first ``first`` of them (all when None),
    in the order of ``numpy.random.default_rng(shuffle_seed).permutation`` (source order when None).

    Records of another modality are not skipped-as-broken: ``report.warnings`` counts them under
    ``"left out by the modality filter (not <m>)"`` so the summary says how many the filter left out,
    and a source with fewer than ``first`` matching records is a warning too (``"subset smaller than
    asked ..."``). A shuffle reads the selected records into memory (records are small: images are
    only located here).
    """
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 0):
        raise ValueError(f"first must be a whole number >= 0 or None, got {first!r}")
    if shuffle_seed is not None and (isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, int)):
        raise ValueError(f"shuffle_seed must be a whole number or None, got {shuffle_seed!r}")

    def matching() -> Iterator[Record]:
        for record in records:
            if modality is None or modality_matches(record.modality, modality):
                yield record
            elif report is not None:
                report.warn(f"left out by the modality filter (not {modality!r})", record.source_id)

    def counted(selected: Iterable[Record]) -> Iterator[Record]:
        n = 0
        for record in selected:
            n += 1
            yield record
        if first is not None and n < first and report is not None:
            report.warn(f"subset smaller than asked: {n} of the first {first} matching records exist")

    selected = counted(matching() if first is None else islice(matching(), first))
    if shuffle_seed is None:
        return selected
    import numpy as np

    chosen = list(selected)
    order = np.random.default_rng(shuffle_seed).permutation(len(chosen))
    return iter([chosen[int(i)] for i in order])
