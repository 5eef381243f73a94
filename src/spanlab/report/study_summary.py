"""A study's `summary.md`: its steps with wall times, the perplexity table, the attention profile
table, the evaluation report and the list of figures (spanlab.study's `report` step writes it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spanlab.units import format_length


def perplexity_rows(ppl_dir: Path, display: Callable[[str], str] = str) -> dict[str, dict[int, float]]:
    """{model display name: {length: perplexity}} from the `ppl/<model>.jsonl` journals."""
    rows: dict[str, dict[int, float]] = {}
    if ppl_dir.is_dir():
        for p in sorted(ppl_dir.glob("*.jsonl")):
            for line in p.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    rows.setdefault(display(p.stem), {})[int(r["length"])] = float(r["ppl"])
    return rows


def perplexity_markdown(rows: Mapping[str, Mapping[int, float]], text: str = "essays") -> list[str]:
    lens = sorted({n for r in rows.values() for n in r})
    lines = [f"## Perplexity (held-out {text})", "", "| model | " + " | ".join(map(format_length, lens)) + " |",
             "|---|" + "---:|" * len(lens)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[n]:.2f}" if n in r else "" for n in lens) + " |")
    return lines


def text_use_markdown(steps: Mapping[str, Mapping[str, Any]], text: str = "essays") -> list[str]:
    """How many times each training step read its natural text (spanlab.mixture.text); [] if none says."""
    from spanlab.mixture.text import MAX_PASSES

    rows = [(k, v["result"]) for k, v in steps.items()
            if isinstance(v.get("result"), Mapping) and v["result"].get("text_passes") is not None]
    if not rows:
        return []
    lines = [f"## Training text ({text})", "", "| step | text tokens | passes over it |", "|---|---:|---:|"]
    over = [k for k, r in rows if float(r["text_passes"]) > MAX_PASSES]
    lines += [f"| {k} | {int(r['text_tokens']):,} | {float(r['text_passes']):.1f} |" for k, r in rows]
    if over:
        lines += ["", f"{len(over)} of {len(rows)} steps read their text more than {MAX_PASSES:g} times: those "
                  "models have memorised it, so their training loss says little about what they learned "
                  "(docs/finetune.md, 'How much text'; `spanlab study --corpus DIR` gives a study more text)."]
    return lines


def profile_markdown(rows: Sequence[Any]) -> list[str]:
    """Time / peak memory per variant and length of `spanlab.attention.profile.ProfileRow`s."""
    lens = sorted({r.length for r in rows})
    labels = list(dict.fromkeys(r.label for r in rows))
    cell = {(r.label, r.length): r for r in rows}
    dev = rows[0].device if rows else ""
    mode = rows[0].mode if rows else ""
    lines = [f"## Attention training step: time (ms) / peak memory (GiB), {mode} mode, {dev}", "",
             "| variant | " + " | ".join(map(format_length, lens)) + " |", "|---|" + "---:|" * len(lens)]
    for lab in labels:
        vals = []
        for n in lens:
            r = cell.get((lab, n))
            vals.append("" if r is None else "OOM" if r.status != "ok" else f"{r.ms:.2f} / {r.peak_mem_gib:.2f}")
        lines.append(f"| {lab} | " + " | ".join(vals) + " |")
    return lines


def write_study_summary(
    dest: Path,
    *,
    name: str,
    steps: Mapping[str, Mapping[str, Any]],
    ppl: Mapping[str, Mapping[int, float]],
    profile_rows: Sequence[Any] | None,
    profile_planned: bool,
    text: str = "essays",
) -> Path:
    """Write `dest/summary.md`. `profile_rows=None` means no profile CSV exists; with
    `profile_planned` the summary then says the (GPU) step has not run yet."""
    lines = [f"# Study `{name}`", ""]
    lines += ["| step | wall (s) |", "|---|---:|"]
    lines += [f"| {k} | {v.get('wall_s', 0):.1f} |" for k, v in steps.items()]
    use = text_use_markdown(steps, text)
    if use:
        lines += [""] + use
    if ppl:
        lines += [""] + perplexity_markdown(ppl, text)
    if profile_rows is not None:
        lines += [""] + profile_markdown(profile_rows)
    elif profile_planned:
        note = ("Not run: it needs a CUDA device (see the step log); resume the study on a GPU machine "
                "to add it.")
        lines += ["", "## Attention profile", "", note]
    report_md = dest / "report.md"
    if report_md.is_file():
        lines += ["", report_md.read_text(encoding="utf-8")]
    figs = sorted(p.name for p in dest.glob("*.png"))
    if figs:
        lines += ["", "## Figures", ""] + [f"- `{f}`" for f in figs]
    out = dest / "summary.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
