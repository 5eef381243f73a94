"""`spanlab train`: pre-train a zoo architecture from scratch on spanlab's shared data stream.

The model flags are the fields of a study config's `train:` block (`spanlab.study.config.TrainSpec`):
defaults and limits live there only, and a bad value is a one-line error naming the flag.
"""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.cli.app import app
from spanlab.errors import SpanlabError
from spanlab.study.config import TrainSpec

_D = {name: f.default for name, f in TrainSpec.model_fields.items()}


@app.command("train")
def train_cmd(
    arch: str = typer.Option(..., help="zoo architecture: transformer | mamba2 | hybrid | griffin | rwkv"),
    size: str = typer.Option(_D["size"], help="zoo size: tiny (~5M) | small (~35M) | base (~105M)"),
    context: str = typer.Option(str(_D["context"]), help="training context length in tokens, e.g. 1024 or 1k"),
    tokens: str = typer.Option(_D["tokens"], help="token budget, SI units: 2M = 2,000,000, 200M, 1.5B"),
    out: Path = typer.Option(..., help="output directory (resumes if it holds a checkpoint)"),
    seed: int = typer.Option(0),
    tokenizer: str | None = typer.Option(None, help="tokenizer (default: spanlab's built-in BPE)"),
    batch_size: int = typer.Option(_D["batch_size"], help="sequences per device per micro-step"),
    grad_accum: int = typer.Option(_D["grad_accum"]),
    lr: float | None = typer.Option(None, help="peak learning rate (default by size)"),
    mixed_precision: str = typer.Option(_D["mixed_precision"], help="auto | bf16 | fp16 | no"),
    gradient_checkpointing: bool = typer.Option(_D["gradient_checkpointing"]),
    task_fraction: float = typer.Option(_D["task_fraction"], help="share of rows that are RULER-format task samples"),
    tasks: str | None = typer.Option(None, help="comma-separated RULER tasks of the mixture (default: NIAH family + vt)"),
    loss: str = typer.Option(_D["loss"], help="all | answers: task rows train on their answer (+EOS) only, text rows on every token"),
    warmup_fraction: float = typer.Option(_D["warmup_fraction"], help="share of steps with linear learning-rate warm-up"),
    data_dir: str | None = typer.Option(None, help="stream cache folder (default OUT/data); runs may share one"),
    text: Path | None = typer.Option(None, help="natural text of the mixture: a .txt/.jsonl/.parquet file or a "
                                     "folder of them (default: the vendored Paul Graham essays, ~155K tokens)"),
    heldout: list[Path] = typer.Option([], help="evaluation sample JSONL files/folders whose needles must not appear in training"),
    save_every: int = typer.Option(_D["save_every"], help="checkpoint every N steps"),
    workers: int | None = typer.Option(None, help="processes building the data stream (default: every core)"),
    progress: bool = typer.Option(True),
    data_only: bool = typer.Option(False, "--data-only", help="build (or find) the data stream and exit; "
                                   "runs that share --data-dir then start training at once"),
) -> None:
    """Pre-train a zoo model: same data order and tokenizer for every architecture."""
    from rich.console import Console

    from spanlab.cli._common import check_out_dir
    from spanlab.configs import validated
    from spanlab.pretrain.data import DEFAULT_TASKS
    from spanlab.pretrain.run import (
        PretrainConfig,
        parse_count,
        prepare_stream,
        pretrain,
    )

    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    spec = validated(TrainSpec, dict(
        arch=arch, size=size, context=context, tokens=tokens, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        warmup_fraction=warmup_fraction, task_fraction=task_fraction, tasks=task_list, loss=loss,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, save_every=save_every,
    ))
    if workers is not None and workers < 1:
        raise SpanlabError("--workers must be at least 1")
    check_out_dir(out)
    if text is not None:
        from spanlab.mixture.text import source_files

        source_files(text)  # a missing folder or unsupported file fails here, before any work
    if data_dir:
        check_out_dir(data_dir, "--data-dir")
    cfg = PretrainConfig(
        arch=spec.arch, size=spec.size, context=spec.context, tokens=parse_count(spec.tokens), out=out, seed=seed,
        tokenizer=tokenizer, micro_batch_size=spec.batch_size, grad_accum=spec.grad_accum, lr=spec.lr,
        mixed_precision=spec.mixed_precision, gradient_checkpointing=spec.gradient_checkpointing,
        task_fraction=spec.task_fraction, heldout=[str(h) for h in heldout], save_every=spec.save_every,
        tasks=tuple(spec.tasks) if spec.tasks else DEFAULT_TASKS,
        loss=spec.loss, warmup_fraction=spec.warmup_fraction, data_dir=Path(data_dir) if data_dir else None,
        data_workers=workers, progress=progress, text=str(text) if text is not None else None,
    )
    if data_only:
        print(prepare_stream(cfg))
        return
    from spanlab.cli._common import quiet_transformers

    with quiet_transformers():
        summary = pretrain(cfg)
    if summary:
        c = Console()
        state = "already trained" if summary.get("skipped") else "trained"
        c.print(f"{summary['arch']} {summary['size']} {state}: {summary['tokens']:,} tokens, "
                f"{summary['params']/1e6:.2f}M params, final loss {summary['final_loss']:.3f}, "
                f"{summary['tokens_per_s']:,.0f} tokens/s")
        c.print(f"model: {summary['final_dir']}   loss curve: {out / 'loss_curve.png'}")
