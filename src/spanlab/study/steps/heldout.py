"""`heldout` step: the evaluation samples whose needles training and task-row fine-tuning leave out."""

from __future__ import annotations

import json
from typing import Any

from spanlab.study.context import StudyContext


def run_heldout(ctx: StudyContext) -> dict[str, Any]:
    """Write every evaluation sample of the models `ctx.heldout_models()` names to `OUT/heldout/`."""
    dest = ctx.out / "heldout"
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    made: set[str] = set()  # models with the same grid and tokenizer share one file: written once
    for name in ctx.heldout_models():
        for block in ctx.cfg.eval:
            key = json.dumps([block.name, ctx.eval_config(name, block).lengths, ctx.tokenizer_source(name)])
            if key in made:
                continue
            made.add(key)
            path = dest / f"{name}.{block.name}.jsonl"
            text = "".join(s.to_json() + "\n" for s in ctx.block_samples(name, block))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            n += text.count("\n")
    return {"samples": n}
