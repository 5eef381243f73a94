"""`eval:<model>:<block>` and `ppl:<model>` steps: RULER/NIAH blocks and held-out text perplexity."""

from __future__ import annotations

from typing import Any

from spanlab.study.config import EvalBlock, resolve_length
from spanlab.study.context import StudyContext


def run_eval_block(ctx: StudyContext, name: str, block: EvalBlock) -> dict[str, Any]:
    from spanlab.eval import run_eval

    records = run_eval(ctx.eval_config(name, block), samples=ctx.block_samples(name, block))
    return {"records": len(records)}


def run_perplexity(ctx: StudyContext, name: str) -> dict[str, Any]:
    import torch

    from spanlab.finetune.perplexity import perplexity
    from spanlab.finetune.recipe import load_base_model, load_tokenizer
    from spanlab.mixture.text import build_token_cache
    from spanlab.zoo import use_fast_ssd

    spec = ctx.cfg.perplexity
    assert spec is not None
    use_fast_ssd()
    path = ctx.model_path(name)
    lengths = [resolve_length(x, ctx.base_context(name)) for x in spec.lengths]
    device = ctx.cfg.device if ctx.cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(path)
    # The held-out documents: the study's training steps read the others (spanlab.study.corpus).
    tokens = build_token_cache(str(ctx.corpus(create=True).heldout), tok, ctx.out / "ppl" / "cache",
                               progress=False).tokens
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    net = load_base_model(path, dtype=dtype).to(device)
    (ctx.out / "ppl").mkdir(parents=True, exist_ok=True)
    rows = perplexity(net, tokens, lengths, max_windows=spec.max_windows, journal=ctx.out / "ppl" / f"{name}.jsonl",
                      progress=ctx.progress, meta={"model": name})
    return {"ppl": {int(r["length"]): r["ppl"] for r in rows}}
