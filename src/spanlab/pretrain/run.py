"""`spanlab train`: pre-train a zoo model from scratch on the shared stream, with spanlab.train's loop.

Output directory:
    final/            model (safetensors) + tokenizer, loadable with `from_pretrained`
    train_log.jsonl   one line per step (loss, lr, tokens, tokens/s), from spanlab.train
    checkpoints/      accelerate states for resume
    pretrain.json     settings, parameter counts, wall time, tokens/s (written when training ends)
    loss_curve.png    the loss curve
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.mixture import (
    DEFAULT_TASKS,
    LOSS_MODES,
    HeldOut,
    MixtureConfig,
    StreamDataset,
    build_stream,
    heldout_from_files,
)
from spanlab.mixture.text import text_passes, text_token_count, warn_passes
from spanlab.units import parse_count  # noqa: F401  (re-exported: token budgets, SI units)

SUMMARY_FILE = "pretrain.json"
# Peak learning rates that train each size stably in bf16 (smaller models tolerate larger steps).
DEFAULT_LR = {"tiny": 2e-3, "small": 1e-3, "base": 6e-4}

@dataclass
class PretrainConfig:
    arch: str
    size: str
    context: int
    tokens: int
    out: Path
    seed: int = 0
    tokenizer: str | None = None
    micro_batch_size: int = 8
    grad_accum: int = 1
    lr: float | None = None  # None = DEFAULT_LR[size]
    warmup_fraction: float = 0.02
    mixed_precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    task_fraction: float = 0.25
    tasks: tuple[str, ...] = DEFAULT_TASKS
    loss: str = "all"  # all | answers (task rows: loss on the answer only; spanlab.mixture.stream)
    heldout: list[str] = field(default_factory=list)  # JSONL sample files kept out of training
    save_every: int = 200
    data_workers: int | None = None  # None = every core
    data_dir: Path | None = None  # stream cache folder (default OUT/data); runs may share one
    # Natural text of the mixture (a .txt/.jsonl/.parquet file or folder); None = the vendored essays.
    text: str | None = None
    progress: bool = True


def labeled_positions_loss(model: Any, batch: dict[str, Any]) -> Any:
    """The causal-LM loss of `model(input_ids, labels=labels)`, with the vocabulary projection
    computed only at positions that have a label.

    With `--loss answers` most positions of a task row have none (label -100), and for tiny models
    the 8K-way output layer and its cross-entropy are most of a step's work (and, at batch 64 x
    512, a 1 GiB float32 logits tensor), so skipping them is a large saving with the same loss and
    gradients (tests/zoo/test_pretrain.py compares both). Falls back to the model's own loss where
    that is not exactly "final hidden state -> output embedding" (logit soft-capping, or a model
    wrapped for DDP, whose forward must be called for gradients to synchronise).
    """
    import torch.nn.functional as F

    labels = batch["labels"]
    config = getattr(model, "config", None)
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if (base is None or base is model or head is None or getattr(config, "logits_soft_cap", None)
            or getattr(config, "final_logit_softcapping", None)):
        return model(input_ids=batch["input_ids"], labels=labels, use_cache=False).loss
    hidden = base(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, target[keep])


def prepare_stream(cfg: PretrainConfig, *, world_size: int = 1, tokenizer: Any = None, progress: bool | None = None,
                   with_heldout: bool = False) -> Any:
    """Build (or find cached) the token stream `cfg` trains on; returns its path (and the held-out
    set with `with_heldout`). A study calls this once before training several models in parallel."""
    from spanlab.tasks.tokenizer import load_tokenizer

    if cfg.loss not in LOSS_MODES:
        raise SpanlabError(f"unknown --loss {cfg.loss!r}; choose one of {', '.join(LOSS_MODES)}")
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer)
    mix = MixtureConfig(context=cfg.context, seed=cfg.seed, task_fraction=cfg.task_fraction, tasks=tuple(cfg.tasks))
    rows_per_step = cfg.micro_batch_size * cfg.grad_accum * world_size
    steps = max(1, math.ceil(cfg.tokens / (rows_per_step * cfg.context)))
    heldout = heldout_from_files(cfg.heldout) if cfg.heldout else HeldOut()
    data_dir = stream_dir(cfg)
    show = cfg.progress if progress is None else progress
    path = build_stream(mix, steps * rows_per_step, tokenizer=tok, cache_dir=data_dir, heldout=heldout,
                        workers=cfg.data_workers, progress=show, text=mixture_text(cfg, tok, data_dir, show))
    return (path, heldout) if with_heldout else path


def stream_dir(cfg: PretrainConfig) -> Path:
    """Where the run's stream (and its text's token cache) is cached: `data_dir`, else OUT/data."""
    return Path(cfg.data_dir) if cfg.data_dir else Path(cfg.out) / "data"


def mixture_text(cfg: PretrainConfig, tokenizer: Any, data_dir: Path, progress: bool = False) -> Any:
    """(cache key, token ids) of `cfg.text` for spanlab.mixture.build_stream; None = the essays."""
    if cfg.text is None:
        return None
    from spanlab.mixture.text import build_token_cache

    cache = build_token_cache(cfg.text, tokenizer, data_dir / "text", progress=progress)
    return cache.directory.name, cache.tokens


def text_use(cfg: PretrainConfig, tokenizer: Any, data_dir: Path, tokens: int) -> tuple[int, float | None]:
    """(natural-text tokens of the mixture, times `tokens` of training read them; text rows only)."""
    n = text_token_count(tokenizer, cfg.text, data_dir / "text")
    return n, text_passes((1.0 - cfg.task_fraction) * tokens, n)


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Train `cfg.arch` at `cfg.size` from scratch; returns (and writes) the run summary."""
    import torch
    from accelerate import Accelerator

    from spanlab.tasks.tokenizer import load_tokenizer
    from spanlab.train import TrainConfig, train
    from spanlab.zoo import build_model, canonical_arch, count_parameters

    arch = canonical_arch(cfg.arch)
    out = Path(cfg.out)
    done = out / SUMMARY_FILE
    if done.exists() and (out / "final").is_dir():
        summary = json.loads(done.read_text())
        if (summary.get("tokens_target") == cfg.tokens and summary.get("arch") == arch
                and summary.get("text", "essays") == (cfg.text or "essays")):
            summary["skipped"] = True
            return summary
    from spanlab.train.loop import resolve_mixed_precision

    mp = resolve_mixed_precision(cfg.mixed_precision)
    acc = Accelerator(mixed_precision=mp)
    tok = load_tokenizer(cfg.tokenizer)
    rows_per_step = cfg.micro_batch_size * cfg.grad_accum * acc.num_processes
    steps = max(1, math.ceil(cfg.tokens / (rows_per_step * cfg.context)))

    t0 = time.perf_counter()
    if acc.is_main_process:
        prepare_stream(cfg, world_size=acc.num_processes, tokenizer=tok)
    acc.wait_for_everyone()
    path, heldout = prepare_stream(cfg, world_size=acc.num_processes, tokenizer=tok, progress=False, with_heldout=True)
    data_s = time.perf_counter() - t0
    dataset = StreamDataset(path, loss=cfg.loss)
    text_tokens, passes = text_use(cfg, tok, stream_dir(cfg), steps * rows_per_step * cfg.context)
    if acc.is_main_process:
        warn_passes(passes, text_tokens=text_tokens, what=f"pre-training ({cfg.tokens:,} tokens)")

    model = build_model(arch, cfg.size, vocab_size=len(tok), seed=cfg.seed,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    n_params = count_parameters(model)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.size, 1e-3)
    tcfg = TrainConfig(
        out_dir=out,
        max_steps=steps,
        micro_batch_size=cfg.micro_batch_size,
        grad_accum=cfg.grad_accum,
        lr=lr,
        min_lr_ratio=0.1,
        warmup_steps=min(steps, max(1, int(cfg.warmup_fraction * steps))),
        schedule="cosine",
        weight_decay=0.1,
        mixed_precision=mp,
        gradient_checkpointing=cfg.gradient_checkpointing,
        save_every=cfg.save_every,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    # Rows are already in a seeded random order; reading them in sequence keeps "row i is the
    # i-th sequence seen" true for every architecture.
    # Answer-only rows: project to the vocabulary only where a label is (one process; under DDP the
    # wrapper's own forward must run, so the model computes its full loss).
    sparse = cfg.loss == "answers" and acc.num_processes == 1
    result = train(model, dataset, tcfg, accelerator=acc, shuffle=False,
                   **({"loss_fn": labeled_positions_loss} if sparse else {}))
    summary: dict[str, Any] = {}
    if acc.is_main_process:
        assert result.final_dir is not None
        tok.save_pretrained(str(result.final_dir))
        from spanlab.report.training_plots import plot_loss_curves

        plot_loss_curves({arch: result.log_path}, out / "loss_curve.png", title=f"{arch} {cfg.size} @ {cfg.context}")
        summary = {
            "arch": arch,
            "size": cfg.size,
            "context": cfg.context,
            "tokens_target": cfg.tokens,
            "tokens": result.tokens,
            "steps": result.steps,
            "params": n_params,
            "non_embedding_params": count_parameters(model, non_embedding=True),
            "final_loss": result.losses[-1] if result.losses else None,
            "tokens_per_s": result.tokens_per_s,
            "wall_s": result.wall_s,
            "data_build_s": data_s,
            "peak_memory_gb": result.peak_memory_gb,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "world_size": acc.num_processes,
            "mixed_precision": mp,
            "lr": lr,
            "loss": cfg.loss,
            "task_fraction": cfg.task_fraction,
            "heldout_tokens": len(heldout),
            "text": cfg.text or "essays",
            "text_tokens": text_tokens,
            "text_passes": passes,
            "data": str(path.name),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "final_dir": str(result.final_dir),
        }
        done.write_text(json.dumps(summary, indent=2))
    acc.wait_for_everyone()
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m spanlab.pretrain.run CONFIG.json`: one run from a JSON PretrainConfig (how a study
    trains several models in parallel processes)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m spanlab.pretrain.run CONFIG.json", file=sys.stderr)
        return 2
    raw = json.loads(Path(args[0]).read_text())
    raw["tasks"] = tuple(raw.get("tasks") or DEFAULT_TASKS)
    for key in ("out", "data_dir"):
        if raw.get(key) is not None:
            raw[key] = Path(raw[key])
    try:
        summary = pretrain(PretrainConfig(**raw))
    except SpanlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary:
        print(f"{summary['arch']} {summary['size']}: {summary['tokens']:,} tokens, final loss "
              f"{summary['final_loss']:.3f}, {summary['tokens_per_s']:,.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
