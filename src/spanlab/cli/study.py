"""`spanlab study`: run every step a study config names (train -> eval -> finetune -> eval -> report)."""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.cli.app import app


@app.command("study")
def study_cmd(
    config: str = typer.Argument(..., help="study YAML, or a config name: one shipped with spanlab (demo, huang2024-replicate, expansion-span-replicate) or under ./configs/ (huang2024-mini, ablation-chunk, ...)"),
    out: Path | None = typer.Option(None, help="study directory (default: the config's `out`, else runs/study-NAME)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N (overrides the config)"),
    only: str | None = typer.Option(None, help="comma-separated step kinds or ids to run, e.g. train,eval"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the steps and whether they are done, run nothing"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run a controlled study; re-running skips finished steps, so a killed study resumes."""
    from rich.console import Console

    from spanlab.study import Study, load_study

    console = Console(emoji=False, markup=False)
    cfg = load_study(config, device=device)
    study = Study(cfg, out=out, progress=progress, log=lambda m: console.print(m, markup=False))
    if dry_run:
        done = study.done_steps()
        for i, s in enumerate(study.plan(), 1):
            console.print(f"{i:3d}. {s.id:40s} {'done' if s.id in done else 'todo'}", markup=False)
        return
    res = study.run(only=[x.strip() for x in only.split(",") if x.strip()] if only else None)
    report = Path(res["report"])
    console.print(f"\nstudy {cfg.name} finished in {res['wall_s']:.1f}s; report: {report}", markup=False)
    summary = report / "summary.md"
    for name in ("effective_length.md", "summary.md", "index.html"):
        if (report / name).exists():
            console.print(f"  {report / name}", markup=False)
    for png in sorted(report.glob("*.png")):
        console.print(f"  {png}", markup=False)
    eff = report / "effective_length.md"
    if eff.exists():
        console.print("\n" + eff.read_text(encoding="utf-8"), markup=False)
    elif summary.exists():
        console.print("\n" + summary.read_text(encoding="utf-8")[:4000], markup=False)
