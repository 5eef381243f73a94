"""`spanlab ppl`: perplexity on non-overlapping windows of several lengths (the PG-19 protocol)."""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.cli.app import app
from spanlab.errors import SpanlabError


@app.command("ppl")
def ppl(
    model: str = typer.Option(..., help="Local HF model folder (e.g. OUT/merged of spanlab finetune)."),
    data: list[str] = typer.Option(..., help="Evaluation text: txt / jsonl / parquet file or folder (repeatable)."),
    lengths: str = typer.Option("2048,8192,16384,32768", help="Comma-separated window lengths."),
    attention: str = typer.Option("full", help="full | sw | s2 | se | se-nomem | se-random | se-landmark | se-meanq."),
    window: int | None = typer.Option(None, help="SW window."),
    group_size: int | None = typer.Option(None, help="S² group size."),
    chunk_size: int | None = typer.Option(None, help="SE chunk size."),
    block_size: int = typer.Option(32, help="SE memory block size."),
    top_k: int = typer.Option(8, help="SE retrieved blocks per chunk."),
    batch_size: int = typer.Option(1, help="Windows per forward pass."),
    max_windows: int | None = typer.Option(None, help="At most this many windows per length."),
    dtype: str = typer.Option("bf16", help="bf16 | fp16 | fp32 (weights and activations)."),
    device: str = typer.Option("auto", help="auto | cuda | cuda:N | cpu."),
    text_field: str = typer.Option("text", help="Text field of jsonl / parquet rows."),
    cache_dir: Path | None = typer.Option(None, help="Token cache folder."),
    out: Path | None = typer.Option(None, help="Append results as JSONL here (lengths already there are skipped)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Print (and optionally journal) perplexity per window length."""
    import numpy as np
    import torch

    from spanlab.finetune.data import build_token_cache
    from spanlab.finetune.patching import patch_attention
    from spanlab.finetune.perplexity import perplexity
    from spanlab.finetune.recipe import load_base_model, load_tokenizer

    try:
        lens = [int(x) for x in lengths.split(",") if x.strip()]
    except ValueError:
        raise SpanlabError(f"--lengths takes comma-separated integers, e.g. 2048,8192; got {lengths!r}") from None
    if not lens or any(n < 2 for n in lens):
        raise SpanlabError(f"--lengths needs integers >= 2; got {lengths!r}")
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in dtypes:
        raise SpanlabError(f"--dtype must be one of bf16, fp16, fp32; got {dtype!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpanlabError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")

    tokenizer = load_tokenizer(model)
    streams = [build_token_cache(src, tokenizer, cache_dir, text_field=text_field, progress=progress).tokens for src in data]
    tokens = streams[0] if len(streams) == 1 else np.concatenate([np.asarray(s) for s in streams])
    net = load_base_model(model, dtype=dtypes[dtype]).to(device)
    params: dict = {}
    if attention == "sw":
        params = {"window": window}
    elif attention == "s2":
        params = {"group_size": group_size}
    elif attention.startswith("se"):
        params = {"chunk_size": chunk_size, "block_size": block_size, "top_k": top_k}
    missing = [k for k, v in params.items() if v is None]
    if missing:
        raise SpanlabError(f"--attention {attention} needs --{missing[0].replace('_', '-')}")
    patch_attention(net, attention, **params)
    meta = {"model": model, "data": [str(d) for d in data], "attention": attention, **{k: v for k, v in params.items()}}
    rows = perplexity(net, tokens, lens, batch_size=batch_size, max_windows=max_windows, journal=out,
                      progress=progress, meta=meta)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"perplexity ({attention} attention)")
    for col in ("length", "windows", "tokens", "ppl"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["length"]), str(r["windows"]), f"{r['tokens']:,}", f"{r['ppl']:.4f}")
    Console().print(table)
