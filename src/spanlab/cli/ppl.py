"""`spanlab ppl`: perplexity on non-overlapping windows of several lengths (the PG-19 protocol)."""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.attention.registry import VARIANTS
from spanlab.cli.app import app
from spanlab.errors import SpanlabError


@app.command("ppl")
def ppl(
    model: str = typer.Option(..., help="Local HF model folder (e.g. OUT/merged of spanlab finetune)."),
    data: list[str] = typer.Option(..., help="Evaluation text: txt / jsonl / parquet file or folder (repeatable)."),
    lengths: str = typer.Option("2048,8192,16384,32768", help="Comma-separated window lengths, e.g. 2k,8k (k = 1024)."),
    attention: str = typer.Option("full", help=f"{VARIANTS.help(patchable=True)}."),
    window: str | None = typer.Option(None, help="SW window, e.g. 2048 or 2k."),
    group_size: str | None = typer.Option(None, help="S² group size, e.g. 2k."),
    chunk_size: str | None = typer.Option(None, help="SE chunk size, e.g. 2k."),
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
    from spanlab.units import parse_length, parse_lengths

    lens = parse_lengths(lengths)
    if not lens or any(n < 2 for n in lens):
        raise SpanlabError(f"--lengths needs lengths of at least 2 tokens, e.g. 2048,8192 or 2k,8k; got {lengths!r}")
    sizes: dict[str, int | None] = {}
    for flag, val in (("--window", window), ("--group-size", group_size), ("--chunk-size", chunk_size)):
        try:
            sizes[flag] = None if val is None else parse_length(val)
        except SpanlabError as e:
            raise SpanlabError(f"{flag}: {e}") from None
    window, group_size, chunk_size = sizes["--window"], sizes["--group-size"], sizes["--chunk-size"]
    for flag, n in (("--block-size", block_size), ("--top-k", top_k), ("--batch-size", batch_size)):
        if n < 1:
            raise SpanlabError(f"{flag} must be at least 1; got {n}")
    if max_windows is not None and max_windows < 1:
        raise SpanlabError(f"--max-windows must be at least 1; got {max_windows}")
    if out is not None:
        if out.is_dir():
            raise SpanlabError(f"--out {out} is a folder; ppl appends JSONL lines to a file, e.g. --out {out}/ppl.jsonl")
        from spanlab.cli._common import check_out_dir

        check_out_dir(out.parent, "--out")
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in dtypes:
        raise SpanlabError(f"--dtype must be one of bf16, fp16, fp32; got {dtype!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpanlabError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")

    spec = VARIANTS.get_spec(attention, patchable=True)
    flags = {"window": window, "group_size": group_size, "chunk_size": chunk_size, "block_size": block_size,
             "top_k": top_k}
    params: dict = {k: flags[k] for k in spec.param_names if k in flags}
    missing = [p.name for p in spec.params if p.required and params.get(p.name) is None]
    if missing:
        raise SpanlabError(f"--attention {attention} needs --{missing[0].replace('_', '-')}")
    try:
        tokenizer = load_tokenizer(model)
        streams = [build_token_cache(src, tokenizer, cache_dir, text_field=text_field, progress=progress).tokens
                   for src in data]
        tokens = streams[0] if len(streams) == 1 else np.concatenate([np.asarray(s) for s in streams])
        net = load_base_model(model, dtype=dtypes[dtype]).to(device)
    except OSError as e:  # a model folder missing a file transformers needs: the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpanlabError(f"cannot load model {model!r}: {first}") from None
    patch_attention(net, attention, **params)
    meta = {"model": model, "data": [str(d) for d in data], "attention": attention, **{k: v for k, v in params.items()}}
    from spanlab.cli._common import quiet_transformers

    with quiet_transformers():
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
