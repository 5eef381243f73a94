"""`spanlab profile`: time and size a training step of each attention variant (Fig. 4 of the paper)."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import typer

from spanlab.attention.registry import VARIANTS
from spanlab.cli._common import kernels_help
from spanlab.cli.app import app
from spanlab.errors import SpanlabError
from spanlab.study.config import ProfileSpec

# --chunk-mode is a study's `profile.chunk_mode`: its values and default come from ProfileSpec.
_CHUNK_MODE = ProfileSpec.model_fields["chunk_mode"]
CHUNK_MODES = typing.get_args(_CHUNK_MODE.annotation)


def _ints(flag: str, text: str) -> list[int]:
    from spanlab.units import parse_lengths

    vals = parse_lengths(text, flag)
    if not vals:
        raise SpanlabError(f"{flag} needs at least one length, e.g. 4096,8192 or 4k,8k")
    return vals


def _mem(gib: float) -> str:
    return "n/a" if math.isnan(gib) else f"{gib:.2f}"


@app.command("profile")
def profile(
    variants: str = typer.Option("full,sw,s2,se,se-nomem", help=f"Comma-separated: {', '.join(VARIANTS)}."),
    lengths: str = typer.Option("4096,8192,16384,32768,65536", help="Comma-separated sequence lengths, e.g. 4k,8k (k = 1024)."),
    heads: int = typer.Option(16, help="Query heads."),
    kv_heads: int = typer.Option(0, help="Key/value heads (GQA); 0 = same as --heads."),
    head_dim: int = typer.Option(128, help="Head dimension."),
    batch: int = typer.Option(1, help="Batch size."),
    dtype: str = typer.Option("bf16", help="bf16 | fp16 | fp32."),
    mode: str = typer.Option("op", help="op: attention alone; layer: QKV projection + attention + output projection."),
    chunk_sizes: str = typer.Option("2048,4096", help="SE-Attn chunk sizes, e.g. 2048,4096 (see --chunk-mode)."),
    chunk_mode: str = typer.Option(
        _CHUNK_MODE.default,
        help=f"{' | '.join(CHUNK_MODES)}: each = one SE row per chunk size (se[M=2048], se[M=4096]); "
             "alternate = one SE row whose step runs a layer call per chunk size in turn, as the paper's "
             "training draws one per call (se[M=2048/4096], time per layer call). A study's profile.chunk_mode."),
    block_size: int = typer.Option(32, help="SE-Attn memory block size."),
    top_k: int = typer.Option(8, help="SE-Attn retrieved blocks per chunk."),
    window: str = typer.Option("4096", help="Sliding-window size, e.g. 4096 or 4k."),
    group_size: int = typer.Option(0, help="S² group size; 0 = a quarter of the length (LongLoRA)."),
    warmup: int = typer.Option(3, help="Untimed warm-up steps."),
    repeats: int = typer.Option(10, help="Timed steps; the median is reported."),
    device: str = typer.Option("auto", help="auto | cuda | cuda:N | cpu."),
    seed: int = typer.Option(0, help="Seed for the random inputs."),
    out: Path = typer.Option(Path("profile"), help="Output folder for profile.csv and the plots."),
    plots: bool = typer.Option(True, help="Write the runtime / memory PNG plots."),
    resume: bool = typer.Option(True, help="Skip configurations already in OUT/profile.csv."),
    kernels: str | None = typer.Option(None, help=kernels_help()),
) -> None:
    """Measure fwd+bwd time (median, CUDA events) and peak memory per variant and length."""
    from rich.console import Console
    from rich.table import Table

    from spanlab.attention.profile import display_label, read_rows, run_profile
    from spanlab.cli._common import check_out_dir
    from spanlab.configs import validated
    from spanlab.report.profile_plots import plot_profile_rows
    from spanlab.units import format_length, parse_length

    try:
        window_len = parse_length(window)
    except SpanlabError as e:
        raise SpanlabError(f"--window: {e}") from None
    length_list, chunk_list = _ints("--lengths", lengths), _ints("--chunk-sizes", chunk_sizes)
    # The limits of these flags are those of a study's `profile:` block (one model, two front ends).
    spec = validated(ProfileSpec, dict(
        variants=[v.strip() for v in variants.split(",") if v.strip()], lengths=length_list, chunk_sizes=chunk_list,
        chunk_mode=chunk_mode, window=window_len, group_size=group_size, block_size=block_size, top_k=top_k, heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, batch=batch, dtype=dtype, mode=mode, warmup=warmup, repeats=repeats,
        kernels=kernels or {},
    ))
    check_out_dir(out)
    console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "profile.csv"
    if not resume and csv_path.exists():
        csv_path.unlink()

    def show(r) -> None:
        console.print(f"{r.label:>18} L={format_length(r.length):>6}  {r.ms:9.3f} ms  {_mem(r.peak_mem_gib):>7} GiB  {r.tflops:7.1f} TFLOP/s  {r.status}")

    run_profile(
        variants=[v.strip() for v in variants.split(",") if v.strip()],
        lengths=length_list,
        heads=heads, kv_heads=kv_heads or None, head_dim=head_dim, batch=batch, dtype=dtype, mode=mode,
        chunk_sizes=chunk_list, chunk_mode=spec.chunk_mode, window=window_len, group_size=group_size,
        block_size=block_size, top_k=top_k, warmup=warmup, repeats=repeats, device=device, seed=seed,
        csv_path=csv_path, on_row=show, kernels=spec.kernels,
    )
    rows = read_rows(csv_path)
    table = Table(title=f"attention fwd+bwd ({mode}), {rows[0].device if rows else ''}")
    for col in ("variant", "L", "ms", "peak GiB", "TFLOP/s", "status"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.label, format_length(r.length), f"{r.ms:.3f}", _mem(r.peak_mem_gib), f"{r.tflops:.1f}", r.status)
    Console().print(table)
    if rows and all(math.isnan(r.peak_mem_gib) for r in rows):
        console.print("note: peak memory is measured on CUDA only (the CPU allocator keeps no peak); "
                      "memory shows n/a (nan in profile.csv) and no memory plots are drawn")
    if plots and rows:
        for p in plot_profile_rows(rows, out, display=display_label):
            console.print(f"wrote {p}")
    console.print(f"wrote {csv_path}")
