"""Intervals and paired tests of spanlab.scoring, against values worked out by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spanlab.scoring import (
    GROUPS,
    Score,
    bootstrap_interval,
    group_scores,
    paired_test,
    stratified_bootstrap_interval,
    wilson_interval,
)


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    # The ends do not collapse to a point as the normal approximation does.
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    lo, hi = wilson_interval(5, 10, confidence=0.99)
    assert (round(lo, 3), round(hi, 3)) == (0.184, 0.816)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    vals = [0, 50, 50, 100, 100, 100, 33.3, 66.7, 0, 100]
    assert bootstrap_interval(vals) == bootstrap_interval(vals)  # same seed, same interval
    lo, hi = bootstrap_interval(vals)
    mean = sum(vals) / len(vals)
    assert lo < mean < hi and 15 < hi - lo < 50
    assert bootstrap_interval(vals, seed=1) != (lo, hi)
    # More samples of the same distribution: a narrower interval.
    lo4, hi4 = bootstrap_interval(vals * 4)
    assert hi4 - lo4 < (hi - lo) * 0.7


def test_score_picks_wilson_for_binary_and_bootstrap_for_partial():
    s = Score.of([100.0] * 8 + [0.0] * 2)
    assert (s.mean, s.n, s.method, s.lo, s.hi) == (80.0, 10, "wilson", 49.02, 94.33)
    assert str(s) == "80.00 [49.0, 94.3] n=10"
    p = Score.of([100.0, 50.0, 100.0, 75.0])  # multi-answer partial credit
    assert p.method == "bootstrap" and p.n == 4 and p.lo <= 81.25 <= p.hi and p.hi <= 100
    assert Score.of([100.0, 0.0], mean=50.0).mean == 50.0
    # An average over tasks of equal n, all binary = the pooled proportion.
    avg = Score.of_groups([[100.0] * 10, [0.0] * 10])
    assert (avg.mean, avg.n, avg.method) == (50.0, 20, "wilson")
    # Unequal n: the mean of task means (not the pooled mean), bootstrapped within each task.
    uneq = Score.of_groups([[100.0] * 2, [0.0] * 8])
    assert uneq.mean == 50.0 and uneq.method == "bootstrap" and uneq.n == 10
    assert stratified_bootstrap_interval([[100.0] * 2, [0.0] * 8]) == (50.0, 50.0)  # no spread inside tasks


def test_exact_mcnemar_known_value():
    # b = 8 pairs only A solves, c = 1 only B solves, 11 concordant: p = 2 * P(X <= 1 | 9, 1/2).
    a = [100.0] * 8 + [0.0] + [100.0] * 6 + [0.0] * 5
    b = [0.0] * 8 + [100.0] + [100.0] * 6 + [0.0] * 5
    r = paired_test(a, b)
    assert r.method == "mcnemar-exact" and (r.a_only, r.b_only, r.n) == (8, 1, 20)
    assert round(r.p_value, 4) == 0.0391 and r.significant
    assert r.diff == 35.0 and r.lo < 35.0 < r.hi
    same = paired_test([100.0, 0.0, 100.0], [100.0, 0.0, 100.0])
    assert same.p_value == 1.0 and not same.significant and (same.lo, same.hi) == (0.0, 0.0)


def test_sign_test_for_graded_scores():
    a = [50.0, 100.0, 75.0, 100.0, 25.0, 100.0, 100.0]
    b = [25.0, 100.0, 50.0, 50.0, 0.0, 75.0, 100.0]
    r = paired_test(a, b)
    # 5 pairs favour A, none B: p = 2 / 2**5.
    assert r.method == "sign-test" and (r.a_only, r.b_only) == (5, 0) and r.p_value == pytest.approx(0.0625)
    assert not r.significant  # five wins out of five are still within noise at 5 %
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 2.0])


def test_group_average_is_the_mean_over_tasks_not_over_groups():
    per_task = {"niah_single_1": 100.0, "niah_single_2": 100.0, "niah_single_3": 100.0, "vt": 0.0}
    g = group_scores(per_task, GROUPS)
    assert g["NIAH-S"] == 100.0 and g["VT"] == 0.0
    assert g["Average"] == 75.0  # 3 of 4 tasks; the mean of the two groups would say 50


def test_scoring_does_not_import_torch_or_numpy_at_import():
    code = "import sys, spanlab.scoring; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
