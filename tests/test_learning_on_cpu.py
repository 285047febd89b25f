"""Training through veRL's trainer improves the policy: a short, seed-fixed learning run on CPU.

One real ``python -m verl.trainer.main_ppo`` run (MedVR recipe, ``+backend=cpu``, V1 trainer, EVR,
``medvr_cca`` with consensus tool reward, paper's ``quorum: correct`` and ``evr.fallback: fresh`` set
explicitly) of the tiny random-weight Qwen2.5-VL on the synthetic stripes task with the
``constrained`` policy (:mod:`medvr_verl.cpu.learning`). The model itself chooses the zoom cell and
the answer; the answer is readable only in the crop of the cell the gt box marks. The assertions
read veRL's own metrics file: the share of zooms that hit the gt box rises from chance (a sign
error in the advantage, a mask that trains the wrong tokens, a fork credited to the wrong row would
each stop this), the consensus monitor logs its gt IoU, and EVR's fork split shows forks at
qualified calls while the policy is uncertain about where to zoom, and dH falling as it learns.

Not asserted: accuracy and mean reward. At this learning rate the answer collapses onto one letter
within a few steps, before the model reads the lines (README, "It learns").

About 5 minutes on 2 cores (``STEPS`` steps of ~17 s plus ~2 minutes of start-up).
"""

from __future__ import annotations

import math

import pytest

from medvr_verl.cpu import learning

pytestmark = pytest.mark.vl_stack

STEPS = 10


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    from medvr_verl.testing.tiny_qwen25vl import tiny_qwen25vl_path

    out = tmp_path_factory.mktemp("learning")
    code, _, log = learning.run(tiny_qwen25vl_path(), out, steps=STEPS, seed=0, timeout=900)
    assert code == 0, log.read_text()[-4000:]
    rows = learning.read_curve(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return rows


def test_zooms_learn_to_find_the_gt_box(curve):
    first = learning.window_mean(curve, "zoom_gt_hit", first=3)
    last = learning.window_mean(curve, "zoom_gt_hit", last=3)
    assert first < 0.55  # about chance (1 in 4) at the start
    assert last >= 0.7 and last - first >= 0.3, (first, last)


def test_consensus_monitor_is_logged_against_the_gt_box(curve):
    values = [r["cca_gt_iou"] for r in curve if not math.isnan(r["cca_gt_iou"])]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    assert learning.window_mean(curve, "cca_gt_iou", last=3) >= 0.6


def test_forks_come_from_qualified_calls_while_the_zoom_is_uncertain(curve):
    """The policy's entropy at the coordinates makes dH > threshold: forks at qualified calls, not
    the fallback (``fresh``: it places no fork); as the zoom is learned, dH falls."""
    assert all(r["fork_rate_fallback"] == 0.0 for r in curve)
    assert learning.window_mean(curve, "fork_rate_qualified", first=3) > 0.0
    assert learning.window_mean(curve, "qualified_points", first=3) > 0.0
    for r in curve:
        assert r["fork_rate_qualified"] + r["fresh_rate"] == pytest.approx(1.0)
    assert learning.window_mean(curve, "delta_h", last=3) < learning.window_mean(curve, "delta_h", first=3)
