"""Metrics and aggregation, exactly as RULER defines them (no torch: runs anywhere).

RULER scores every synthetic task with `string_match_all` (recall of all gold strings, each
case-insensitively as a substring of the prediction) and QA with `string_match_part` (any gold
string). Scores are percentages rounded to two decimals, as in RULER's evaluate.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

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
    """Mean score of each group over the tasks present, plus `Average` (mean of the groups present).

    A group none of whose tasks were run is left out rather than counted as zero.
    """
    out: dict[str, float] = {}
    for name, members in groups.items():
        vals = [per_task[t] for t in members if t in per_task]
        if vals:
            out[name] = round(sum(vals) / len(vals), 2)
    if out:
        out["Average"] = round(sum(out.values()) / len(out), 2)
    return out

