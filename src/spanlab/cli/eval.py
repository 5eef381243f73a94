"""`spanlab eval`: run a model over a task grid (or sample files) into a resumable run directory.

The flags are the fields of `spanlab.eval.EvalConfig`: the command hands them to that model, whose
defaults and limits are the only ones (a bad value is a one-line error naming the flag), and then
checks the output folder, tasks, lengths and sample files before any model is loaded.
"""

from __future__ import annotations

import typer

from spanlab.cli._common import kernels_help
from spanlab.cli.app import app
from spanlab.errors import SpanlabError
from spanlab.eval.config import EvalConfig

_D = {name: f.default for name, f in EvalConfig.model_fields.items()}


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model directory, hub name or builtin:NAME (e.g. builtin:smollm2; see docs/eval.md), or served model name for --backend openai."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory (created; re-running resumes it)."),
    backend: str = typer.Option(_D["backend"], help="hf | mamba_ssm | openai | vllm"),
    suite: str | None = typer.Option(None, help="ruler | niah-depth | niah-format"),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks, e.g. niah_single_1,vt (or suite labels)."),
    lengths: str | None = typer.Option(None, help="Comma-separated lengths in tokens, e.g. 4096,8192 or 4k,8k (k = 1024; 1.5k = 1536)."),
    depths: str | None = typer.Option(None, help="Needle depths in percent for NIAH tasks, e.g. 0,50,100."),
    num_samples: int = typer.Option(_D["num_samples"], "--num-samples", "-n", help="Samples per task and length."),
    template: str = typer.Option(_D["template"], help="Prompt template (base, chat, or a named model template)."),
    seed: int = typer.Option(_D["seed"], help="Seed of the generated samples."),
    samples: list[str] | None = typer.Option(None, help="Sample JSONL files or directories from `spanlab generate` (repeatable)."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer (default: the model's own)."),
    dtype: str = typer.Option(_D["dtype"], help="auto | bfloat16 | float16 | float32"),
    device: str = typer.Option(_D["device"], help="auto | cpu | cuda | cuda:N"),
    attn_implementation: str | None = typer.Option(None, help="sdpa | flash_attention_2 | flex_attention | eager"),
    attention: str = typer.Option("full", help="Attention to evaluate with (hf backend): full (the model's own), or a fine-tuning variant over the KV cache (Expansion Span Fig. 11): sw[:window=4096] | se[:chunk_size=2048,block_size=32,top_k=8] | se-landmark[:...] | se-meanq[:...] | se-nomem[:...]; one prompt per batch (docs/finetune.md)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    prefill_chunk: int = typer.Option(_D["prefill_chunk"], help="Prefill long prompts of recurrent/hybrid models (Mamba2, Bamba, Zamba2, FalconH1, RWKV) this many tokens at a time, so memory does not grow with the prompt; 0 = one shot."),
    batch_size: int = typer.Option(_D["batch_size"], help="Most prompts per batch (halved automatically on CUDA OOM)."),
    max_batch_tokens: int = typer.Option(_D["max_batch_tokens"], help="Cap on batch size x longest prompt."),
    stop: list[str] | None = typer.Option(None, help="Stop string (repeatable; RULER's default is none). '\\n' is a newline."),
    max_new_tokens: int | None = typer.Option(None, help="Override every task's tokens_to_generate."),
    allow_extrapolation: bool = typer.Option(False, "--allow-extrapolation", help="Allow lengths above the model's maximum position."),
    train_length: int | None = typer.Option(None, help="The model's training length, marked in reports."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1"),
    api_key: str | None = typer.Option(None, envvar="OPENAI_API_KEY"),
    concurrency: int = typer.Option(_D["concurrency"], help="HTTP requests in flight (openai backend)."),
    timeout: float = typer.Option(_D["timeout"], help="Seconds per HTTP request."),
    retries: int = typer.Option(_D["retries"], help="Retries per HTTP request."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    kernels: str | None = typer.Option(None, help=kernels_help()),
) -> None:
    """Evaluate a model on RULER-style tasks; results go to OUT/results.jsonl and OUT/manifest.json."""
    from spanlab.cli._common import check_out_dir, quiet_transformers
    from spanlab.configs import validated
    from spanlab.eval import run_eval
    from spanlab.eval.runner import check_config

    if attention != "full":
        from spanlab.models.variant_attention import PREFIX, parse_spec

        if backend != "hf" or attn_implementation:
            raise SpanlabError("--attention sw/se runs on the hf backend and replaces --attn-implementation; drop one")
        attn_implementation = PREFIX + parse_spec(attention).describe()

    cfg = validated(EvalConfig, dict(
        model=model, out=out, backend=backend, suite=suite, tasks=[t for t in (tasks or "").split(",") if t.strip()],
        lengths=lengths or [], depths=depths, num_samples=num_samples,
        template=template, seed=seed, samples=list(samples or []), tokenizer=tokenizer, dtype=dtype, device=device,
        attn_implementation=attn_implementation, trust_remote_code=trust_remote_code, prefill_chunk=prefill_chunk,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens, stop=[s.encode().decode("unicode_escape") for s in (stop or [])],
        max_new_tokens=max_new_tokens, allow_extrapolation=allow_extrapolation, train_length=train_length,
        base_url=base_url, api_key=api_key, concurrency=concurrency, timeout=timeout, retries=retries, progress=progress,
        kernels=kernels or {},
    ))
    check_out_dir(out)
    checked = check_config(cfg)  # tasks, template, sample files: all before the model loads
    from spanlab.report.tables import summary_table

    with quiet_transformers():
        records = run_eval(cfg, checked=checked)
    from spanlab.eval.shard import rank_world

    if rank_world()[0] == 0:
        from rich.console import Console

        Console().print(summary_table(records, title=f"{model} → {out}"))
