"""`spanlab profile`: time and size a training step of each attention variant (Fig. 4 of the paper)."""

from __future__ import annotations

from pathlib import Path

import typer

from spanlab.cli.app import app
from spanlab.errors import SpanlabError


def _ints(flag: str, text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpanlabError(f"{flag} takes comma-separated integers, e.g. 4096,8192; got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise SpanlabError(f"{flag} takes positive integers; got {text!r}")
    return vals


@app.command("profile")
def profile(
    variants: str = typer.Option("full,sw,s2,se,se-nomem", help="Comma-separated: full, sw, s2, se, se-nomem, se-random, se-landmark, se-meanq."),
    lengths: str = typer.Option("4096,8192,16384,32768,65536", help="Comma-separated sequence lengths."),
    heads: int = typer.Option(16, help="Query heads."),
    kv_heads: int = typer.Option(0, help="Key/value heads (GQA); 0 = same as --heads."),
    head_dim: int = typer.Option(128, help="Head dimension."),
    batch: int = typer.Option(1, help="Batch size."),
    dtype: str = typer.Option("bf16", help="bf16 | fp16 | fp32."),
    mode: str = typer.Option("op", help="op: attention alone; layer: QKV projection + attention + output projection."),
    chunk_sizes: str = typer.Option("2048,4096", help="SE-Attn chunk sizes; one row per size."),
    block_size: int = typer.Option(32, help="SE-Attn memory block size."),
    top_k: int = typer.Option(8, help="SE-Attn retrieved blocks per chunk."),
    window: int = typer.Option(4096, help="Sliding-window size."),
    group_size: int = typer.Option(0, help="S² group size; 0 = a quarter of the length (LongLoRA)."),
    warmup: int = typer.Option(3, help="Untimed warm-up steps."),
    repeats: int = typer.Option(10, help="Timed steps; the median is reported."),
    device: str = typer.Option("auto", help="auto | cuda | cuda:N | cpu."),
    seed: int = typer.Option(0, help="Seed for the random inputs."),
    out: Path = typer.Option(Path("profile"), help="Output folder for profile.csv and the plots."),
    plots: bool = typer.Option(True, help="Write the runtime / memory PNG plots."),
    resume: bool = typer.Option(True, help="Skip configurations already in OUT/profile.csv."),
) -> None:
    """Measure fwd+bwd time (median, CUDA events) and peak memory per variant and length."""
    from rich.console import Console
    from rich.table import Table

    from spanlab.attention.profile import plot_rows, read_rows, run_profile

    if warmup < 0 or repeats < 1:
        raise SpanlabError("--warmup must be >= 0 and --repeats >= 1")
    for flag, val in (("--heads", heads), ("--head-dim", head_dim), ("--batch", batch), ("--block-size", block_size), ("--window", window)):
        if val < 1:
            raise SpanlabError(f"{flag} must be a positive integer; got {val}")
    console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "profile.csv"
    if not resume and csv_path.exists():
        csv_path.unlink()

    def show(r) -> None:
        console.print(f"{r.label:>18} L={r.length:>6}  {r.ms:9.3f} ms  {r.peak_mem_gib:7.2f} GiB  {r.tflops:7.1f} TFLOP/s  {r.status}")

    run_profile(
        variants=[v.strip() for v in variants.split(",") if v.strip()],
        lengths=_ints("--lengths", lengths),
        heads=heads, kv_heads=kv_heads or None, head_dim=head_dim, batch=batch, dtype=dtype, mode=mode,
        chunk_sizes=_ints("--chunk-sizes", chunk_sizes), window=window, group_size=group_size,
        block_size=block_size, top_k=top_k, warmup=warmup, repeats=repeats, device=device, seed=seed,
        csv_path=csv_path, on_row=show,
    )
    rows = read_rows(csv_path)
    table = Table(title=f"attention fwd+bwd ({mode}), {rows[0].device if rows else ''}")
    for col in ("variant", "L", "ms", "peak GiB", "TFLOP/s", "status"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.label, str(r.length), f"{r.ms:.3f}", f"{r.peak_mem_gib:.2f}", f"{r.tflops:.1f}", r.status)
    Console().print(table)
    if plots and rows:
        for p in plot_rows(rows, out):
            console.print(f"wrote {p}")
    console.print(f"wrote {csv_path}")
