"""`spanlab finetune` settings; the YAML config form has exactly these fields (see configs/finetune/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from spanlab.attention.registry import PAPER_CHUNK_SIZES, VARIANTS, default_chunk_sizes, default_window  # noqa: F401
from spanlab.configs import as_value_error, read_yaml_mapping, validated
from spanlab.errors import SpanlabError
from spanlab.kernels import KernelChoices
from spanlab.units import parse_length


def _as_length(v: str) -> int:
    return as_value_error(parse_length, v)  # a ValueError: pydantic names the field


def _patchable(name: str) -> str:
    as_value_error(lambda n: VARIANTS.get_spec(n, patchable=True), name)
    return name


# The `attention` field of fine-tuning and perplexity: a variant patch_attention can install.
PatchableVariant = Annotated[str, AfterValidator(_patchable)]


# A variant's own default learning rate is in the registry (S²: 2e-5, the paper's recipe).
DEFAULT_LR_OTHER = 2e-4

# The paper's chunk draw and SW window live with the variants (spanlab.attention.registry);
# re-exported here for the recipe and its tests.
# LoRA rank / alpha: r=32, α=64 for the Mamba-2-Hybrid, r=8, α=16 for Transformers (LongLoRA's).
LORA_HYBRID = (32, 64)
LORA_TRANSFORMER = (8, 16)


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
    attention: PatchableVariant = Field("se", description="a patchable variant of spanlab.attention.VARIANTS")
    window: int | None = Field(None, ge=1, description="sw window (default context/2: the paper's 4096 at 8192)")
    group_size: int | None = Field(None, ge=1, description="s2 group size (default context/4, LongLoRA's)")
    chunk_size: list[PositiveInt] | None = Field(
        None, description="se chunk size(s), several = random draw per layer call (default the paper's "
        "[2048, 4096] from context 8192, [context/4, context/2] below)")
    block_size: int = Field(32, ge=1)
    top_k: int = Field(8, ge=1)

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
    # auto = bf16 on CUDA, fp32 elsewhere: on a CPU without native bf16 (AVX2 only) autocast emulates it,
    # and a tiny hybrid's step at 4 x 2048 took 77 s against 10 s in fp32 (docs/finetune.md).
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    weights_dtype: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = True
    recompute: Literal["all", "elementwise"] = Field(
        "all", description="what checkpointing recomputes: all = each layer's forward; elementwise = keep matmul "
        "and attention-kernel outputs, recompute the rest (faster, more memory)")
    loss_chunk: int = Field(4096, ge=0, description="LM head + cross-entropy in chunks of this many rows (never "
                            "the full (context, vocab) logits); 0 = the model's dense loss")
    offload_activations: bool = Field(False, description="tensors saved for backward go to pinned CPU memory")
    compile: bool = Field(False, description="torch.compile each decoder layer's MLP and norms (attention stays eager)")
    save_every: int = 100
    seed: int = 0
    merge: bool = Field(True, description="also save the merged model in HF format under out/merged")
    progress: bool = True
    kernels: KernelChoices = Field(default_factory=dict, description="kernel choices (spanlab.kernels), e.g. {se_memory: backend}")

    @field_validator("context", "window", "group_size", mode="before")
    @classmethod
    def _length(cls, v: Any) -> Any:
        # Lengths read like every command's (spanlab.units): 8192, 8k.
        return _as_length(v) if isinstance(v, str) else v

    @field_validator("loss_chunk", mode="before")
    @classmethod
    def _rows(cls, v: Any) -> Any:
        # A length, or 0 for the dense loss (which parse_length, meant for lengths, refuses).
        if isinstance(v, str):
            return 0 if v.strip() == "0" else _as_length(v)
        return v

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _lengths(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [x for x in v.split(",") if x.strip()]
        if isinstance(v, (int, str)):
            v = [v]
        return [_as_length(x) if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

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
        if self.weights_dtype == "bf16" and self.mixed_precision not in ("bf16", "auto"):
            raise SpanlabError("--weights-dtype bf16 needs --mixed-precision bf16 (autocast bridges bf16 and fp32 tensors)")
        if not VARIANTS[self.attention].params and any(
                v is not None for v in (self.window, self.group_size, self.chunk_size)):
            raise SpanlabError(f"--window/--group-size/--chunk-size do nothing with --attention {self.attention}; "
                               "drop them")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        default = VARIANTS[self.attention].default_lr
        return default if default is not None else DEFAULT_LR_OTHER

    def lora(self, hybrid: bool) -> tuple[int, int]:
        """(rank, alpha): the given ones, else the paper's for the architecture; a lone rank gets
        alpha = 2·rank (the paper keeps α/r = 2, Fig. 6)."""
        rank, alpha = default_lora(hybrid)
        if self.rank is not None:
            rank, alpha = self.rank, 2 * self.rank
        return rank, self.alpha if self.alpha is not None else alpha

    def attention_params(self) -> dict[str, Any]:
        """The variant's parameters from the fields of the same name; a parameter with a
        context rule (`Param.default_for`) defaults from --context: the paper's chunk draw and
        SW window, LongLoRA's S² group."""
        out: dict[str, Any] = {}
        for p in VARIANTS[self.attention].params:
            if p.kind == "generator":  # drawn by the training loop, not configured
                continue
            val: Any = getattr(self, p.name) if p.name in type(self).model_fields else None
            if not val:
                val = p.default_for(self.context)
            if isinstance(val, list):
                val = val[0] if len(val) == 1 else tuple(val)
            if val is not None:
                out[p.name] = val
        return out

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> FinetuneConfig:
        return _from_yaml(cls, path, overrides, required=("model", "out"))

    @classmethod
    def parse(cls, raw: dict[str, Any], source: str = "options") -> FinetuneConfig:
        return validated(cls, raw, source=source)


class PplConfig(BaseModel):
    """`spanlab ppl` settings (the YAML form of `--config ppl.yaml` has exactly these fields)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="local HF model folder (e.g. OUT/merged of spanlab finetune)")
    data: list[str] = Field(..., min_length=1, description="txt / jsonl / parquet files or folders")
    lengths: list[int] = Field(default_factory=lambda: [2048, 8192, 16384, 32768], min_length=1,
                               description="window lengths, each scored on its own")
    attention: PatchableVariant = Field("full", description="a patchable variant of spanlab.attention.VARIANTS")
    window: int | None = Field(None, ge=1, description="sw window")
    group_size: int | None = Field(None, ge=1, description="s2 group size")
    chunk_size: int | None = Field(None, ge=1, description="se chunk size")
    block_size: int = Field(32, ge=1)
    top_k: int = Field(8, ge=1)
    batch_size: int = Field(1, ge=1, description="windows per forward pass")
    max_windows: int | None = Field(None, ge=1, description="at most this many windows per length")
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    text_field: str = "text"
    cache_dir: Path | None = None
    out: Path | None = Field(None, description="JSONL file the results are appended to")
    progress: bool = True
    kernels: KernelChoices = Field(default_factory=dict, description="kernel choices (spanlab.kernels)")

    @field_validator("lengths", mode="before")
    @classmethod
    def _lengths(cls, v: Any) -> Any:
        if isinstance(v, (str, int)):
            v = str(v).split(",")
        if not isinstance(v, list):
            return v
        out = [_as_length(x) if isinstance(x, str) else x for x in v if str(x).strip()]
        if any(isinstance(n, int) and n < 2 for n in out):
            raise ValueError("a window predicts length-1 tokens: use lengths of at least 2 tokens, e.g. 2k,8k")
        return out

    @field_validator("window", "group_size", "chunk_size", mode="before")
    @classmethod
    def _length(cls, v: Any) -> Any:
        return _as_length(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> PplConfig:
        spec = VARIANTS.get_spec(self.attention, patchable=True)
        missing = [p.name for p in spec.params if p.required and self.attention_params().get(p.name) is None]
        if missing:
            raise SpanlabError(f"--attention {self.attention} needs --{missing[0].replace('_', '-')}")
        return self

    def attention_params(self) -> dict[str, Any]:
        """The variant's parameters from the fields of the same name (the others do not apply)."""
        spec = VARIANTS.get_spec(self.attention, patchable=True)
        return {k: getattr(self, k) for k in spec.param_names if k in type(self).model_fields}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> PplConfig:
        return _from_yaml(cls, path, overrides, required=("model", "data"))




def _from_yaml(model: Any, path: str | Path, overrides: dict[str, Any], required: tuple[str, ...]) -> Any:
    """A config file's settings, with the command line's (`overrides`, None = not given) on top."""
    raw = read_yaml_mapping(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in required if raw.get(k) is None]
    if missing:
        raise SpanlabError(f"{path}: no {', '.join(missing)}; set it in the file or pass --{missing[0]}")
    return validated(model, raw, source=str(path))
