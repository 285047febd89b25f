"""veRL's validation dump -> evaluation records (:mod:`medvr_verl.eval.metrics`).

The evaluation runs as veRL users evaluate: ``python -m verl.trainer.main_ppo ... trainer.val_only=true
data.val_files=[...] trainer.validation_data_dir=DIR``. veRL's trainer (``_validate``) writes
``DIR/<global_step>.jsonl``, one line per trajectory with ``input``, ``output``, ``gts``, ``score``,
``step``, ``uid`` and every ``reward_extra_info`` key of the reward manager. ``medvr_cca`` puts there
what the report needs (:mod:`medvr_verl.reward_manager`): ``data_source``, ``question_type``,
``group_uid``, ``sample_index``, ``acc``, ``format``, ``pred``, ``num_zoom_invalid``,
``zoom_boxes_json``, ``cca_consensus_json``, ``gt_boxes_json``.

Imports neither veRL nor torch.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DumpError", "find_dump", "read_dump", "record_of_line", "report_from_dump"]

#: reward_extra_info keys of ``medvr_cca`` a dump line must carry
REQUIRED_KEYS = ("acc", "data_source", "group_uid", "zoom_boxes_json", "cca_consensus_json")
_STEP_FILE = re.compile(r"^(\d+)\.jsonl$")


class DumpError(ValueError):
    """The path holds no veRL validation dump, or one without ``medvr_cca``'s fields."""


def find_dump(path: str | os.PathLike, step: int | None = None) -> Path:
    """The dump file: ``path`` itself when it is a file, else ``path/<step>.jsonl`` (default: the
    highest step there, the last validation of a run)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DumpError(f"no such file or folder: {path} (pass trainer.validation_data_dir of the run)")
    steps = sorted(int(m.group(1)) for f in path.iterdir() if (m := _STEP_FILE.match(f.name)))
    if not steps:
        raise DumpError(
            f"{path} holds no <step>.jsonl: is it the run's trainer.validation_data_dir, and did validation run?"
        )
    if step is None:
        return path / f"{steps[-1]}.jsonl"
    if step not in steps:
        raise DumpError(f"{path} has no step {step}; steps there: {steps}")
    return path / f"{step}.jsonl"


def _json_list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.strip():
        parsed = json.loads(value)
        return parsed if isinstance(parsed, list) else []
    return []


def _number(value: Any, default: float | None = None) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return default


def _benchmark(data_source: str) -> str:
    """The canonical benchmark name of a ``data_source`` (aliases resolved); other sources as they are."""
    from medvr_verl.data.writer import resolve_dataset

    try:
        return resolve_dataset(data_source)
    except ValueError:
        return data_source


def record_of_line(line: Mapping[str, Any], where: str = "") -> dict:
    """One dump line as an evaluation record (the fields :func:`medvr_verl.eval.metrics.summarize` reads)."""
    missing = [k for k in REQUIRED_KEYS if k not in line]
    if missing:
        raise DumpError(
            f"{where}no {missing} in the dump line: evaluate with reward.reward_manager.name=medvr_cca "
            "(the MedVR recipes' default) so veRL dumps its reward_extra_info"
        )
    gts = line.get("gts")
    index = line.get("sample_index")
    return {
        "uid": str(line["group_uid"] or line.get("uid") or ""),
        "benchmark": _benchmark(str(line["data_source"])),
        "index": index if isinstance(index, int) and index >= 0 else None,
        "question_type": line.get("question_type") or None,
        "gt": gts,
        "pred": line.get("pred"),
        "acc": float(_number(line["acc"], 0.0)),
        "format": float(_number(line.get("format"), 0.0)),
        "score": _number(line.get("score")),
        "num_zoom": int(_number(line.get("num_zoom"), 0.0)),
        "num_zoom_invalid": int(_number(line.get("num_zoom_invalid"), 0.0)),
        "zoom_boxes": _json_list(line["zoom_boxes_json"]),
        "consensus": _json_list(line["cca_consensus_json"]),
        # boxes read from the response text are in the model's image space, gt boxes in the original's:
        # not comparable, so such a sample stays out of the grounding check (as medvr_cca's monitor does)
        "gt_boxes": [] if line.get("boxes_from_text") is True else _json_list(line.get("gt_boxes_json")),
        "tool_reward": _number(line.get("tool_reward")),
        "cca_iou": _number(line.get("cca_iou")),
        "response": line.get("output"),
    }


def read_dump(path: str | os.PathLike) -> list[dict]:
    """Every line of a dump file as a record, in file order (veRL sorts a group's samples together)."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DumpError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(line, dict):
                raise DumpError(f"{path}:{number}: not a JSON object")
            records.append(record_of_line(line, where=f"{path}:{number}: "))
    if not records:
        raise DumpError(f"{path} is empty: validation scored no sample")
    # a group's samples share group_uid; number them in order (the report's per-question index)
    seen: dict[str, int] = {}
    for record in records:
        record["sample"] = seen[record["uid"]] = seen.get(record["uid"], -1) + 1
    return records


def report_from_dump(
    dump: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    step: int | None = None,
    model: str | None = None,
    save_responses: bool = True,
    verbose: bool = False,
):
    """The paper's table, the breakdown and the grounding check of a validation dump.

    Args:
        dump: ``trainer.validation_data_dir`` of the run (its highest step, or ``step``), or one
            ``<step>.jsonl`` file.
        out_dir: where ``results.md``, ``results.json``, ``samples.jsonl`` go (None: write nothing).
        model: the name the report gives the model (default: the dump's folder).
        save_responses: keep each decoded response (``output``) in ``samples.jsonl``.
        verbose: print the markdown report.

    Returns:
        :class:`medvr_verl.eval.report.EvalResult`. Data sources that are none of the paper's six
        benchmarks are reported in the breakdown and grounding sections, outside the table.
    """
    from medvr_verl.eval.metrics import summarize
    from medvr_verl.eval.report import EvalResult, JsonlWriter, markdown, write_results

    path = find_dump(dump, step)
    records = read_dump(path)
    if not save_responses:
        for record in records:
            record.pop("response", None)
    results = summarize(records, skipped=None, other_sources=True)
    per_question: dict[str, int] = {}
    for record in records:
        per_question[record["uid"]] = per_question.get(record["uid"], 0) + 1
    results["model"] = model or path.parent.name
    results["settings"] = {
        "dump": os.fspath(path),
        "samples_per_prompt": max(per_question.values()),
    }
    md = markdown(results)
    paths: dict[str, Path] = {}
    if out_dir is not None:
        paths = write_results(out_dir, results, md)
        with JsonlWriter(Path(out_dir) / "samples.jsonl") as writer:
            for record in records:
                writer.write(record)
        paths["samples.jsonl"] = writer.path
    if verbose:
        print(md)
    return EvalResult(results=results, markdown=md, records=records, paths=paths)
