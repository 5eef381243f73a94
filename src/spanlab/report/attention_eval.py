"""Expansion Span Fig. 11 as a table: each fine-tune scored with full attention and with an
efficient attention over the KV cache (`spanlab eval --attention`, a study's `eval_attention`),
on the same samples; per length the mean over tasks and the paired difference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spanlab.report.load import Run, base_label
from spanlab.report.tables import (
    Noted,
    PValue,
    Table,
    _avg_over_lengths,
    _unique,
    cells,
    length_records,
    mean_score,
    sample_scores,
)
from spanlab.scoring import paired_test


def attention_eval_table(pairs: Sequence[tuple[str, Run, Run, str]]) -> Table | None:
    """`pairs`: (fine-tune, its full-attention run, its run with attention `label`, label). The
    full-attention run is cut to the samples the other run has (same ids), so both rows score the
    same prompts; None when no pair shares a sample."""
    rows: list[list[Any]] = []
    lengths = sorted({r["length"] for _, _, own, _ in pairs for r in length_records(own)})
    for name, full, own, label in pairs:
        own_recs = _unique(length_records(own))
        by_id = {r["id"]: r for r in _unique(full.records) if r.get("id") is not None}
        matched = [r for r in own_recs if r.get("id") in by_id]
        if not matched:
            continue
        full_recs = [by_id[r["id"]] for r in matched]
        row_full: list[Any] = [name, "full"]
        row_own: list[Any] = [name, label]
        row_diff: list[Any] = [name, f"{label} − full"]
        for recs, row in ((full_recs, row_full), (matched, row_own)):
            c = cells(recs, base_label, lambda r: r["length"])
            for ln in lengths:
                row.append(mean_score([c[t][ln] for t in c if ln in c[t]]))
            row.append(_avg_over_lengths({ln: [c[t][ln] for t in c if ln in c[t]] for ln in lengths}))
        for ln in [*lengths, None]:
            pick = [i for i, r in enumerate(matched) if ln is None or r["length"] == ln]
            if not pick:
                row_diff.append(None)
                continue
            res = paired_test(sample_scores([matched[i] for i in pick]), sample_scores([full_recs[i] for i in pick]))
            row_diff.append(Noted(res.diff, f"p={PValue(res.p_value)}" + ("" if res.significant else ", n.s.")))
        rows += [row_full, row_own, row_diff]
    if not rows:
        return None
    notes = ["Expansion Span Fig. 11: fine-tuned with an efficient attention, evaluated with it over the KV cache "
             "(spanlab.models.variant_attention) or with full attention, on the same samples",
             "cells: mean over tasks [95 % interval] n = samples, Avg = mean over lengths; "
             "difference rows: paired per sample (exact McNemar / sign test; n.s. = p >= 0.05), all tasks pooled"]
    return Table("attention_eval", "Fine-tunes evaluated with their own attention vs full attention (Fig. 11)",
                 ["fine-tune", "evaluated with", *map(str, lengths), "Avg"], rows, notes)
