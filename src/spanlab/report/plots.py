"""Figures: depth × length heatmaps per run and NIAH task, accuracy-vs-length curves across runs.

Curves carry 95 % error bars (the intervals of the tables) and say their n; heatmaps print n in
each cell when the cells' n differ, and in the title when they do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from spanlab.report.figures import pyplot, save
from spanlab.report.load import Run, base_label, swept_depth
from spanlab.report.tables import _slug, cells, grid, length_records, mean_score
from spanlab.scoring import Score
from spanlab.units import format_length


def _n_label(ns: Sequence[int]) -> str:
    lo, hi = min(ns), max(ns)
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def depth_heatmaps(runs: Sequence[Run], out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    for run in runs:
        recs = [r for r in run.records if swept_depth(r) is not None]
        for label in sorted({base_label(r) for r in recs}):
            g = grid([r for r in recs if base_label(r) == label], swept_depth, lambda r: r["length"])
            depths = sorted(g)
            lengths = sorted({ln for cols in g.values() for ln in cols})
            if len(depths) < 2:
                continue
            cell: list[list[Score | None]] = [[g[d].get(ln) for ln in lengths] for d in depths]
            data = [[float("nan") if s is None else s.mean for s in row] for row in cell]
            ns = [s.n for row in cell for s in row if s is not None]
            same_n = len(set(ns)) == 1
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths) * (1 if same_n else 1.4)))
            im = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
            ax.set_xticks(range(len(lengths)), [format_length(x) for x in lengths])
            ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("needle depth (%)")
            ax.set_title(f"{run.name}: {label}" + (f" ({_n_label(ns)} per cell)" if same_n else ""), fontsize=9)
            for i, row in enumerate(cell):
                for j, s in enumerate(row):
                    if s is not None and not math.isnan(s.mean):
                        text = f"{s.mean:.0f}" if same_n else f"{s.mean:.0f}\nn={s.n}"
                        ax.text(j, i, text, ha="center", va="center", fontsize=7 if same_n else 6)
            fig.colorbar(im, ax=ax, fraction=0.05)
            paths.append(save(fig, out / f"heatmap_{_slug(run.name)}_{_slug(label)}.png", dpi=110))
    return paths


def curve_points(run: Run, label: str) -> dict[int, Score]:
    """The points of one curve: a task's score per length, or for `Average` the mean over tasks."""
    c = cells(length_records(run), base_label, lambda r: r["length"])
    if label == "Average":
        lengths = sorted({ln for cols in c.values() for ln in cols})
        return {ln: s for ln in lengths if (s := mean_score([c[t][ln] for t in c if ln in c[t]])) is not None}
    if label not in c:
        return {}
    return {ln: mean_score([recs]) for ln, recs in sorted(c[label].items())}  # type: ignore[misc]


def length_curves(runs: Sequence[Run], out: Path) -> list[Path]:
    """One figure per task plus one for the average: accuracy vs length, a line per run, with
    95 % error bars and n in the legend."""
    plt = pyplot()
    labels = sorted({base_label(r) for run in runs for r in length_records(run)})
    paths = []
    for label in ["Average", *labels]:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for run in runs:
            pts = curve_points(run, label)
            if not pts:
                continue
            lengths = sorted(pts)
            ys = [pts[ln].mean for ln in lengths]
            err = [[max(0.0, pts[ln].mean - pts[ln].lo) for ln in lengths],
                   [max(0.0, pts[ln].hi - pts[ln].mean) for ln in lengths]]
            ax.errorbar(lengths, ys, yerr=err, marker="o", capsize=3,
                        label=f"{run.name} ({_n_label([pts[ln].n for ln in lengths])})")
            if run.train_length:
                ax.axvline(run.train_length, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        shown = sorted({ln for run in runs for ln in curve_points(run, label)})
        if shown:  # the tested lengths, written as everywhere else (4096 -> 4K)
            ax.set_xticks(shown, [format_length(ln) for ln in shown])
            ax.minorticks_off()
        ax.set_ylim(-2, 102)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy (%), 95 % interval")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
        paths.append(save(fig, out / f"curve_{_slug(label)}.png", dpi=110))
    return paths
