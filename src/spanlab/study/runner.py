"""Run a study (the orchestrator; the steps are in spanlab.study.steps): train -> eval -> finetune -> eval (-> eval with the fine-tune's attention) -> (perplexity) -> report, resumable step by step.

Each finished step is appended (and flushed) to `OUT/steps.jsonl`; a re-run skips those steps.
Steps themselves resume inside (training from its last checkpoint, evaluation from its per-sample
journal), so a kill at any moment loses at most one checkpoint interval or one batch.

Layout of OUT:
    study.yaml          the resolved config (a re-run with a different config is refused)
    steps.jsonl         journal of finished steps
    heldout/            evaluation samples whose needles are kept out of pre-training and of the
                        task rows of fine-tuning
    data/               the token streams of pre-training (shared by every model trained on the same
                        one) and of fine-tuning on task rows (shared by the fine-tunes of one base)
    train/<model>/      `spanlab train` runs (+ <model>.log when trained in a parallel process)
    finetune/<name>/    `spanlab finetune` runs
    eval/<model>/       one `spanlab eval` run directory per model (all eval blocks)
    eval/<ft>@<attn>/   a fine-tune evaluated with an efficient attention (`eval_attention`, Fig. 11)
    ppl/<model>.jsonl   perplexity journal per model
    profile/profile.csv attention runtime/memory profile (rows journaled; Fig. 4)
    report/             tables, heatmaps, curves, index.html, loss_curves.png, profile_*.png, summary.md

A (task, length) pair whose prompt template alone does not fit the length (e.g. vt below ~700
tokens) is left out of the grid with a logged note -- an empty cell, as in the seed papers' tables
-- rather than failing the study.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from spanlab.errors import SpanlabError
from spanlab.study.config import StudyConfig
from spanlab.study.context import STEPS_FILE, StudyContext
from spanlab.study.steps import Step, StepSkipped
from spanlab.study.steps.eval_attention import SEP, attention_eval_plan, run_attention_eval
from spanlab.study.steps.evaluate import run_eval_block, run_perplexity
from spanlab.study.steps.finetune import finetune_config, run_finetune_step
from spanlab.study.steps.heldout import run_heldout
from spanlab.study.steps.profile import profile_settings, run_profile_step
from spanlab.study.steps.report import run_report
from spanlab.study.steps.train import pretrain_config, run_train, run_train_parallel

# Parts of the config that say where or how fast a study runs, not what it computes.
_UNPINNED = {"out", "device", "train_parallel"}


class Study(StudyContext):
    """A study's plan and its resumable run; every model-resolution helper of StudyContext too."""

    def finetune_config(self, name: str) -> Any:
        return finetune_config(self, name)

    def pretrain_config(self, name: str) -> Any:
        return pretrain_config(self, name)

    def profile_settings(self) -> dict[str, Any]:
        return profile_settings(self)

    def _pin_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        p = self.out / "study.yaml"
        # Where it runs (out, device) may change between resumes; what it computes may not.
        now = self.cfg.model_dump(mode="json", exclude=_UNPINNED)
        if p.exists():
            old = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            if old != now:
                changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
                raise SpanlabError(f"{self.out} holds a study with a different config (changed: {', '.join(changed)}); "
                                   "use another --out or delete that directory")
        else:
            p.write_text(yaml.safe_dump(now, sort_keys=False), encoding="utf-8")

    def plan(self) -> list[Step]:
        cfg = self.cfg
        steps: list[Step] = []
        if cfg.heldout and self.heldout_models() and cfg.eval:
            steps.append(Step("heldout", "heldout", lambda: run_heldout(self)))
        for m in cfg.models:
            if m.train is not None:
                steps.append(Step(f"train:{m.name}", "train", lambda n=m.name: run_train(self, n)))
        for m in cfg.models:
            for b in cfg.eval:
                steps.append(Step(f"eval:{m.name}:{b.name}", "eval", lambda n=m.name, b=b: run_eval_block(self, n, b)))
        ft_blocks = [b for b in cfg.eval if cfg.finetune_eval is None or b.name in cfg.finetune_eval]
        for f in cfg.finetune:
            steps.append(Step(f"finetune:{f.name}", "finetune", lambda n=f.name: run_finetune_step(self, n)))
            for b in ft_blocks:
                steps.append(Step(f"eval:{f.name}:{b.name}", "eval", lambda n=f.name, b=b: run_eval_block(self, n, b)))
        planned, _ = attention_eval_plan(self)
        ea_blocks = [b for b in ft_blocks if cfg.eval_attention is None or cfg.eval_attention.blocks is None
                     or b.name in cfg.eval_attention.blocks]
        for name, rule, label in planned:
            for b in ea_blocks:
                steps.append(Step(f"eval:{name}{SEP}{label}:{b.name}", "eval",
                                  lambda n=name, r=rule, lab=label, b=b: run_attention_eval(self, n, r, lab, b)))
        if cfg.perplexity is not None:
            for n in [m.name for m in cfg.models] + [f.name for f in cfg.finetune]:
                steps.append(Step(f"ppl:{n}", "ppl", lambda n=n: run_perplexity(self, n)))
        if cfg.profile is not None:
            steps.append(Step("profile", "profile", lambda: run_profile_step(self)))
        steps.append(Step("report", "report", lambda: run_report(self)))
        return steps

    def run(self, *, only: list[str] | None = None) -> dict[str, Any]:
        self._pin_config()
        done = self.done_steps()
        steps = self.plan()
        index = {s.id: i for i, s in enumerate(steps, 1)}
        t_all = time.perf_counter()
        ran: list[str] = []
        skipped: list[str] = []

        def finish(step: Step, result: dict[str, Any], wall: float) -> None:
            self.record({"step": step.id, "kind": step.kind, "wall_s": round(wall, 3),
                         "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "result": _jsonable(result)})
            ran.append(step.id)
            self.log(f"[{index[step.id]}/{len(steps)}] {step.id}: finished in {wall:.1f}s")

        todo = []
        for step in steps:
            if only and step.kind not in only and step.id not in only:
                continue
            # The report always re-runs: it is cheap and must reflect every finished step.
            if step.id in done and step.kind != "report":
                self.log(f"[{index[step.id]}/{len(steps)}] {step.id}: done, skipped")
                continue
            todo.append(step)
        pending_train = [s for s in todo if s.kind == "train"]
        for step in todo:
            if step.kind == "train" and self.cfg.train_parallel > 1 and len(pending_train) > 1:
                if step is pending_train[0]:  # the whole group starts at its first member
                    self.log(f"[{index[step.id]}/{len(steps)}] training {len(pending_train)} models, "
                             f"{self.cfg.train_parallel} at a time ...")
                    run_train_parallel(self, pending_train, finish)
                continue
            self.log(f"[{index[step.id]}/{len(steps)}] {step.id} ...")
            t0 = time.perf_counter()
            try:
                result = step.run()
            except StepSkipped as e:
                self.log(f"[{index[step.id]}/{len(steps)}] {step.id}: not run here ({e})")
                skipped.append(step.id)
                continue
            finish(step, result, time.perf_counter() - t0)
        return {"out": str(self.out), "ran": ran, "not_run": skipped, "wall_s": time.perf_counter() - t_all,
                "report": str(self.out / "report")}



def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "extra" and isinstance(v, (str, int, float, bool, list, dict, type(None)))}


__all__ = ["STEPS_FILE", "Study", "StudyConfig"]
