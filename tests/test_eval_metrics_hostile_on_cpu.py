"""Evaluation metrics read records back from files written by anyone (issue 10): malformed boxes
are skipped, never an exception; the lenient accuracy is an extra column only."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from medvr_verl.eval.metrics import benchmark_metrics, grounding_metrics, image_boxes


def test_image_boxes_skips_malformed_entries():
    tagged = [
        [0, 1, 2, 3, 4],
        [0, math.nan, 0, 5, 5],
        [None, 0, 0, 5, 5],
        [-1, 0, 0, 5, 5],
        ["0", 0, 0, 5, 5],
        [0, 0, 0, 5],
        "x",
        [1, 0, 0, 5, 5],
        [0.0, 5, 5, 0, 0],  # integral float index, reversed corners
    ]
    assert image_boxes(tagged) == [(1.0, 2.0, 3.0, 4.0), (0.0, 0.0, 5.0, 5.0)]
    assert image_boxes("junk") == [] and image_boxes(None) == []


def _record(**kw):
    base = {"uid": "u", "acc": 1.0, "format": 1.0, "question_type": "open", "pred": "left lung", "gt": "left lung"}
    return {**base, **kw}


def test_lenient_column_is_extra():
    records = [_record(), _record(uid="v", pred="mass in left lung", acc=0.0)]
    m = benchmark_metrics(records)
    assert m["acc"] == 0.5 and m["acc_lenient"] == 1.0


_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 50), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3)
)
_any = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=6), max_leaves=25)


_RECORD = st.fixed_dictionaries({"zoom_boxes": _any, "consensus": _any, "gt_boxes": _any, "uid": _leaf})


@settings(deadline=None, max_examples=200)
@given(st.lists(_RECORD, max_size=5))
def test_grounding_metrics_never_raise(records):
    out = grounding_metrics(records)
    assert out is None or out["n_with_gt"] >= 1
