"""`eval:<fine-tune>@<attention>:<block>` steps (Expansion Span Fig. 11): a fine-tuned model
evaluated again with an efficient attention over its KV cache (spanlab.models.variant_attention),
on the same samples as its full-attention evaluation, into `eval/<fine-tune>@<attention>/`."""

from __future__ import annotations

from typing import Any

from spanlab.errors import SpanlabError
from spanlab.study.config import SAME, EvalBlock
from spanlab.study.context import StudyContext

SEP = "@"  # eval/<fine-tune>@<label>: model names may not contain it, so the split is unambiguous


def _variant_of(ctx: StudyContext, name: str) -> str:
    from spanlab.finetune.config import FinetuneConfig

    f = next(x for x in ctx.cfg.finetune if x.name == name)
    return str(f.settings.get("attention", FinetuneConfig.model_fields["attention"].default))


def label_of(rule: str) -> str:
    """A folder-safe name of an explicit rule: `sw:window=1024` -> `sw-window1024`."""
    return rule.strip().replace(":", "-").replace(",", "-").replace("=", "")


def attention_eval_plan(ctx: StudyContext) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(fine-tune, rule, label) of every evaluation `eval_attention` asks for, and a note for each
    fine-tune left out (its variant has no evaluation rule: S², SE-Attn-Random)."""
    spec = ctx.cfg.eval_attention
    if spec is None:
        return [], []
    from spanlab.models.variant_attention import EVAL_VARIANTS  # torch: only for studies that ask
    names = spec.finetunes or [f.name for f in ctx.cfg.finetune]
    out: list[tuple[str, str, str]] = []
    notes: list[str] = []
    for name in names:
        for rule in spec.attention:
            if rule.strip() != SAME:
                out.append((name, rule.strip(), label_of(rule)))
                continue
            variant = _variant_of(ctx, name)
            if variant == "full":
                continue  # its own attention is full attention: the regular evaluation
            if variant not in EVAL_VARIANTS:
                notes.append(f"{name}: trained with {variant}, which has no evaluation rule over a KV cache "
                             "(as in the paper's Fig. 11, which omits S²); evaluated with full attention only")
                continue
            out.append((name, SAME, variant))
    return out, notes


def resolve_rule(ctx: StudyContext, name: str, rule: str) -> Any:
    """The EvalRule of `rule` for fine-tune `name`: `same` reads the fine-tune's resolved attention
    parameters (defaults from its context included); a random chunk draw evaluates with its smallest
    chunk, the deterministic choice variant_attention makes for the paper's {2048, 4096}."""
    from spanlab.models.variant_attention import parse_spec
    from spanlab.study.steps.finetune import finetune_config

    if rule != SAME:
        return parse_spec(rule)
    fc = finetune_config(ctx, name)
    params = fc.attention_params()
    if fc.attention == "sw":
        return parse_spec(f"sw:window={int(params['window'])}")
    chunk = params.get("chunk_size")
    chunk = min(chunk) if isinstance(chunk, (tuple, list)) else chunk
    parts = {"chunk_size": chunk, "block_size": params.get("block_size"), "top_k": params.get("top_k")}
    text = ",".join(f"{k}={int(v)}" for k, v in parts.items() if v is not None)
    return parse_spec(f"{fc.attention}:{text}" if text else fc.attention)


def attention_run_dir(ctx: StudyContext, name: str, label: str) -> Any:
    return ctx.out / "eval" / f"{name}{SEP}{label}"


def run_attention_eval(ctx: StudyContext, name: str, rule: str, label: str, block: EvalBlock) -> dict[str, Any]:
    from spanlab.eval import run_eval
    from spanlab.models.variant_attention import PREFIX

    r = resolve_rule(ctx, name, rule)
    cfg = ctx.eval_config(name, block)
    if cfg.backend != "hf":
        raise SpanlabError(f"eval_attention runs on the hf backend; {name} is evaluated with {cfg.backend}")
    cfg = cfg.model_copy(update={"out": str(attention_run_dir(ctx, name, label)),
                                 "attn_implementation": PREFIX + r.describe()})
    samples = ctx.block_samples(name, block)
    tasks = (ctx.cfg.eval_attention.tasks if ctx.cfg.eval_attention else None) or None
    if tasks:
        samples = [s for s in samples if s.task in tasks]
        if not samples:
            ctx.log(f"  note: eval block {block.name!r} runs none of eval_attention.tasks {tasks}; nothing to do")
            return {"records": 0}
    records = run_eval(cfg, samples=samples)
    return {"records": len(records), "attention": r.describe()}
