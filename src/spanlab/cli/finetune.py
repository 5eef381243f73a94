"""`spanlab finetune`: context-extension fine-tuning (LoRA / LoRA+ / HyLoRA with Full/SW/S²/SE attention)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from spanlab.attention.registry import VARIANTS
from spanlab.cli._common import kernels_help
from spanlab.cli.app import app
from spanlab.errors import SpanlabError


def _floats(flag: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpanlabError(f"{flag} takes comma-separated numbers, e.g. 0.7,0.3; got {text!r}") from None


@app.command("finetune")
def finetune(
    model: str | None = typer.Option(None, help="Local HF model folder (base model)."),
    data: list[str] | None = typer.Option(None, help="Training text: txt / jsonl / parquet file or folder (repeatable; "
                                          "one with --task-fraction, default there: the essays)."),
    out: Path | None = typer.Option(None, help="Output folder (checkpoints, adapters, merged model)."),
    config: Path | None = typer.Option(None, help="YAML file with these settings; flags given here override it."),
    mix: str | None = typer.Option(None, help="Mixing weights, one per --data, e.g. 0.7,0.3."),
    text_field: str | None = typer.Option(None, help="Text field of jsonl / parquet rows [text]."),
    cache_dir: Path | None = typer.Option(None, help="Token cache folder [~/.cache/spanlab/tokens]."),
    task_fraction: float | None = typer.Option(None, help="Share of RULER-format task rows, as in `spanlab train` "
                                               "(0 = text only) [0]."),
    tasks: str | None = typer.Option(None, help="Tasks of the mixture, comma-separated [spanlab.pretrain.DEFAULT_TASKS]."),
    loss: str | None = typer.Option(None, help="all | answers (task rows train on their answer only) [all]."),
    heldout: list[str] | None = typer.Option(None, help="Eval sample JSONL files/folders whose needles task rows "
                                             "must not contain (repeatable)."),
    context: str | None = typer.Option(None, help="Training sequence length, e.g. 8192 or 8k [8192]."),
    attention: str | None = typer.Option(None, help=f"{VARIANTS.help(patchable=True)} [se]."),
    window: str | None = typer.Option(None, help="SW window, e.g. 4k [context/2: the paper's 4096 at 8192]."),
    group_size: str | None = typer.Option(None, help="S² group size, e.g. 2k [context/4]."),
    chunk_size: str | None = typer.Option(None, help="SE chunk size(s), comma-separated; several = one drawn per layer call [2048,4096 from context 8192; context/4,context/2 below]."),
    block_size: int | None = typer.Option(None, help="SE memory block size [32]."),
    top_k: int | None = typer.Option(None, help="SE retrieved blocks per chunk [8]."),
    peft: str | None = typer.Option(None, help="lora | lora+ | hylora [hylora]."),
    rank: int | None = typer.Option(None, help="LoRA rank [32 for hybrids (SSM layers), 8 for Transformers]."),
    alpha: int | None = typer.Option(None, help="LoRA alpha [2 x rank: 64 hybrids, 16 Transformers]."),
    rope_scaling: float | None = typer.Option(None, help="Linear RoPE interpolation factor (Transformers)."),
    steps: int | None = typer.Option(None, help="Optimizer steps [1000]."),
    micro_batch_size: int | None = typer.Option(None, help="Sequences per GPU per forward [1]."),
    grad_accum: int | None = typer.Option(None, help="Gradient accumulation steps [8]."),
    lr: float | None = typer.Option(None, help="Learning rate [2e-4; 2e-5 for s2]."),
    warmup_steps: int | None = typer.Option(None, help="Linear warmup steps [20]."),
    schedule: str | None = typer.Option(None, help="constant | linear | cosine [constant]."),
    mixed_precision: str | None = typer.Option(None, help="auto | bf16 | fp16 | no [auto: bf16 on CUDA, no (fp32) on CPU]."),
    weights_dtype: str | None = typer.Option(None, help="Frozen base weights: fp32 | bf16 [fp32]."),
    gradient_checkpointing: bool | None = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    recompute: str | None = typer.Option(None, help="What checkpointing recomputes in the backward: all (each "
                                         "layer's forward) | elementwise (keeps matmul and attention-kernel "
                                         "outputs: no second forward of the GEMMs, ~2 GB more a layer at 2.7B x "
                                         "32K) [all]."),
    loss_chunk: str | None = typer.Option(None, help="Rows per LM-head + cross-entropy chunk, e.g. 4k; the full "
                                          "(context, vocab) logits are never built; 0 = dense loss [4096]."),
    offload_activations: bool | None = typer.Option(None, "--offload-activations/--no-offload-activations",
                                                    help="Keep tensors saved for backward in pinned CPU memory "
                                                    "(64K-128K contexts) [off]."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile",
                                        help="torch.compile each decoder layer's MLP and norms (fused elementwise "
                                        "work; attention and SSM mixers stay eager; compiles on the first step) [off]."),
    save_every: int | None = typer.Option(None, help="Checkpoint every N steps [100]."),
    seed: int | None = typer.Option(None, help="Seed for data order and init [0]."),
    merge: bool | None = typer.Option(None, "--merge/--no-merge", help="Save the merged HF model [merge]."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    kernels: str | None = typer.Option(None, help=kernels_help()),
) -> None:
    """Fine-tune a model for longer context; resumes from OUT's last checkpoint if there is one."""
    from spanlab.cli._common import check_out_dir
    from spanlab.configs import validated
    from spanlab.finetune.config import FinetuneConfig

    flags = {
        "model": model, "data": data or None, "out": out, "mix": _floats("--mix", mix), "text_field": text_field,
        "cache_dir": cache_dir, "task_fraction": task_fraction,
        "tasks": [x.strip() for x in tasks.split(",") if x.strip()] if tasks is not None else None, "loss": loss,
        "heldout": heldout or None, "context": context, "attention": attention, "window": window,
        "group_size": group_size, "chunk_size": chunk_size, "block_size": block_size,
        "top_k": top_k, "peft": peft, "rank": rank, "alpha": alpha, "rope_scaling": rope_scaling, "steps": steps,
        "micro_batch_size": micro_batch_size, "grad_accum": grad_accum, "lr": lr, "warmup_steps": warmup_steps,
        "schedule": schedule, "mixed_precision": mixed_precision, "weights_dtype": weights_dtype,
        "gradient_checkpointing": gradient_checkpointing, "recompute": recompute, "loss_chunk": loss_chunk,
        "offload_activations": offload_activations, "compile": compile, "save_every": save_every, "seed": seed, "merge": merge,
        "progress": progress, "kernels": kernels,
    }
    if config is not None:
        cfg = FinetuneConfig.from_yaml(config, **flags)
    else:
        missing = [f"--{k}" for k in ("model", "out") if flags[k] is None]
        if flags["data"] is None and not task_fraction:
            missing.append("--data (or --task-fraction)")
        if missing:
            raise SpanlabError(f"missing {', '.join(missing)}; give them or a --config YAML file")
        cfg = validated(FinetuneConfig, {k: v for k, v in flags.items() if v is not None})
    check_out_dir(cfg.out)
    from spanlab.train.checkpoint import latest_checkpoint, read_state

    ckpt = latest_checkpoint(Path(cfg.out))
    if ckpt is not None:
        step = read_state(ckpt).get("step", "?")
        print(f"resuming {cfg.out} from {ckpt.name} (step {step} of {cfg.steps})", file=sys.stderr, flush=True)

    from spanlab.cli._common import quiet_transformers
    from spanlab.finetune.recipe import run_finetune

    with quiet_transformers():
        summary = run_finetune(cfg)
    if not summary["is_main_process"]:
        return
    from rich.console import Console

    Console(stderr=True).print(
        f"done: {summary['steps']} steps, {summary['tokens']:,} tokens, final loss {summary['final_loss']:.4f}, "
        f"{summary['tokens_per_s']:,.0f} tokens/s; adapters in {summary['adapters']}"
        + (f", merged model in {summary['merged']}" if summary.get("merged") else "")
    )
