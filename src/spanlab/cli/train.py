"""`spanlab train`: pre-train a zoo architecture from scratch on spanlab's shared data stream."""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.cli.app import app


@app.command("train")
def train_cmd(
    arch: str = typer.Option(..., help="zoo architecture: transformer | mamba2 | hybrid | griffin | rwkv"),
    size: str = typer.Option("tiny", help="zoo size: tiny (~5M) | small (~35M) | base (~105M)"),
    context: int = typer.Option(1024, help="training context length in tokens"),
    tokens: str = typer.Option("20M", help="token budget, e.g. 2M, 200M"),
    out: Path = typer.Option(..., help="output directory (resumes if it holds a checkpoint)"),
    seed: int = typer.Option(0),
    tokenizer: str | None = typer.Option(None, help="tokenizer (default: spanlab's built-in BPE)"),
    batch_size: int = typer.Option(8, help="sequences per device per micro-step"),
    grad_accum: int = typer.Option(1),
    lr: float | None = typer.Option(None, help="peak learning rate (default by size)"),
    mixed_precision: str = typer.Option("auto", help="auto | bf16 | fp16 | no"),
    gradient_checkpointing: bool = typer.Option(False),
    task_fraction: float = typer.Option(0.25, help="share of rows that are RULER-format task samples"),
    tasks: str | None = typer.Option(None, help="comma-separated RULER tasks of the mixture (default: NIAH family + vt)"),
    loss: str = typer.Option("all", help="all | answers: task rows train on their answer (+EOS) only, text rows on every token"),
    warmup_fraction: float = typer.Option(0.02, help="share of steps with linear learning-rate warm-up"),
    data_dir: str | None = typer.Option(None, help="stream cache folder (default OUT/data); runs may share one"),
    heldout: list[Path] = typer.Option([], help="evaluation sample JSONL files/folders whose needles must not appear in training"),
    save_every: int = typer.Option(200, help="checkpoint every N steps"),
    workers: int | None = typer.Option(None, help="processes building the data stream (default: every core)"),
    progress: bool = typer.Option(True),
    data_only: bool = typer.Option(False, "--data-only", help="build (or find) the data stream and exit; "
                                   "runs that share --data-dir then start training at once"),
) -> None:
    """Pre-train a zoo model: same data order and tokenizer for every architecture."""
    from rich.console import Console

    from spanlab.pretrain.data import DEFAULT_TASKS
    from spanlab.pretrain.run import (
        PretrainConfig,
        parse_count,
        prepare_stream,
        pretrain,
    )

    cfg = PretrainConfig(
        arch=arch, size=size, context=context, tokens=parse_count(tokens), out=out, seed=seed,
        tokenizer=tokenizer, micro_batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
        task_fraction=task_fraction, heldout=[str(h) for h in heldout], save_every=save_every,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else DEFAULT_TASKS,
        loss=loss, warmup_fraction=warmup_fraction, data_dir=Path(data_dir) if data_dir else None,
        data_workers=workers, progress=progress,
    )
    if data_only:
        print(prepare_stream(cfg))
        return
    summary = pretrain(cfg)
    if summary:
        c = Console()
        state = "already trained" if summary.get("skipped") else "trained"
        c.print(f"{summary['arch']} {summary['size']} {state}: {summary['tokens']:,} tokens, "
                f"{summary['params']/1e6:.2f}M params, final loss {summary['final_loss']:.3f}, "
                f"{summary['tokens_per_s']:,.0f} tokens/s")
        c.print(f"model: {summary['final_dir']}   loss curve: {out / 'loss_curve.png'}")
