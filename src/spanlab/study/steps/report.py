"""`report` step: the evaluation report, loss curves, profile figures and summary.md, all drawn by
spanlab.report from the files the other steps left in OUT."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.study.context import StudyContext


def attention_eval_tables(ctx: StudyContext) -> tuple[list[Any], list[str]]:
    """The Fig. 11 table of `eval_attention` (fine-tune with full vs its own attention) and the run
    directories it reads; fine-tunes left out (no evaluation rule) become notes of the table."""
    from spanlab.report.attention_eval import attention_eval_table
    from spanlab.report.load import load_run
    from spanlab.study.steps.eval_attention import attention_eval_plan, attention_run_dir

    if ctx.cfg.eval_attention is None:
        return [], []
    planned, notes = attention_eval_plan(ctx)
    pairs, dirs = [], []
    for name, _, label in planned:
        full, own = ctx.out / "eval" / name, attention_run_dir(ctx, name, label)
        if full.is_dir() and own.is_dir():
            try:
                pairs.append((ctx.display(name), load_run(full), load_run(own, own.name), label))
            except SpanlabError:  # a run that has not finished one sample yet
                continue
            dirs.append(str(own))
    table = attention_eval_table(pairs) if pairs else None
    if table is None:
        return [], dirs
    table.notes += notes
    return [table], dirs


def run_report(ctx: StudyContext) -> dict[str, Any]:
    from spanlab.report import build_report
    from spanlab.report.study_summary import perplexity_rows, write_study_summary
    from spanlab.report.training_plots import plot_loss_curves

    cfg = ctx.cfg
    rundirs = [str(ctx.out / "eval" / n) for n in ctx.evaluated_models() if (ctx.out / "eval" / n).is_dir()]
    dest = ctx.out / "report"
    extra, attention_dirs = attention_eval_tables(ctx)
    if rundirs:
        build_report(rundirs + attention_dirs, out=str(dest), threshold=cfg.threshold, extra=extra)
    dest.mkdir(parents=True, exist_ok=True)
    logs = {ctx.display(m.name): ctx.out / "train" / m.name / "train_log.jsonl"
            for m in cfg.models if m.train is not None}
    logs.update({ctx.display(m.name): Path(ctx.model_path(m.name)) / "train_log.jsonl"
                 for m in cfg.models if m.train is None and (Path(ctx.model_path(m.name)) / "train_log.jsonl").is_file()})
    logs = {k: v for k, v in logs.items() if v.is_file()}
    if logs:
        plot_loss_curves(logs, dest / "loss_curves.png", title=f"{cfg.name}: pre-training loss")
    profile_csv = ctx.out / "profile" / "profile.csv"
    profile_rows = None
    if profile_csv.is_file():
        from spanlab.attention.profile import display_label, read_rows
        from spanlab.report.profile_plots import plot_profile_rows

        shutil.copy2(profile_csv, dest / "profile.csv")
        profile_rows = read_rows(profile_csv)
        plot_profile_rows(profile_rows, dest, display=display_label)
    summary = write_study_summary(dest, name=cfg.name, steps=ctx.done_steps(),
                                  ppl=perplexity_rows(ctx.out / "ppl", ctx.display),
                                  profile_rows=profile_rows, profile_planned=cfg.profile is not None,
                                  text=ctx.corpus().name)
    return {"report": str(dest), "summary": str(summary)}
