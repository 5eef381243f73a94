"""One self-contained HTML page: every table and every figure (inlined as base64 PNG).

Score cells that carry their sample count and 95 % interval (objects with `mean`, `n`, `lo`,
`hi`: `spanlab.scoring.Score`) are drawn as the value, an error bar on the 0–100 scale, the
interval and `n=`; so a reader sees at a glance which differences are within noise and how many
samples each point rests on. Every other cell prints as the table's own Markdown does.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spanlab.report.tables import Table

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.note{color:#666;font-size:90%}
img{max-width:100%;margin:4px}
td.score{white-space:nowrap}.ci,.n{color:#666;font-size:85%;margin-left:4px}
.bar{display:inline-block;position:relative;width:60px;height:8px;margin-left:6px;background:#eee;vertical-align:middle}
.bar i{position:absolute;top:2px;height:4px;background:#7aa6d8}
.bar b{position:absolute;top:0;width:2px;height:8px;margin-left:-1px;background:#1f4e8c}"""


def _is_score(v: Any) -> bool:
    return all(hasattr(v, a) for a in ("mean", "n", "lo", "hi")) and not isinstance(v, (int, float, str))


def _pct(x: float) -> float:
    return max(0.0, min(100.0, float(x)))


def _score_cell(v: Any) -> str:
    """Value, error bar (interval on 0–100), interval and n of one score."""
    if v.mean is None:
        return f"<td class='score' data-n='{int(v.n)}'>–<span class='n'>n={int(v.n)}</span></td>"
    lo, hi, mean = _pct(v.lo), _pct(v.hi), _pct(v.mean)
    bar = (f"<span class='bar' title='95% interval [{v.lo:.1f}, {v.hi:.1f}], n={int(v.n)}'>"
           f"<i style='left:{lo:.2f}%;width:{max(hi - lo, 0.5):.2f}%'></i><b style='left:{mean:.2f}%'></b></span>")
    return (f"<td class='score' data-n='{int(v.n)}' data-lo='{v.lo:.4g}' data-hi='{v.hi:.4g}'>{v.mean:.2f}{bar}"
            f"<span class='ci'>[{v.lo:.1f}, {v.hi:.1f}]</span><span class='n'>n={int(v.n)}</span></td>")


def table_html(t: Table) -> str:
    """A table as HTML, score cells with n and error bars (see module doc)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(_score_cell(v) if _is_score(v) else f"<td>{html.escape(t._cell(v))}</td>" for v in row) + "</tr>"
        for row in t.rows)
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in t.notes)
    return (f"<h3 id='{html.escape(t.name)}'>{html.escape(t.title)}</h3><table data-name='{html.escape(t.name)}'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}")


def render_html(title: str, tables: Sequence[Table], figures: Sequence[Path], runs_info: Sequence[str]) -> str:
    toc = "".join(f"<li><a href='#{html.escape(t.name)}'>{html.escape(t.title)}</a></li>" for t in tables)
    imgs = "".join(
        f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'/>"
        f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in figures)
    runs = "".join(f"<li>{html.escape(s)}</li>" for s in runs_info)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><h2>Runs</h2><ul>{runs}</ul>"
            f"<h2>Tables</h2><ul>{toc}</ul>{''.join(table_html(t) for t in tables)}<h2>Figures</h2>{imgs}</body></html>")
