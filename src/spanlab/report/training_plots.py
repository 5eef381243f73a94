"""Training figures: loss curves of `spanlab train` runs (one per run, or a study's overlay)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_loss_curves(logs: dict[str, Path], out_png: Path, *, title: str = "pre-training loss") -> Path:
    """One loss-vs-tokens line per run, read from each run's `train_log.jsonl`."""
    from spanlab.report.figures import pyplot, save

    fig, ax = pyplot().subplots(figsize=(6, 4))
    for name, log in logs.items():
        recs = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
        if recs:
            ax.plot([r["tokens"] for r in recs], [r["loss"] for r in recs], label=name, linewidth=1.2)
    ax.set_xlabel("tokens")
    ax.set_ylabel("train loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if logs:
        ax.legend()
    return save(fig, out_png)
