"""`spanlab ppl`: perplexity on non-overlapping windows of several lengths (the PG-19 protocol).

The flags are the fields of `spanlab.finetune.config.PplConfig` (also the YAML form of
`--config ppl.yaml`; flags given override the file): its defaults and limits are the only ones, a
bad value is a one-line error naming the flag (or the file's key), checked before any model loads.
"""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.attention.registry import VARIANTS
from spanlab.cli._common import kernels_help
from spanlab.cli.app import app
from spanlab.errors import SpanlabError


@app.command("ppl")
def ppl(
    model: str | None = typer.Option(None, help="Local HF model folder (e.g. OUT/merged of spanlab finetune)."),
    data: list[str] | None = typer.Option(None, help="Evaluation text: txt / jsonl / parquet file or folder (repeatable)."),
    config: Path | None = typer.Option(None, help="YAML file with these settings; flags given here override it."),
    lengths: str | None = typer.Option(None, help="Comma-separated window lengths, e.g. 2k,8k (k = 1024) "
                                       "[2048,8192,16384,32768]."),
    attention: str | None = typer.Option(None, help=f"{VARIANTS.help(patchable=True)} [full]."),
    window: str | None = typer.Option(None, help="SW window, e.g. 2048 or 2k."),
    group_size: str | None = typer.Option(None, help="S² group size, e.g. 2k."),
    chunk_size: str | None = typer.Option(None, help="SE chunk size, e.g. 2k."),
    block_size: int | None = typer.Option(None, help="SE memory block size [32]."),
    top_k: int | None = typer.Option(None, help="SE retrieved blocks per chunk [8]."),
    batch_size: int | None = typer.Option(None, help="Windows per forward pass [1]."),
    max_windows: int | None = typer.Option(None, help="At most this many windows per length."),
    dtype: str | None = typer.Option(None, help="bf16 | fp16 | fp32 (weights and activations) [bf16]."),
    device: str | None = typer.Option(None, help="auto | cuda | cuda:N | cpu [auto]."),
    text_field: str | None = typer.Option(None, help="Text field of jsonl / parquet rows [text]."),
    cache_dir: Path | None = typer.Option(None, help="Token cache folder."),
    out: Path | None = typer.Option(None, help="Append results as JSONL here (lengths already there are skipped)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    kernels: str | None = typer.Option(None, help=kernels_help()),
) -> None:
    """Print (and optionally journal) perplexity per window length."""
    from spanlab.cli._common import check_out_dir
    from spanlab.configs import validated
    from spanlab.finetune.config import PplConfig

    flags = {"model": model, "data": data or None, "lengths": lengths, "attention": attention, "window": window,
             "group_size": group_size, "chunk_size": chunk_size, "block_size": block_size, "top_k": top_k,
             "batch_size": batch_size, "max_windows": max_windows, "dtype": dtype, "device": device,
             "text_field": text_field, "cache_dir": cache_dir, "out": out, "progress": progress, "kernels": kernels}
    if config is not None:
        cfg = PplConfig.from_yaml(config, **flags)
    else:
        missing = [f"--{k}" for k in ("model", "data") if flags[k] is None]
        if missing:
            raise SpanlabError(f"missing {', '.join(missing)}; give them or a --config YAML file")
        cfg = validated(PplConfig, {k: v for k, v in flags.items() if v is not None})
    if cfg.out is not None:
        if cfg.out.is_dir():
            raise SpanlabError(f"--out {cfg.out} is a folder; ppl appends JSONL lines to a file, e.g. --out {cfg.out}/ppl.jsonl")
        check_out_dir(cfg.out.parent, "--out")

    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpanlabError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")

    from spanlab import kernels as kernel_settings
    from spanlab.cli._common import quiet_transformers

    with kernel_settings.use(cfg.kernels) as chosen, quiet_transformers():
        rows = _run(cfg, device, chosen.model_dump())

    from rich.console import Console
    from rich.table import Table

    from spanlab.units import format_length

    table = Table(title=f"perplexity ({cfg.attention} attention)")
    for col in ("length", "windows", "tokens", "ppl"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(format_length(r["length"]), str(r["windows"]), f"{r['tokens']:,}", f"{r['ppl']:.4f}")
    Console().print(table)


def _run(cfg, device: str, kernel_choices: dict[str, str]) -> list[dict]:
    import numpy as np
    import torch

    from spanlab.finetune.data import build_token_cache
    from spanlab.finetune.patching import patch_attention
    from spanlab.finetune.perplexity import perplexity
    from spanlab.finetune.recipe import load_base_model, load_tokenizer

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    params = cfg.attention_params()
    try:
        tokenizer = load_tokenizer(cfg.model)
        streams = [build_token_cache(src, tokenizer, cfg.cache_dir, text_field=cfg.text_field,
                                     progress=cfg.progress).tokens for src in cfg.data]
        tokens = streams[0] if len(streams) == 1 else np.concatenate([np.asarray(s) for s in streams])
        net = load_base_model(cfg.model, dtype=dtypes[cfg.dtype]).to(device)
    except OSError as e:  # a model folder missing a file transformers needs: the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpanlabError(f"cannot load model {cfg.model!r}: {first}") from None
    patch_attention(net, cfg.attention, **params)
    # Every journal line says what produced it, the kernel choices included.
    meta = {"model": cfg.model, "data": [str(d) for d in cfg.data], "attention": cfg.attention, **params,
            "kernels": kernel_choices}
    return perplexity(net, tokens, cfg.lengths, batch_size=cfg.batch_size, max_windows=cfg.max_windows,
                      journal=cfg.out, progress=cfg.progress, meta=meta)
