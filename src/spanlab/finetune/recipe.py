"""The whole `spanlab finetune` job: load, scale RoPE, adapt, patch attention, train, save, merge.

Output folder layout:
    out/finetune_config.yaml   the resolved settings
    out/train_log.jsonl        one line per step (loss, lr, tokens/s, peak memory)
    out/checkpoints/step-N/    resumable checkpoints (latest `keep` kept)
    out/final/                 peft adapters (+ trained embeddings / norms / convs)
    out/merged/                plain HF model with adapters folded in, and its tokenizer
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from spanlab.errors import SpanlabError
from spanlab.finetune.config import FinetuneConfig
from spanlab.finetune.data import load_training_data, task_mixture_data
from spanlab.finetune.patching import patch_attention
from spanlab.finetune.peft_recipes import apply_peft
from spanlab.finetune.rope import scale_rope
from spanlab.mixture.text import text_passes, text_token_count, warn_passes

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _check_model_dir(path: str) -> str:
    """The local folder `path` names (`builtin:NAME` resolved by spanlab.models.builtin)."""
    from spanlab.models.builtin import resolve_builtin

    path = resolve_builtin(path)
    if not Path(path).is_dir():
        raise SpanlabError(f"{path}: not a local model folder; spanlab never downloads models, save one locally first")
    return path


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    path = _check_model_dir(path)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise SpanlabError(f"{path}: cannot load a tokenizer ({str(e).splitlines()[0]}); give a local model folder") from None


def load_base_model(path: str, *, dtype: torch.dtype = torch.float32, rope_scaling: float | None = None) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    from spanlab.models.hf_compat import NO_HUB_KERNELS
    from spanlab.models.native import register_all

    register_all()  # spanlab's own classes load without remote code
    path = _check_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise SpanlabError(f"{path}: cannot read config.json ({str(e).splitlines()[0]})") from None
    if rope_scaling:
        scale_rope(config, rope_scaling)
    return AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, local_files_only=True, **NO_HUB_KERNELS)


def merge_adapters(base: str, adapter_dir: Path, out_dir: Path, *, rope_scaling: float | None = None, tokenizer: Any = None) -> Path:
    """Fold saved adapters into a fresh copy of the base model and save it in HF format.

    Reloading on the CPU works the same after DDP, FSDP or ZeRO training, where the in-memory
    model may be sharded.
    """
    from peft import PeftModel

    model = load_base_model(base, dtype=torch.float32, rope_scaling=rope_scaling)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return out_dir


def has_ssm_layers(model: Any) -> bool:
    """Whether the model mixes state-space / recurrent layers into its stack (Mamba2, Bamba,
    Zamba2, RecurrentGemma, ...): its architecture profile finds SSM convolutions in it."""
    from spanlab.models.arch import profile_for

    return bool(profile_for(model).conv_names(model))


def resolve_lora(cfg: FinetuneConfig, model: Any) -> FinetuneConfig:
    """`cfg` with rank/alpha filled in by architecture (the paper: r=32/α=64 hybrids, r=8/α=16
    Transformers), so the saved finetune_config.yaml says what ran."""
    rank, alpha = cfg.lora(has_ssm_layers(model))
    return cfg.model_copy(update={"rank": rank, "alpha": alpha})


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """The job; the config's kernel choices (`cfg.kernels`, spanlab.kernels) hold throughout."""
    from spanlab import kernels

    with kernels.use(cfg.kernels) as chosen:
        # The saved config records every kernel choice that ran, not only the forced ones, and the
        # precision `auto` resolved to.
        return _run_finetune(cfg.model_copy(update={"kernels": chosen.model_dump(),
                                                    "mixed_precision": resolve_precision(cfg)}))


def resolve_precision(cfg: FinetuneConfig) -> str:
    """The precision a fine-tune runs in: pre-training's `auto` rule (spanlab.train.loop), with bf16
    weights counting as a reason for bf16."""
    from spanlab.train.loop import resolve_mixed_precision

    return resolve_mixed_precision(cfg.mixed_precision, bf16_weights=cfg.weights_dtype == "bf16")


def _text_use(cfg: FinetuneConfig, dataset: Any, tokenizer: Any, *, world_size: int) -> tuple[int, float | None]:
    """(natural-text tokens the run can read, times it reads them; spanlab.mixture.text)."""
    rows = cfg.steps * cfg.micro_batch_size * cfg.grad_accum * world_size
    if cfg.task_fraction <= 0:
        # Packed sequences: every row is text, and the dataset holds all the text there is.
        return len(dataset) * cfg.context, text_passes(rows, len(dataset))
    n = text_token_count(tokenizer, cfg.data[0] if cfg.data else None, cfg.cache_dir, text_field=cfg.text_field)
    # Text rows only (task rows' fill after the answer reads some more): a lower bound.
    return n, text_passes((1.0 - cfg.task_fraction) * rows * cfg.context, n)


def _run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    from spanlab.train import TrainConfig, train
    from spanlab.train.loop import make_accelerator

    _check_model_dir(cfg.model)
    acc = make_accelerator(cfg.mixed_precision)
    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cfg.model)
    with acc.main_process_first():  # rank 0 tokenises (builds the stream), the others reuse its cache
        if cfg.task_fraction > 0:
            # One row per sequence the run reads, so every row is seen once (spanlab.train.order).
            dataset = task_mixture_data(
                context=cfg.context,
                num_rows=cfg.steps * cfg.micro_batch_size * cfg.grad_accum * acc.num_processes,
                tokenizer=tokenizer,
                seed=cfg.seed,
                task_fraction=cfg.task_fraction,
                tasks=cfg.tasks,
                loss=cfg.loss,
                heldout=cfg.heldout,
                text_source=cfg.data[0] if cfg.data else None,
                cache_dir=cfg.cache_dir,
                text_field=cfg.text_field,
                progress=cfg.progress and acc.is_main_process,
            )
        else:
            dataset = load_training_data(
                cfg.data,
                tokenizer,
                cfg.context,
                mix=cfg.mix,
                seed=cfg.seed,
                cache_dir=cfg.cache_dir,
                text_field=cfg.text_field,
                progress=cfg.progress and acc.is_main_process,
            )
    text_tokens, passes = _text_use(cfg, dataset, tokenizer, world_size=acc.num_processes)
    if acc.is_main_process:
        warn_passes(passes, text_tokens=text_tokens, what=f"this fine-tune ({cfg.steps} steps)")
    model = load_base_model(cfg.model, dtype=_DTYPES[cfg.weights_dtype], rope_scaling=cfg.rope_scaling)
    cfg = resolve_lora(cfg, model)
    if acc.is_main_process:
        (out / "finetune_config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    # Adapter initialisation draws from the global RNG: seed it, so a run does not depend on what
    # ran before it in the process (a study fine-tunes several models in one) and a resumed study
    # starts each fine-tune from the same adapters as an uninterrupted one.
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    model = apply_peft(model, cfg.peft, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.lora_dropout,
                       verbose=acc.is_main_process)
    if cfg.weights_dtype != "fp32":
        # Optimiser state and updates of the trained tensors stay in fp32; the frozen base is bf16.
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    patch_attention(model, cfg.attention, **cfg.attention_params())

    tcfg = TrainConfig(
        out_dir=out,
        max_steps=cfg.steps,
        micro_batch_size=cfg.micro_batch_size,
        grad_accum=cfg.grad_accum,
        lr=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        schedule=cfg.schedule,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        mixed_precision=cfg.mixed_precision,
        gradient_checkpointing=cfg.gradient_checkpointing,
        recompute=cfg.recompute,
        loss_chunk=cfg.loss_chunk,
        offload_activations=cfg.offload_activations,
        compile=cfg.compile,
        save_every=cfg.save_every,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    result = train(model, dataset, tcfg, accelerator=acc)
    summary: dict[str, Any] = {
        "steps": result.steps,
        "tokens": result.tokens,
        "final_loss": result.losses[-1] if result.losses else None,
        "tokens_per_s": result.tokens_per_s,
        "peak_memory_gb": result.peak_memory_gb,
        "adapters": str(result.final_dir),
        "sequences": len(dataset),
        "text_tokens": text_tokens,
        "text_passes": passes,
        "is_main_process": acc.is_main_process,
    }
    if acc.is_main_process:
        tokenizer.save_pretrained(str(result.final_dir))
        if cfg.merge:
            summary["merged"] = str(
                merge_adapters(cfg.model, result.final_dir, out / "merged", rope_scaling=cfg.rope_scaling, tokenizer=tokenizer)
            )
    acc.wait_for_everyone()
    # Leave the in-memory model on full attention, as evaluation expects.
    patch_attention(result.extra["model"], "full")
    return summary
