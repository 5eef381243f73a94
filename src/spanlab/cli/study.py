"""`spanlab study`: run every step a study config names (train -> eval -> finetune -> eval -> report)."""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.cli._common import kernels_help
from spanlab.cli.app import app


@app.command("study")
def study_cmd(
    config: str = typer.Argument(..., help="study YAML, or the name of a study shipped with spanlab (demo, "
                                 "huang2024-mini, expansion-span-mini, huang2024-mini-gpu-quick, "
                                 "expansion-span-mini-gpu-quick, huang2024-replicate, expansion-span-replicate, "
                                 "ablation-chunk, ablation-blocks, ablation-span, ablation-lora-rank, "
                                 "ablation-profile); names work from any directory"),
    out: Path | None = typer.Option(None, help="study directory (default: the config's `out`, else runs/study-NAME)"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N (overrides the config)"),
    only: str | None = typer.Option(None, help="comma-separated step kinds or ids to run, e.g. train,eval"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the steps and whether they are done, run nothing"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    kernels: str | None = typer.Option(None, help=kernels_help() + " Over the config's `kernels:`."),
    corpus: Path | None = typer.Option(None, help="natural text for the study's fine-tuning, pre-training and "
                                       "perplexity instead of the vendored essays (~155K tokens): a folder "
                                       "with train/ and heldout/ (or validation/, test/), or of .txt/.jsonl/"
                                       ".parquet files split by file, every 5th held out (docs/zoo.md)"),
) -> None:
    """Run a controlled study; re-running skips finished steps, so a killed study resumes."""
    from rich.console import Console

    from spanlab import kernels as kernel_settings
    from spanlab.cli._common import check_out_dir
    from spanlab.errors import SpanlabError
    from spanlab.study import Study, load_study

    console = Console(emoji=False, markup=False)
    cfg = load_study(config, device=device, corpus=str(corpus.expanduser().resolve()) if corpus else None)
    forced = kernel_settings.parse(kernels)  # checked now, before any step runs
    check_out_dir(out if out is not None else cfg.out_dir())
    study = Study(cfg, out=out, progress=progress, log=lambda m: console.print(m, markup=False))
    selected = [x.strip() for x in only.split(",") if x.strip()] if only else None
    if only is not None:
        plan = study.plan()
        kinds = list(dict.fromkeys(s.kind for s in plan))
        unknown = [x for x in selected or [] if x not in kinds and x not in {s.id for s in plan}]
        if unknown or not selected:
            raise SpanlabError(f"--only {only!r}: {', '.join(map(repr, unknown)) or 'nothing'} is not a step of "
                               f"study {cfg.name}; give step kinds ({', '.join(kinds)}) or step ids "
                               "(listed by --dry-run)")
    if dry_run:
        done = study.done_steps()
        for i, s in enumerate(study.plan(), 1):
            console.print(f"{i:3d}. {s.id:40s} {'done' if s.id in done else 'todo'}", markup=False)
        return
    from spanlab.cli._common import quiet_transformers

    with quiet_transformers(), kernel_settings.use(cfg.kernels, "kernels"), kernel_settings.use(forced):
        res = study.run(only=selected)
    report = Path(res["report"])
    if not (report / "index.html").exists():  # --only without the report step, before any report
        console.print(f"\nstudy {cfg.name}: ran {len(res['ran'])} step(s) in {res['wall_s']:.1f}s; no report yet "
                      f"(run without --only, or with --only report)", markup=False)
        return
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
