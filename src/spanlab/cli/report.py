"""`spanlab report`: tables, heatmaps, curves and one HTML page from run directories."""

from __future__ import annotations

import typer

from spanlab.cli.app import app


@app.command("report")
def report_cmd(
    rundirs: list[str] = typer.Argument(..., help="Run directories written by `spanlab eval`."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output directory (default: FIRST_RUN/report)."),
    threshold: float = typer.Option(85.6, help="Score bar for the effective context length (RULER: 85.6)."),
    compare: bool = typer.Option(False, "--compare", help="Exactly two runs A B: add a paired comparison per "
                                 "(task, length, depth) on the samples both ran (matched by sample id): A−B, "
                                 "its 95% interval, exact McNemar / sign-test p; n.s. marks p >= 0.05."),
) -> None:
    """Write markdown/CSV/JSON tables, PNG figures and index.html for one or more runs.

    Every score carries its n and 95% interval (Wilson for right/wrong samples, bootstrap otherwise).
    """
    from spanlab.report import build_report
    from spanlab.report.load import load_runs, task_set_note

    if out is not None:
        from spanlab.cli._common import check_out_dir

        check_out_dir(out)
    note = task_set_note(load_runs(rundirs))
    if note:
        typer.echo(f"note: {note}", err=True)
    dest = build_report(rundirs, out, threshold, compare)
    if compare:
        typer.echo((dest / "compare.md").read_text(encoding="utf-8"))
    typer.echo(f"report written to {dest}/index.html")
