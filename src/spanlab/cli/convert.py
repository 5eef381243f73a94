"""`spanlab convert`: mamba_ssm-format checkpoint → transformers checkpoint (no mamba-ssm needed)."""

from __future__ import annotations

import typer

from spanlab.cli.app import app


@app.command("convert")
def convert_cmd(
    src: str = typer.Argument(..., help="mamba_ssm checkpoint directory (config.json + pytorch_model.bin)."),
    out: str = typer.Argument(..., help="Directory for the transformers checkpoint."),
    target: str | None = typer.Option(None, help="Force mamba2 | llama | bamba | mamba2attn (default: chosen from the config)."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer to save beside it (the seed's: EleutherAI/gpt-neox-20b)."),
    dtype: str | None = typer.Option(None, help="Cast weights: bfloat16 | float16 | float32."),
) -> None:
    """Convert so `spanlab eval --backend hf --model OUT` runs it with plain transformers."""
    from spanlab.cli._common import check_out_dir
    from spanlab.models.mamba_ssm import convert_checkpoint

    check_out_dir(out, "OUT")
    dest = convert_checkpoint(src, out, target=target, tokenizer=tokenizer, dtype=dtype)
    typer.echo(f"converted {src} -> {dest}")
