"""Metrics and aggregation, exactly as RULER defines them (no torch: runs anywhere).

RULER scores every synthetic task with `string_match_all` (recall of all gold strings, each
case-insensitively as a substring of the prediction) and QA with `string_match_part` (any gold
string). Scores are percentages rounded to two decimals, as in RULER's evaluate.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_NON_PRINTABLE = re.compile(r"[\x00-\x1f]")


def postprocess_pred(pred: str) -> str:
    """RULER's cleaning of a raw generation: strip, control characters become newlines, strip."""
    return _NON_PRINTABLE.sub("\n", pred.strip()).strip()


def _check(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} reference lists; they must pair up")
    if not preds:
        raise ValueError("no predictions to score")
    for r in refs:
        if isinstance(r, str) or len(r) == 0:
            raise ValueError("each reference must be a non-empty list of gold strings")


def sample_match_all(pred: str, ref: Sequence[str]) -> float:
    """Fraction (0-1) of gold strings found in one prediction."""
    p = pred.lower()
    return sum(1.0 if r.lower() in p else 0.0 for r in ref) / len(ref)


def sample_match_part(pred: str, ref: Sequence[str]) -> float:
    """1.0 if any gold string is found in one prediction, else 0.0."""
    p = pred.lower()
    return max(1.0 if r.lower() in p else 0.0 for r in ref)


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    _check(preds, refs)
    return round(sum(sample_match_all(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    _check(preds, refs)
    return round(sum(sample_match_part(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


# RULER's metric per task family: QA is "any answer", everything else "all answers".
def metric_name(task: str) -> str:
    return "string_match_part" if task.startswith("qa") else "string_match_all"


def metric_for(task: str):
    return string_match_part if metric_name(task) == "string_match_part" else string_match_all


def sample_score(task: str, pred: str, ref: Sequence[str]) -> float:
    """Score of one sample in percent (0-100), after RULER's post-processing."""
    pred = postprocess_pred(pred)
    f = sample_match_part if metric_name(task) == "string_match_part" else sample_match_all
    return 100.0 * f(pred, ref)


def task_score(task: str, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """RULER's score for one task over all its samples."""
    return metric_for(task)([postprocess_pred(p) for p in preds], refs)


# The Expansion Span paper's six groups over RULER's eleven synthetic tasks (QA excluded).
GROUPS: dict[str, tuple[str, ...]] = {
    "NIAH-S": ("niah_single_1", "niah_single_2", "niah_single_3"),
    "NIAH-M": ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3"),
    "NIAH-M-QV": ("niah_multiquery", "niah_multivalue"),
    "VT": ("vt",),
    "CF-WE": ("cwe", "fwe"),
}


def group_scores(per_task: Mapping[str, float], groups: Mapping[str, Iterable[str]] = GROUPS) -> dict[str, float]:
    """Mean score of each group over the tasks present, plus `Average`: the mean over every task of
    the groups (the paper's "average of all eleven tasks"), not the mean of the group means, which
    would weigh VT alone as much as the three NIAH-S tasks together.

    A group none of whose tasks were run is left out rather than counted as zero.
    """
    out: dict[str, float] = {}
    members_run: list[float] = []
    for name, members in groups.items():
        vals = [per_task[t] for t in members if t in per_task]
        if vals:
            out[name] = round(sum(vals) / len(vals), 2)
            members_run += vals
    if out:
        out["Average"] = round(sum(members_run) / len(members_run), 2)
    return out


# ---------------------------------------------------------------------------------------------
# Uncertainty. A cell of 10 samples moves 10 points per sample, so every number a report prints
# carries its n and a 95 % interval, and a comparison of two runs on the same samples is paired.
# numpy is imported lazily so that the metrics above stay importable with the standard library.

_N_BOOT = 2000


def _z(confidence: float) -> float:
    from statistics import NormalDist

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (0-1).

    Chosen over the normal approximation because RULER cells sit at 0 % and 100 % so often: there
    the normal interval collapses to a point, Wilson's does not (0/10 -> [0, 0.278]).
    """
    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n, got {successes} of {n}")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    # Clamp the float noise at the ends (0/n must give exactly 0).
    return max(0.0, centre - half) if successes else 0.0, min(1.0, centre + half) if successes < n else 1.0


def bootstrap_interval(values: Sequence[float], n_boot: int = _N_BOOT, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`; deterministic for a given seed."""
    return stratified_bootstrap_interval([values], n_boot=n_boot, seed=seed, confidence=confidence)


def stratified_bootstrap_interval(groups: Sequence[Sequence[float]], n_boot: int = _N_BOOT, seed: int = 0,
                                  confidence: float = 0.95,
                                  weights: Sequence[float] | None = None) -> tuple[float, float]:
    """Bootstrap interval of the mean of group means, resampling within each group.

    This is the interval of an average over tasks: each task keeps its own n, as in the point
    estimate, instead of pooling samples across tasks. `weights` (default: equal) weigh the
    group means, e.g. a mean of per-length averages over different numbers of tasks.
    """
    import numpy as np

    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every group needs at least one value")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    w = [1.0 / len(groups)] * len(groups) if weights is None else [float(x) for x in weights]
    if len(w) != len(groups) or abs(sum(w) - 1.0) > 1e-9:
        raise ValueError("weights must pair up with the groups and sum to 1")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for g, wg in zip(groups, w):
        # Resampling n values with replacement = drawing how often each distinct value comes up
        # (multinomial): the same distribution at n_boot x (distinct values) instead of n_boot x n
        # draws; scores take few distinct values, and a report bootstraps many averages.
        vals, counts = np.unique(np.asarray(g, dtype=float), return_counts=True)
        draws = rng.multinomial(len(g), counts / len(g), size=n_boot)
        total += wg * (draws @ vals) / len(g)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(total, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _is_binary(values: Iterable[float]) -> bool:
    return all(v in (0.0, 100.0) for v in values)


@dataclass(frozen=True)
class Score:
    """A score in percent with its sample count and 95 % interval.

    `method` is `wilson` (every per-sample score 0 or 100: a proportion) or `bootstrap` (partial
    credit, e.g. string_match_all over several answers, or an average over tasks of unequal n).
    """

    mean: float
    n: int
    lo: float
    hi: float
    method: str

    @classmethod
    def of(cls, per_sample: Sequence[float], mean: float | None = None, confidence: float = 0.95,
           seed: int = 0) -> Score:
        """The score of one cell from its per-sample scores (0-100).

        `mean` overrides the point estimate (to keep RULER's rounding of `task_score` exactly).
        """
        return cls.of_groups([per_sample], mean=mean, confidence=confidence, seed=seed)

    @classmethod
    def of_groups(cls, groups: Sequence[Sequence[float]], mean: float | None = None, confidence: float = 0.95,
                  seed: int = 0, weights: Sequence[float] | None = None) -> Score:
        """The (weighted) mean over groups (tasks, formats) of their mean scores, with its interval."""
        if any(len(g) == 0 for g in groups) or not groups:
            raise ValueError("no samples to score (every group needs one)")
        groups = [list(g) for g in groups]
        n = sum(len(g) for g in groups)
        w = [1.0 / len(groups)] * len(groups) if weights is None else list(weights)
        if mean is None:
            mean = round(sum(wg * sum(g) / len(g) for g, wg in zip(groups, w)), 2)
        equal = len({len(g) for g in groups}) == 1 and max(w) - min(w) < 1e-12
        if equal and all(_is_binary(g) for g in groups):
            # Equal n per group: the mean of group proportions is the pooled proportion. Wilson on
            # the pool ignores the stratification, which only makes it slightly conservative.
            k = round(sum(sum(g) for g in groups) / 100)
            lo, hi = wilson_interval(k, n, confidence)
            return cls(mean, n, round(100 * lo, 2), round(100 * hi, 2), "wilson")
        lo, hi = stratified_bootstrap_interval(groups, seed=seed, confidence=confidence, weights=w)
        return cls(mean, n, round(lo, 2), round(hi, 2), "bootstrap")

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def to_json(self) -> dict[str, float | int | str]:
        return {"mean": self.mean, "n": self.n, "lo": self.lo, "hi": self.hi, "method": self.method}

    def __str__(self) -> str:
        return f"{self.mean:.2f} [{self.lo:.1f}, {self.hi:.1f}] n={self.n}"


def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (twice the smaller tail, capped at 1)."""
    from math import comb

    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedResult:
    """A − B on the same samples: the mean difference (points), its 95 % interval and p-value."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float
    p_value: float
    method: str  # mcnemar-exact (0/100 outcomes) | sign-test (graded)
    a_only: int  # samples A gets right (or better) and B does not
    b_only: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def paired_test(a: Sequence[float], b: Sequence[float], n_boot: int = _N_BOOT, seed: int = 0,
                confidence: float = 0.95) -> PairedResult:
    """Paired comparison of per-sample scores (0-100) of two runs on the same samples, in order.

    Binary outcomes: exact McNemar test, i.e. a binomial test on the discordant pairs. Graded
    outcomes: the exact sign test on the pairs that differ (McNemar is its binary case). The
    interval of the difference is a paired bootstrap (resampling pairs) either way.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired samples must pair up: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no paired samples")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = x - y
    a_only, b_only = int((d > 0).sum()), int((d < 0).sum())
    p = _binom_two_sided(min(a_only, b_only), a_only + b_only)
    rng = np.random.default_rng(seed)
    vals, counts = np.unique(d, return_counts=True)  # pairs resampled as in the interval above
    boot = (rng.multinomial(len(d), counts / len(d), size=n_boot) @ vals) / len(d)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    method = "mcnemar-exact" if _is_binary(a) and _is_binary(b) else "sign-test"
    return PairedResult(len(d), round(float(x.mean()), 2), round(float(y.mean()), 2), round(float(d.mean()), 2),
                        round(float(lo), 2), round(float(hi), 2), p, method, a_only, b_only)
