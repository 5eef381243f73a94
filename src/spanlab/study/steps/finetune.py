"""`finetune:<name>` steps: `spanlab finetune` of a study model, merged for evaluation."""

from __future__ import annotations

from typing import Any

from spanlab.study.config import resolve_length
from spanlab.study.context import StudyContext


def finetune_config(ctx: StudyContext, name: str) -> Any:
    """The FinetuneConfig of one fine-tuning step (validates the config's `settings`)."""
    from spanlab.finetune.config import FinetuneConfig

    f = next(x for x in ctx.cfg.finetune if x.name == name)
    raw: dict[str, Any] = {"model": ctx.model_path(f.base), "out": str(ctx.out / "finetune" / name),
                           "context": resolve_length(f.context, ctx.context_of(f.base)), "seed": ctx.cfg.seed,
                           "progress": ctx.progress, "merge": True, **f.settings}
    # The study's training text (the essays or `corpus:`, less the documents perplexity scores;
    # spanlab.study.corpus) unless the fine-tune names its own data.
    train_text = [str(ctx.corpus().train)]
    if name in ctx.task_finetunes():
        # Task rows continue the pre-training mixture, the study's held-out evaluation samples kept out.
        raw["data"] = list(f.data) or train_text
        if ctx.cfg.heldout and ctx.cfg.eval:
            raw.setdefault("heldout", [str(ctx.out / "heldout")])
        raw.setdefault("cache_dir", str(ctx.out / "data"))  # beside the pre-training streams
    else:
        raw["data"] = list(f.data) or train_text
    return FinetuneConfig.parse(raw, source=f"finetune {name}")


def run_finetune_step(ctx: StudyContext, name: str) -> dict[str, Any]:
    from spanlab.finetune.recipe import run_finetune
    from spanlab.zoo import use_fast_ssd

    use_fast_ssd()  # a Mamba2-family base trains through spanlab's scan (no-op for others)
    ctx.corpus(create=True)
    return run_finetune(finetune_config(ctx, name))
