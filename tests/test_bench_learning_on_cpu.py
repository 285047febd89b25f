"""``benchmarks/bench_learning.py --combine``: the toy ablation's per-seed tables merged into one."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ablation_csv(path: Path, seed: int, rows: list[dict]) -> Path:
    fields = ["variant", "seed", *_METRICS, "steps_to_zoom_0.6"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({"seed": seed, **row})
    return path


_METRICS = ("reward_first", "reward_last", "acc_first", "acc_last", "zoom_gt_hit_first", "zoom_gt_hit_last")


def _row(variant, acc_last, zoom_last, step):
    return {
        "variant": variant,
        "reward_first": 1.0,
        "reward_last": 1.0 + acc_last,
        "acc_first": 0.6,
        "acc_last": acc_last,
        "zoom_gt_hit_first": 0.3,
        "zoom_gt_hit_last": zoom_last,
        "steps_to_zoom_0.6": step,
    }


def test_combine_means_over_seeds_and_counts_the_seeds_that_learned(bench, tmp_path, capsys):
    a = _ablation_csv(tmp_path / "a.csv", 1, [_row("consensus", 0.9, 0.8, 5.0), _row("none", 0.5, 0.2, "nan")])
    b = _ablation_csv(tmp_path / "b.csv", 0, [_row("consensus", 0.7, 0.9, 9.0), _row("none", 0.8, 0.7, 12.0)])
    assert bench.main(["--out", str(tmp_path / "out"), "--combine", str(a), str(b)]) == 0
    with open(tmp_path / "out" / "ablation_seeds.csv", newline="") as f:
        table = {row["variant"]: row for row in csv.DictReader(f)}
    assert table["consensus"]["seeds"] == "0 1"  # sorted by seed, whatever the file order
    assert float(table["consensus"]["acc_last"]) == pytest.approx(0.8)
    assert table["consensus"]["steps_to_zoom_0.6"] == "9 5"
    assert table["consensus"]["learned"] == "1/2"  # seed 0's accuracy 0.7 is under the bench's 0.75
    assert table["none"]["steps_to_zoom_0.6"] == "12 never"
    assert table["none"]["learned"] == "1/2"
    assert "| consensus | 0 1 | 1.00 -> 1.80 |" in capsys.readouterr().out


def test_combine_refuses_a_seed_twice_and_a_table_without_seeds(bench, tmp_path):
    a = _ablation_csv(tmp_path / "a.csv", 0, [_row("consensus", 0.9, 0.8, 5.0)])
    with pytest.raises(SystemExit, match="seed\\(s\\) twice"):
        bench.main(["--out", str(tmp_path / "out"), "--combine", str(a), str(a)])
    old = tmp_path / "old.csv"
    old.write_text("variant,acc_last\nconsensus,0.9\n")
    with pytest.raises(SystemExit, match="no seed column"):
        bench.main(["--out", str(tmp_path / "out"), "--combine", str(old)])
    with pytest.raises(SystemExit, match="is not a file"):
        bench.main(["--out", str(tmp_path / "out"), "--combine", str(tmp_path / "missing.csv")])
