"""`spanlab finetune` settings; the YAML config form has exactly these fields (see configs/finetune/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spanlab.errors import SpanlabError

# The paper's recipe: S² needs a 10x smaller lr than the others.
DEFAULT_LR = {"s2": 2e-5}
DEFAULT_LR_OTHER = 2e-4

# Expansion Span, sec. 4 and App. B: SE-Attn draws each layer call's chunk size from {2048, 4096}
# at context 8192 (fixed chunks do worse, Fig. 3b); SW-Attn uses a 4096 window at 8192.
PAPER_CHUNK_SIZES = (2048, 4096)
# LoRA rank / alpha: r=32, α=64 for the Mamba-2-Hybrid, r=8, α=16 for Transformers (LongLoRA's).
LORA_HYBRID = (32, 64)
LORA_TRANSFORMER = (8, 16)


def default_chunk_sizes(context: int) -> tuple[int, ...]:
    """The paper's {2048, 4096} when the context holds at least two chunks of the larger size
    (context >= 8192); shorter contexts keep the paper's proportions at 8192, {context/4, context/2},
    so the random draw (the regulariser of Fig. 3b) survives at small scale."""
    if context >= 2 * PAPER_CHUNK_SIZES[-1]:
        return PAPER_CHUNK_SIZES
    return tuple(sorted({max(1, context // 4), max(1, context // 2)}))


def default_window(context: int) -> int:
    """SW window: the paper's 4096 at 8192 is context/2; the same ratio at other contexts."""
    return max(1, context // 2)


def default_lora(hybrid: bool) -> tuple[int, int]:
    return LORA_HYBRID if hybrid else LORA_TRANSFORMER


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="local Hugging Face model folder")
    data: list[str] = Field(default_factory=list, description="txt / jsonl / parquet files or folders")
    out: Path
    mix: list[float] | None = Field(None, description="one weight per --data source, e.g. 0.7,0.3")
    text_field: str = "text"
    cache_dir: Path | None = None
    # The pre-training mixture of spanlab.pretrain at the fine-tuning context: this fraction of rows
    # are RULER-format task samples (then text), the rest windows of `data` (default: the essays).
    task_fraction: float = Field(0.0, ge=0, le=1, description="share of RULER-format task rows (0 = text only)")
    tasks: list[str] | None = Field(None, description="tasks of the mixture (default spanlab.pretrain.DEFAULT_TASKS)")
    loss: Literal["all", "answers"] = Field("all", description="answers: task rows train on their answer only")
    heldout: list[str] = Field(default_factory=list, description="eval sample files whose needles stay out of task rows")

    context: int = Field(8192, ge=16)
    attention: Literal["full", "sw", "s2", "se", "se-nomem", "se-random", "se-landmark", "se-meanq"] = "se"
    window: int | None = Field(None, description="sw window (default context/2: the paper's 4096 at 8192)")
    group_size: int | None = Field(None, description="s2 group size (default context/4, LongLoRA's)")
    chunk_size: list[int] | None = Field(
        None, description="se chunk size(s), several = random draw per layer call (default the paper's "
        "[2048, 4096] from context 8192, [context/4, context/2] below)")
    block_size: int = 32
    top_k: int = 8

    peft: Literal["lora", "lora+", "hylora"] = "hylora"
    rank: int | None = Field(None, ge=1, description="LoRA rank (default by architecture: 32 hybrid, 8 Transformer)")
    alpha: int | None = Field(None, ge=1, description="LoRA alpha (default by architecture: 64 hybrid, 16 Transformer)")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    rope_scaling: float | None = Field(None, description="linear RoPE interpolation factor (Transformers)")

    steps: int = Field(1000, ge=1)
    micro_batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(8, ge=1)
    lr: float | None = Field(None, description="default 2e-4 (2e-5 for s2)")
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    weights_dtype: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = True
    save_every: int = 100
    seed: int = 0
    merge: bool = Field(True, description="also save the merged model in HF format under out/merged")
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.mix is not None and len(self.mix) != len(self.data):
            raise SpanlabError(f"--mix has {len(self.mix)} weights for {len(self.data)} --data sources; give one each")
        if self.task_fraction == 0:
            if not self.data:
                raise SpanlabError("no training data; pass --data FILE_OR_FOLDER, or --task-fraction for the "
                                   "pre-training task mixture")
            unused = [f"--{k.replace('_', '-')}" for k in ("tasks", "heldout") if getattr(self, k)]
            if self.loss == "answers":
                unused.append("--loss answers")
            if unused:
                raise SpanlabError(f"{', '.join(unused)} only apply to task rows; add --task-fraction (e.g. 0.9) or drop them")
        else:
            if len(self.data) > 1 or self.mix is not None:
                raise SpanlabError("with --task-fraction the natural text is one --data source (a folder may hold "
                                   "many files); --mix does not apply")
            if self.tasks is not None:
                from spanlab.tasks.registry import TASKS

                bad = [x for x in self.tasks if x not in TASKS]
                if bad or not self.tasks:
                    raise SpanlabError(f"--tasks: unknown task(s) {', '.join(bad) or '(none given)'}; "
                                       f"choose from {', '.join(TASKS)}")
        if self.weights_dtype == "bf16" and self.mixed_precision != "bf16":
            raise SpanlabError("--weights-dtype bf16 needs --mixed-precision bf16 (autocast bridges bf16 and fp32 tensors)")
        if self.attention == "full" and any(v is not None for v in (self.window, self.group_size, self.chunk_size)):
            raise SpanlabError("--window/--group-size/--chunk-size do nothing with --attention full; drop them")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.attention, DEFAULT_LR_OTHER)

    def lora(self, hybrid: bool) -> tuple[int, int]:
        """(rank, alpha): the given ones, else the paper's for the architecture; a lone rank gets
        alpha = 2·rank (the paper keeps α/r = 2, Fig. 6)."""
        rank, alpha = default_lora(hybrid)
        if self.rank is not None:
            rank, alpha = self.rank, 2 * self.rank
        return rank, self.alpha if self.alpha is not None else alpha

    def attention_params(self) -> dict[str, Any]:
        if self.attention == "sw":
            return {"window": self.window or default_window(self.context)}
        if self.attention == "s2":
            return {"group_size": self.group_size or max(1, self.context // 4)}
        if self.attention.startswith("se"):
            chunk: Any = self.chunk_size or list(default_chunk_sizes(self.context))
            return {
                "chunk_size": chunk[0] if len(chunk) == 1 else tuple(chunk),
                "block_size": self.block_size,
                "top_k": self.top_k,
            }
        return {}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> FinetuneConfig:
        p = Path(path)
        if not p.is_file():
            raise SpanlabError(f"{p}: no such config file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise SpanlabError(f"{p}: invalid YAML ({e}); fix the file") from None
        if not isinstance(raw, dict):
            raise SpanlabError(f"{p}: expected a mapping of settings at the top level")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        missing = [k for k in ("model", "out") if raw.get(k) is None]
        if missing:
            raise SpanlabError(f"{p}: no {', '.join(missing)}; set it in the file or pass --{missing[0]}")
        return cls.parse(raw, source=str(p))

    @classmethod
    def parse(cls, raw: dict[str, Any], source: str = "options") -> FinetuneConfig:
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "config"
            raise SpanlabError(f"{source}: {where}: {first['msg']}") from None
