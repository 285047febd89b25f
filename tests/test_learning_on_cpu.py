"""Training through veRL's trainer improves the policy: a seed-fixed learning run on CPU. SLOW (3-12 min).

One real ``python -m verl.trainer.main_ppo`` run (MedVR recipe, ``+backend=cpu``, V1 trainer, EVR,
``medvr_cca`` with consensus tool reward, the paper's ``quorum: correct`` and ``evr.fallback:
fresh`` set explicitly) on the synthetic stripes task with the ``constrained`` policy, at
:mod:`medvr_verl.cpu.learning`'s settings (those of ``benchmarks/bench_learning.py``). The model
itself chooses the zoom cell and the answer; the answer is readable only in the crop of the cell
the gt box marks.

The model is the tiny reader (:mod:`medvr_verl.testing.tiny_reader`): the random-weight tiny
Qwen2.5-VL taught, supervised and outside the run, to read the lines in a crop of their cell and to
favour no letter on a crop of another cell. Where to zoom it has not learned: its zoom is the random
model's (on the gt cell about 1 time in 4). As MedVR starts from a VLM that perceives, the run must
teach it where to look. (From the random model itself the rise starts anywhere from step
15 to past step 30: README, "Does it learn?"; too late and too variable for CI.)

A run is seed-fixed but not bit-reproducible (requests reach the rollout server in the order Ray
delivers them), so it is given up to :data:`MAX_STEPS` steps and stopped as soon as the last
:data:`LAST` steps show the rise (:func:`_rose`, read from veRL's own metrics file after each step).

Asserted, last :data:`LAST` steps against step 1 (the rollouts of the untrained reader; a baseline
over more steps would include learning, and a run whose zoom jumps in two steps could then never
show the rise against it):

* the zooms' share on the gt box rises from chance (0.25) to well above it, accuracy with it, and the
  reward. A sign error in the advantage, a ``response_mask`` that trains the template, a fork
  credited to the wrong row or a consensus that rewards the wrong region each keep the zoom off
  the lines;
* the consensus monitor logs its IoU with the gt box per step, and the consensus finds the box;
* dH at the zoom calls (the entropy of the model's own coordinate decision) falls as the zoom is
  learned, and EVR forks at qualified calls only (``fresh`` places no fallback fork).

About 14 s a step plus ~1.5 minutes of start-up (and half a minute to build the reader once) on
2 cores.
"""

from __future__ import annotations

import math

import pytest

from medvr_verl.cpu import learning

pytestmark = pytest.mark.vl_stack

MAX_STEPS = 40
SEED = 0
FIRST, LAST = 1, 5
#: over the last LAST steps (160 rollouts). At the start: zoom share ~0.25, accuracy ~0.6
MIN_ACC = 0.8
MIN_ZOOM_GT_HIT = 0.6
#: last LAST steps minus step 1
MIN_REWARD_RISE = 0.3
MIN_ACC_RISE = 0.1
MIN_ZOOM_GT_HIT_RISE = 0.25


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    from medvr_verl.testing.tiny_reader import tiny_reader_path

    out = tmp_path_factory.mktemp("learning")
    code, seconds, log = learning.run(
        tiny_reader_path(), out, steps=MAX_STEPS, seed=SEED, timeout=1800, stop_when=_rose
    )
    rows = learning.read_curve(out)
    assert code in (None, 0), log.read_text()[-4000:]  # None: stopped once it rose
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    for name in ("reward", "acc", "zoom_gt_hit", "cca_gt_iou", "delta_h"):  # shown with -s
        print(name, " ".join(f"{r[name]:.2f}" for r in rows))
    ended = "stopped: it rose" if code is None else "ran to the end"
    print(f"learning run: {len(rows)} steps, {seconds:.0f} s, {ended}")
    return rows


def _rose(rows) -> bool:
    """The rise: accuracy, zoom share and reward over the last LAST steps at the thresholds."""
    if len(rows) < 1 + LAST:
        return False
    acc, hit = _last(rows, "acc"), _last(rows, "zoom_gt_hit")
    return (
        acc >= MIN_ACC
        and hit >= MIN_ZOOM_GT_HIT
        and acc - _first(rows, "acc") >= MIN_ACC_RISE
        and hit - _first(rows, "zoom_gt_hit") >= MIN_ZOOM_GT_HIT_RISE
        and _last(rows, "reward") - _first(rows, "reward") >= MIN_REWARD_RISE
    )


def _first(curve, name):
    return learning.window_mean(curve, name, first=FIRST)


def _last(curve, name):
    return learning.window_mean(curve, name, last=LAST)


def test_accuracy_the_zooms_and_the_reward_rise_from_chance(curve):
    """Within MAX_STEPS: accuracy, the share of zooms with IoU > eta against the gt box (the model's
    own coordinate choice) and the reward, last LAST steps against step 1 and chance."""
    windows = {name: (_first(curve, name), _last(curve, name)) for name in ("acc", "zoom_gt_hit", "reward")}
    assert _rose(curve), f"no rise in {len(curve)} steps (step 1 -> last {LAST} steps): {windows}"


def test_consensus_monitor_is_logged_and_finds_the_gt_box(curve):
    values = [r["cca_gt_iou"] for r in curve if not math.isnan(r["cca_gt_iou"])]
    assert len(values) >= len(curve) // 2 and all(0.0 <= v <= 1.0 for v in values)
    assert all(0.0 <= r["zoom_gt_hit"] <= 1.0 and r["zoom_gt_iou"] == r["zoom_gt_hit"] for r in curve)
    assert _last(curve, "cca_gt_iou") > 0.5, _last(curve, "cca_gt_iou")


def test_forks_come_from_qualified_calls_and_fade_as_the_zoom_is_learned(curve):
    """The policy's entropy at the coordinates makes dH > threshold while it is unsure where to
    look: forks at qualified calls, not the fallback (``fresh``: it places no fork). As the zoom is
    learned, dH falls."""
    assert all(r["fork_rate_fallback"] == 0.0 for r in curve)
    assert _first(curve, "fork_rate_qualified") > 0.0 and _first(curve, "qualified_points") > 0.0
    for r in curve:
        assert r["fork_rate_qualified"] + r["fresh_rate"] == pytest.approx(1.0)
    first, last = _first(curve, "delta_h"), _last(curve, "delta_h")
    assert first > 0.15 and last < first, (first, last)  # the coordinates start as a real decision
