"""Typed settings of the generic training loop; every field maps to one CLI flag of its callers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """What `spanlab.train.train` needs besides a model and a dataset.

    Token budget per optimizer step = micro_batch_size x grad_accum x world_size x sequence length.
    """

    model_config = ConfigDict(extra="forbid")

    out_dir: Path
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    micro_batch_size: int = Field(1, ge=1, description="sequences per device per forward pass")
    grad_accum: int = Field(8, ge=1, description="micro-batches accumulated per optimizer step")
    lr: float = Field(2e-4, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of lr (cosine/linear)")
    warmup_steps: int = Field(20, ge=0, description="linear warmup (a run shorter than this never leaves it)")
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float | None = Field(1.0, description="clip the global grad norm; None disables")
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    gradient_checkpointing: bool = True
    recompute: Literal["all", "elementwise"] = Field(
        "all", description="with gradient checkpointing, what the backward recomputes: all = each layer's whole "
        "forward; elementwise = only the ops between matmuls and attention kernels, whose outputs are kept "
        "(more memory, no second forward of the GEMMs; spanlab.train.recompute)")
    loss_chunk: int = Field(0, ge=0, description="rows per LM-head + cross-entropy chunk of the default loss "
                            "(never builds the full logits); 0 = the model's own dense loss")
    compile: bool = Field(False, description="torch.compile each decoder layer's MLP and norms (regional; "
                          "attention and SSM mixers stay eager; spanlab.train.compile)")
    offload_activations: bool = Field(False, description="keep the tensors saved for backward in (pinned) CPU "
                                      "memory during the forward (torch.autograd.graph.save_on_cpu)")
    save_every: int = Field(100, ge=0, description="checkpoint every N steps; 0 = only at the end")
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    log_every: int = Field(1, ge=1)
    seed: int = 0
    resume: bool = Field(True, description="continue from the last checkpoint in out_dir if one exists")
    progress: bool = True
    save_final: bool = Field(True, description="save_pretrained the (unwrapped) model to out_dir/final")
