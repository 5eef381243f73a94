"""`spanlab serve`: an OpenAI-compatible /v1/completions server over a local model."""

from __future__ import annotations

import typer

from spanlab.cli.app import app


@app.command("serve")
def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, hub name or builtin:NAME."),
    backend: str = typer.Option("hf", help="hf | mamba_ssm"),
    tokenizer: str | None = typer.Option(None),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option("auto"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    name: str | None = typer.Option(None, help="Model id clients send (default: --model)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
) -> None:
    """Serve greedy completions so `spanlab eval --backend openai` (or any client) can use the model."""
    from types import SimpleNamespace

    from spanlab.errors import SpanlabError
    from spanlab.models import load_backend
    from spanlab.models.serve import CompletionServer

    if backend not in ("hf", "mamba_ssm"):
        raise SpanlabError("spanlab serve hosts local models: use --backend hf or mamba_ssm")
    cfg = SimpleNamespace(model=model, backend=backend, tokenizer=tokenizer, dtype=dtype, device=device,
                          attn_implementation=None, trust_remote_code=trust_remote_code)
    srv = CompletionServer(load_backend(cfg), name or model, host, port)
    typer.echo(f"serving {name or model} at {srv.url}/completions (Ctrl-C stops)")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
