"""A generic causal-LM training loop on accelerate, shared by fine-tuning and pre-training.

Works for any model whose forward takes `input_ids` and `labels` and returns `.loss` (every HF
causal LM, with or without PEFT adapters), or for any model with a custom `loss_fn`. Run it under
`accelerate launch --config_file configs/accelerate/<ddp|fsdp|zero2>.yaml` for several GPUs
(`fsdp_cpu.yaml` with `ACCELERATE_USE_CPU=1`: FSDP on CPU processes, see spanlab.train.distributed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spanlab.errors import SpanlabError
from spanlab.train.checkpoint import (
    STATE_FILE,
    latest_checkpoint,
    read_state,
    save_checkpoint,
)
from spanlab.train.config import TrainConfig
from spanlab.train.loss import chunked_causal_lm_loss
from spanlab.train.order import SampleOrder
from spanlab.train.schedule import lr_multiplier

LOG_FILE = "train_log.jsonl"

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
StepHook = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    steps: int
    tokens: int
    losses: list[float]
    log_path: Path
    final_dir: Path | None
    resumed_from: int = 0
    tokens_per_s: float = float("nan")
    peak_memory_gb: float | None = None
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def collate(items: Sequence[Any]) -> Batch:
    """Stack rows that are 1-D token tensors/arrays or dicts of them into a batch dict."""
    if isinstance(items[0], Mapping):
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}
    return {"input_ids": torch.stack([torch.as_tensor(it, dtype=torch.long) for it in items])}


def default_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    labels = batch.get("labels", batch["input_ids"])
    out = model(input_ids=batch["input_ids"], labels=labels, use_cache=False)
    return out.loss


def resolve_mixed_precision(mixed_precision: str, *, bf16_weights: bool = False) -> str:
    """`auto`: bf16 on CUDA (and with bf16 weights, which need bf16 autocast), no autocast elsewhere:
    a CPU without native bf16 (AVX2 only) emulates it, ~7x slower steps. Any other choice stands."""
    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if bf16_weights or torch.cuda.is_available() else "no"


def make_accelerator(mixed_precision: str = "bf16", **kwargs: Any) -> Any:
    """An `Accelerator`; in a single process it may be re-made with other settings (tests, notebooks)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from spanlab.train.distributed import finish_setup

    try:
        acc = Accelerator(mixed_precision=mixed_precision, **kwargs)
    except ValueError as e:
        # accelerate keeps one global state per process; a second run in the same process with
        # another precision must drop it first. Under `accelerate launch` each rank runs one job.
        if "already been initialized" not in str(e) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        acc = Accelerator(mixed_precision=mixed_precision, **kwargs)
    return finish_setup(acc)


def _trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SpanlabError("the model has no trainable parameters; apply a PEFT recipe or unfreeze weights")
    return params


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Biases, norms and other 1-D tensors get no weight decay (the usual AdamW recipe).
    decay, no_decay = [], []
    for p in _trainable_parameters(model):
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, fused=fused or None)


def _enable_checkpointing(model: torch.nn.Module, recompute: str = "all") -> None:
    # transformers 5.23 renamed the method (5.17 has only the old name, 5.23 warns on it).
    from spanlab.train.recompute import checkpoint_kwargs

    kwargs = checkpoint_kwargs(recompute)  # type: ignore[arg-type]
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise SpanlabError(
            f"{type(model).__name__} does not support gradient checkpointing; pass --no-gradient-checkpointing"
        )
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False


def _rewrite_log(path: Path, upto_step: int) -> list[float]:
    """Keep log lines of steps <= upto_step (a crash may have logged steps past the checkpoint)."""
    if not path.exists():
        return []
    kept, losses = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("step", 0) <= upto_step:
            kept.append(line)
            losses.append(rec["loss"])
    path.write_text("".join(l + "\n" for l in kept))
    return losses


def train(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    config: TrainConfig,
    *,
    loss_fn: LossFn = default_loss,
    on_step: StepHook | None = None,
    accelerator: Any | None = None,
    shuffle: bool = True,
) -> TrainResult:
    """Train `model` on rows of `dataset` for `config.max_steps` optimizer steps.

    `dataset[i]` is one packed sequence (a 1-D LongTensor of token ids, or a dict with
    `input_ids` and optionally `labels`). Writes `train_log.jsonl` (one line per logged step),
    checkpoints under `out_dir/checkpoints`, and the final model under `out_dir/final`.
    If a complete checkpoint exists and `config.resume`, training continues from it and the loss
    curve matches an uninterrupted run with the same seed. `on_step(record)` is called on every
    process after each optimizer step (for custom logging or early stopping via an exception).
    """
    from accelerate.utils import set_seed

    if len(dataset) == 0:
        raise SpanlabError("the training dataset is empty; give more text or a shorter --context")
    out_dir = Path(config.out_dir)
    acc = accelerator or make_accelerator(config.mixed_precision)
    set_seed(config.seed)
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)

    if config.gradient_checkpointing:
        _enable_checkpointing(model, config.recompute)
    if config.compile:
        from spanlab.train.compile import compile_regions

        compiled = compile_regions(model)
        if not compiled:
            raise SpanlabError(f"--compile found no MLP or RMSNorm modules to compile in {type(model).__name__}")
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(
            s, warmup=config.warmup_steps, total=config.max_steps, kind=config.schedule, min_ratio=config.min_lr_ratio
        ),
    )
    start_step, tokens_seen, losses = 0, 0, []
    log_path = out_dir / LOG_FILE
    ckpt = latest_checkpoint(out_dir) if config.resume else None
    if ckpt is not None:
        state = read_state(ckpt)
        for key in ("micro_batch_size", "grad_accum", "world_size", "seed"):
            was, now = state[key], (acc.num_processes if key == "world_size" else getattr(config, key))
            if was != now:
                raise SpanlabError(
                    f"cannot resume {ckpt}: it was written with {key}={was}, this run has {now}; "
                    f"use the same settings or a new --out directory"
                )

    # The scheduler stays unprepared: accelerate's wrapper would step it once per process per
    # optimizer step (it assumes per-rank epochs shrink), making warmup end early on N GPUs.
    base_model, forward_before = model, model.__dict__.get("forward", _MISSING)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    if ckpt is not None:
        acc.load_state(str(ckpt))
        start_step, tokens_seen = state["step"], state["tokens"]
        if acc.is_main_process:
            losses = _rewrite_log(log_path, start_step)
    elif acc.is_main_process and log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh curve
    acc.wait_for_everyone()

    order = SampleOrder(len(dataset), config.seed, shuffle=shuffle)
    model.train()
    pbar = None
    if config.progress and acc.is_main_process:
        from tqdm.auto import tqdm

        pbar = tqdm(total=config.max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    cuda = torch.cuda.is_available() and acc.device.type == "cuda"
    if loss_fn is default_loss and config.loss_chunk:
        loss_fn = functools.partial(chunked_causal_lm_loss, chunk=config.loss_chunk)
    if cuda:
        torch.cuda.reset_peak_memory_stats(acc.device)
    log = open(log_path, "a") if acc.is_main_process else None
    t_start = time.perf_counter()
    t_window, tok_window = t_start, 0
    steady_tokens, steady_time = 0, 0.0
    step = start_step
    try:
        while step < config.max_steps:
            t_step = time.perf_counter()
            step_loss = torch.zeros((), device=acc.device)
            step_tokens = 0
            for micro in range(config.grad_accum):
                global_micro = step * config.grad_accum + micro
                rows = order.micro_batch(global_micro, config.micro_batch_size, acc.process_index, acc.num_processes)
                batch = {k: v.to(acc.device) for k, v in collate([dataset[i] for i in rows]).items()}
                step_tokens += batch["input_ids"].numel()
                # Gradients are all-reduced only on the last micro-batch of the step.
                sync = micro == config.grad_accum - 1
                ctx = acc.no_sync(model) if not sync else _nullcontext()
                with ctx, acc.autocast():
                    # Offload packs what the forward saves; the backward unpacks it wherever it runs,
                    # and checkpoint recomputation inside the backward keeps its tensors on the GPU.
                    with _offload(config.offload_activations, cuda):
                        loss = loss_fn(model, batch)
                    if not torch.isfinite(loss):
                        raise SpanlabError(
                            f"loss became {loss.item()} at step {step + 1}; lower --lr or use bf16 instead of fp16"
                        )
                    acc.backward(loss / config.grad_accum)
                step_loss += loss.detach() / config.grad_accum
            if config.max_grad_norm is not None:
                grad_norm = acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            else:
                grad_norm = float("nan")
            lr_used = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            mean_loss = acc.reduce(step_loss, reduction="mean").item()
            global_tokens = step_tokens * acc.num_processes
            tokens_seen += global_tokens
            tok_window += global_tokens
            losses.append(mean_loss)
            now = time.perf_counter()
            if step > start_step + 1:  # the first step pays compilation / allocator warm-up
                steady_tokens += global_tokens
                steady_time += now - t_step
            record = {
                "step": step,
                "loss": mean_loss,
                "lr": lr_used,
                "grad_norm": grad_norm,
                "tokens": tokens_seen,
                "step_s": now - t_step,
            }
            if step % config.log_every == 0 or step == config.max_steps:
                record["tokens_per_s"] = tok_window / max(now - t_window, 1e-9)
                if cuda:
                    record["peak_memory_gb"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
                t_window, tok_window = now, 0
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{record.get('tokens_per_s', 0):,.0f}")
            if on_step is not None:
                on_step(record)
            if config.save_every and (step % config.save_every == 0 or step == config.max_steps):
                state = {
                    "step": step,
                    "tokens": tokens_seen,
                    "micro_batch_size": config.micro_batch_size,
                    "grad_accum": config.grad_accum,
                    "world_size": acc.num_processes,
                    "seed": config.seed,
                }
                save_checkpoint(acc, out_dir, step, state, config.keep_checkpoints)
                t_window, tok_window = time.perf_counter(), 0  # throughput excludes checkpoint writes
    finally:
        if log is not None:
            log.close()
        if pbar is not None:
            pbar.close()
        _release(acc, base_model, forward_before, model, optimizer, scheduler)

    wall = time.perf_counter() - t_start
    final_dir = None
    if config.save_final:
        final_dir = out_dir / "final"
        acc.wait_for_everyone()
        unwrapped = acc.unwrap_model(model)
        state_dict = acc.get_state_dict(model)
        if acc.is_main_process:
            if hasattr(unwrapped, "save_pretrained"):
                unwrapped.save_pretrained(str(final_dir), state_dict=state_dict)
            else:
                final_dir.mkdir(parents=True, exist_ok=True)
                torch.save(state_dict, final_dir / "model.pt")
            (final_dir / STATE_FILE).write_text(json.dumps({"step": step, "tokens": tokens_seen}))
        acc.wait_for_everyone()
    return TrainResult(
        steps=step,
        tokens=tokens_seen,
        losses=losses,
        log_path=log_path,
        final_dir=final_dir,
        resumed_from=start_step,
        tokens_per_s=steady_tokens / steady_time if steady_time > 0 else float("nan"),
        peak_memory_gb=torch.cuda.max_memory_allocated(acc.device) / 2**30 if cuda else None,
        wall_s=wall,
        extra={"model": acc.unwrap_model(model), "accelerator": acc},
    )


_MISSING = object()


def _offload(enabled: bool, cuda: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=cuda)


def _release(acc: Any, base_model: torch.nn.Module, forward_before: Any, *prepared: Any) -> None:
    """Undo what `acc.prepare` attached, so the model is freed as soon as the caller drops it.

    With mixed precision, accelerate stores bound methods of the model in the model's own
    `__dict__` (`forward` wrapped in autocast, `_original_forward`): a reference cycle that only a
    gc pass frees. Until one runs, the model's weights, LoRA grads and the optimizer state stay
    allocated, so a second model trained in the same process (a benchmark, a study) pays for both,
    and `torch.cuda.empty_cache()` frees nothing. The loop autocasts itself (`acc.autocast()`), so
    the wrapper is not needed after training. The accelerator also forgets this run's model,
    optimizer and scheduler: a caller's accelerator reused for another `train()` would otherwise
    keep them alive and save them in that run's checkpoints.
    """
    base_model.__dict__.pop("_original_forward", None)
    if forward_before is _MISSING:
        base_model.__dict__.pop("forward", None)
    else:
        base_model.__dict__["forward"] = forward_before
    for name in ("_models", "_optimizers", "_schedulers", "_custom_objects"):
        held = getattr(acc, name, None)
        if isinstance(held, list):
            held[:] = [o for o in held if not any(o is p for p in prepared)]


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
