"""Fig. 4-style figures of an attention profile (`spanlab profile`, a study's `profile` step).

The rows are `spanlab.attention.profile.ProfileRow`s; only their fields are read here, so the
report layer does not import the attention package (nor torch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def plot_profile_rows(rows: Sequence[Any], out_dir: Path, stem: str = "profile",
                      display: Callable[[str], str] = str) -> list[Path]:
    """Runtime vs length, peak memory vs length, runtime vs memory: `<stem>_{runtime,memory,
    runtime_vs_memory}.png` in `out_dir`; returns the paths. `display` turns a row label into its
    legend text (the profile passes the attention registry's display names; report/ cannot
    import attention)."""
    from spanlab.report.figures import pyplot, save

    plt = pyplot()
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.ms)]
    if len({r.mode for r in ok}) > 1:  # op and layer rows in one CSV: keep their curves apart
        ok = [dataclasses.replace(r, label=f"{r.label} ({r.mode})") for r in ok]
    labels = list(dict.fromkeys(r.label for r in ok))
    paths = []
    specs = [
        ("runtime", "length", "ms", "sequence length (tokens)", "fwd+bwd time (ms)"),
        ("memory", "length", "peak_mem_gib", "sequence length (tokens)", "peak memory (GiB)"),
        ("runtime_vs_memory", "peak_mem_gib", "ms", "peak memory (GiB)", "fwd+bwd time (ms)"),
    ]
    for name, xs, ys, xl, yl in specs:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for lab in labels:
            pts = sorted((getattr(r, xs), getattr(r, ys)) for r in ok if r.label == lab)
            pts = [p for p in pts if not (math.isnan(p[0]) or math.isnan(p[1]))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=display(lab))
        if not ax.get_lines():  # nothing measured (peak memory on CPU): no empty figure
            plt.close(fig)
            continue
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if xs == "length":
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save(fig, out_dir / f"{stem}_{name}.png"))
    return paths
