"""Figures: depth × length heatmaps per run and NIAH task, accuracy-vs-length curves across runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from spanlab.report.load import Run, base_label, swept_depth
from spanlab.report.tables import _slug, grid, length_records


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (CI, GPU boxes)
    import matplotlib.pyplot as plt

    return plt


def depth_heatmaps(runs: Sequence[Run], out: Path) -> list[Path]:
    plt = _plt()
    paths = []
    for run in runs:
        recs = [r for r in run.records if swept_depth(r) is not None]
        for label in sorted({base_label(r) for r in recs}):
            g = grid([r for r in recs if base_label(r) == label], lambda r: swept_depth(r), lambda r: r["length"])
            depths = sorted(g)
            lengths = sorted({ln for cols in g.values() for ln in cols})
            if len(depths) < 2:
                continue
            data = [[g[d].get(ln, float("nan")) for ln in lengths] for d in depths]
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
            im = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
            ax.set_xticks(range(len(lengths)), [str(x) for x in lengths])
            ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("needle depth (%)")
            ax.set_title(f"{run.name}: {label}", fontsize=9)
            for i, row in enumerate(data):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.05)
            fig.tight_layout()
            p = out / f"heatmap_{_slug(run.name)}_{_slug(label)}.png"
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths.append(p)
    return paths


def length_curves(runs: Sequence[Run], out: Path) -> list[Path]:
    """One figure per task plus one for the average: accuracy vs length, a line per run."""
    plt = _plt()
    per_run = {run.name: grid(length_records(run), base_label, lambda r: r["length"]) for run in runs}
    labels = sorted({t for g in per_run.values() for t in g})
    paths = []
    for label in ["Average", *labels]:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for run in runs:
            g = per_run[run.name]
            if label == "Average":
                lengths = sorted({ln for cols in g.values() for ln in cols})
                ys = [sum(g[t][ln] for t in g if ln in g[t]) / sum(1 for t in g if ln in g[t]) for ln in lengths]
            elif label in g:
                lengths = sorted(g[label])
                ys = [g[label][ln] for ln in lengths]
            else:
                continue
            ax.plot(lengths, ys, marker="o", label=run.name)
            if run.train_length:
                ax.axvline(run.train_length, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / f"curve_{_slug(label)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
