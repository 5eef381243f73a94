"""The HTML report: score cells show n and an error bar; headless Chromium renders its tables and images.

The screenshot test needs Debian's `chromium` (CI installs it and sets SPANLAB_REQUIRE_CHROMIUM=1,
so there it fails instead of skipping when the browser is missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from spanlab.report.html import render_html, table_html
from spanlab.report.tables import Table


@dataclass(frozen=True)
class FakeScore:
    """The shape of spanlab.scoring.Score that the page relies on."""

    mean: float
    n: int
    lo: float
    hi: float
    method: str = "wilson"

    def __str__(self) -> str:
        return f"{self.mean:.2f} [{self.lo:.1f}, {self.hi:.1f}] n={self.n}"


SCORES = Table("tasks_demo", "Tasks x length", ["task", "1024", "2048"],
               [["niah_single_2", FakeScore(75.0, 4, 30.1, 95.4), FakeScore(25.0, 8, 7.1, 59.1)],
                ["Average", FakeScore(50.0, 12, 25.4, 74.6), None]])


def test_score_cells_carry_value_interval_error_bar_and_n():
    page = table_html(SCORES)
    cells = re.findall(r"<td class='score'[^>]*>.*?</td>", page)
    assert len(cells) == 3
    assert "data-n='4'" in cells[0] and "n=4" in cells[0] and "[30.1, 95.4]" in cells[0] and ">75.00<span class='bar'" in cells[0]
    # the bar spans the interval on the 0-100 scale and marks the mean
    assert "left:30.10%;width:65.30%" in cells[0] and "<b style='left:75.00%'>" in cells[0]
    assert "n=12" in cells[2]
    assert "<td>–</td>" in page  # an empty cell stays as the tables print it
    plain = table_html(Table("t", "plain", ["a", "b"], [["x", 1.5]]))
    assert "<td>1.50</td>" in plain and "class='score'" not in plain


def _write_run(d: Path) -> None:
    from spanlab.eval.journal import Journal
    from spanlab.eval.manifest import build_manifest, write_manifest

    write_manifest(d, build_manifest(model={"model": d.name}, generation={}, tasks={}, lengths=[1024, 2048],
                                     extra={"train_length": 1024}))
    recs = []
    for depth in (0.0, 50.0, 100.0):
        for length in (1024, 2048):
            for i in range(4):
                ok = length == 1024 or i < 2
                recs.append({"id": f"{depth}{length}{i}", "task": "niah_single_2", "label": f"Essay-Word-Num@depth={depth:g}",
                             "length": length, "depth": depth, "prediction": "7421" if ok else "no", "gold": ["7421"],
                             "score": 100.0 if ok else 0.0})
    with Journal(d / "results.jsonl") as j:
        j.append(recs)


# Runs after load: counts what was laid out and writes it into the DOM that --dump-dom prints.
_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width]);
  const tables = [...document.querySelectorAll('table')].map(t => [t.dataset.name || '', t.tBodies[0].rows.length,
                  t.getBoundingClientRect().height]);
  const bars = [...document.querySelectorAll('.bar i')].map(b => b.getBoundingClientRect().width);
  const ns = [...document.querySelectorAll('td.score .n')].map(s => s.textContent);
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({imgs, tables, bars, ns}); document.body.appendChild(out);
});</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("SPANLAB_REQUIRE_CHROMIUM") == "1":
            pytest.fail("SPANLAB_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return exe


def _render(exe: str, page: Path, tmp: Path) -> tuple[dict, Path]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}",
             "--virtual-time-budget=10000", "--window-size=1200,1600"]
    probed = page.with_name(page.stem + "_probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([exe, *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom.stdout, re.S)
    assert m, f"the page did not finish loading in Chromium: {dom.stderr[-2000:]}"
    shot = Path(os.environ.get("SPANLAB_SCREENSHOT_DIR", tmp)) / f"{page.stem}.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    import html as _html

    return json.loads(_html.unescape(m.group(1))), shot


def _not_blank(png: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    px = mpimg.imread(png)[..., :3]
    assert px.shape[0] >= 1000 and px.shape[1] >= 1000
    dark = float((px.mean(axis=-1) < 0.5).mean())
    assert 0.002 < dark < 0.5, f"screenshot looks blank or broken (dark fraction {dark:.4f})"
    assert np.unique(px.reshape(-1, 3), axis=0).shape[0] > 20  # text, figure colours, bars: not one flat colour


@pytest.mark.slow
def test_headless_chromium_renders_the_reports_tables_images_and_error_bars(tmp_path):
    exe = _chromium()
    from spanlab.report import build_report

    _write_run(tmp_path / "run")
    dest = build_report([str(tmp_path / "run")], str(tmp_path / "rep"))
    index = dest / "index.html"
    probe, shot = _render(exe, index, tmp_path)
    expected_tables = json.loads((dest / "tables.json").read_text())
    assert len(probe["tables"]) == len(expected_tables) >= 2
    for (_name, rows, height), want in zip(probe["tables"], expected_tables):
        assert rows == len(want["rows"]) and height > 0
    n_figures = len(list(dest.glob("*.png")))
    assert n_figures >= 2 and len(probe["imgs"]) == n_figures
    assert all(complete and natural > 0 and shown > 0 for complete, natural, shown in probe["imgs"]), probe["imgs"]
    # Score cells (when the tables carry intervals) show n and a visible bar each.
    assert len(probe["bars"]) == len(probe["ns"]) and all(w > 0 for w in probe["bars"])
    _not_blank(shot)

    # A page with interval cells: every bar is laid out with a width, every cell says its n.
    figs = sorted(dest.glob("*.png"))[:1]
    page = tmp_path / "scores.html"
    page.write_text(render_html("scores", [SCORES], figs, ["demo: 24 samples"]), encoding="utf-8")
    probe, shot = _render(exe, page, tmp_path)
    assert probe["ns"] == ["n=4", "n=8", "n=12"]
    assert len(probe["bars"]) == 3 and all(w > 0 for w in probe["bars"])
    assert probe["imgs"] and probe["imgs"][0][1] > 0
    _not_blank(shot)
