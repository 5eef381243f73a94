"""`spanlab harness`: lm-evaluation-harness tasks on a spanlab-loaded model (short-context regression check)."""

from __future__ import annotations

import typer

from spanlab.cli.app import app


@app.command("harness")
def harness_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model folder (HF, or a mamba_ssm checkpoint with --backend mamba_ssm)."),
    tasks: str = typer.Option(..., help="Comma-separated lm-eval tasks. Shipped, offline: spanlab_capitals,spanlab_proverbs. "
                                        "lm-eval's own tasks (its RULER and LongBench included) download their data."),
    out: str = typer.Option(..., "--out", "-o", help="Run folder; harness_results.json, harness_samples.jsonl and "
                                                     "harness_manifest.json go here (beside a RULER run's files)."),
    backend: str = typer.Option("hf", help="hf | mamba_ssm"),
    tokenizer: str | None = typer.Option(None, help="Tokenizer (default: the model's own; needed for mamba_ssm)."),
    attention: str = typer.Option("full", help="full | sw | s2 | se | se-nomem | se-random | se-landmark (patched into every attention layer)."),
    window: int | None = typer.Option(None, help="SW window."),
    group_size: int | None = typer.Option(None, help="S² group size."),
    chunk_size: int | None = typer.Option(None, help="SE chunk size."),
    block_size: int = typer.Option(32, help="SE memory block size."),
    top_k: int = typer.Option(8, help="SE retrieved blocks per chunk."),
    adapter: str | None = typer.Option(None, help="peft adapter folder to merge first (spanlab finetune's OUT/final)."),
    limit: int | None = typer.Option(None, help="At most this many documents per task."),
    num_fewshot: int | None = typer.Option(None, help="Few-shot examples (default: each task's own)."),
    batch_size: int = typer.Option(1, help="Requests per forward pass."),
    include: list[str] | None = typer.Option(None, help="Folder of extra lm-eval task YAMLs (repeatable; use absolute data_files paths)."),
    dtype: str = typer.Option("auto", help="auto | bfloat16 | float16 | float32"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    seed: int = typer.Option(0),
) -> None:
    """Run lm-eval tasks on the model as spanlab loads it (patched attention, merged adapters, mamba_ssm conversions)."""
    from spanlab.harness import HarnessConfig, run_harness

    cfg = HarnessConfig(model=model, tasks=[t.strip() for t in tasks.split(",") if t.strip()], out=out, backend=backend,
                        tokenizer=tokenizer, attention=attention, window=window, group_size=group_size,
                        chunk_size=chunk_size, block_size=block_size, top_k=top_k, adapter=adapter, limit=limit,
                        num_fewshot=num_fewshot, batch_size=batch_size, include=list(include or []), dtype=dtype,
                        device=device, seed=seed)
    doc = run_harness(cfg)
    for task in sorted(doc.get("tasks", {})):
        entry = doc["tasks"][task]
        metrics = ", ".join(f"{k} {v:.4f}" + (f" ± {entry['stderr'][k]:.4f}" if isinstance(entry["stderr"].get(k), float) else "")
                            for k, v in sorted(entry["metrics"].items()) if isinstance(v, (int, float)))
        typer.echo(f"{task}: {metrics} (n={entry['n']})")
    typer.echo(f"harness results written to {out}/harness_results.json")
