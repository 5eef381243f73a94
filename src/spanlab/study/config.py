"""Typed study configs (YAML): which models to train or load, how to evaluate, fine-tune, report.

Lengths may be absolute (`4096`, `4k`) or multiples of the model's training context (`2x`, `0.5x`),
so one config describes the same experiment at any scale.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from spanlab.attention.registry import VARIANTS
from spanlab.configs import as_value_error, read_yaml_mapping, validated
from spanlab.errors import SpanlabError
from spanlab.kernels import KernelChoices
from spanlab.units import parse_count, parse_length


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSpec(_Strict):
    """One `spanlab train` run (spanlab.pretrain.run.PretrainConfig fields). `spanlab train`
    validates its flags with this model too, so both share one set of defaults and limits."""

    arch: str
    size: str = "tiny"
    context: int = Field(1024, ge=64)
    tokens: str | int = "20M"
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float | None = None
    warmup_fraction: float = Field(0.02, ge=0, le=1)
    task_fraction: float = Field(0.25, ge=0, le=1)
    tasks: list[str] | None = None  # RULER tasks of the mixture (default: spanlab.pretrain.DEFAULT_TASKS)
    loss: Literal["all", "answers"] = "all"  # answers: task rows train on their answer only
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    save_every: int = Field(200, ge=0)  # 0 = checkpoint only at the end

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> Any:
        return as_value_error(parse_length, v) if isinstance(v, str) else v

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: str | int) -> str | int:
        as_value_error(parse_count, v)  # kept as written: the pinned study config records it so
        return v


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    path: str | None = None  # existing model: folder, hub name, or `builtin:<shipped name>`
    train: TrainSpec | None = None
    context: int | None = None  # training context; read from the model when omitted
    display: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.path is None) == (self.train is None):
            raise ValueError(f"model {self.name!r}: give exactly one of `path` or `train`")
        return self


class EvalBlock(_Strict):
    name: str
    suite: str | None = None
    tasks: list[str] = Field(default_factory=list)
    lengths: list[str | int]
    depths: list[float] | None = None
    num_samples: int = Field(25, ge=1)

    @model_validator(mode="after")
    def _what(self) -> EvalBlock:
        if not self.suite and not self.tasks:
            raise ValueError(f"eval block {self.name!r}: give `suite` or `tasks`")
        return self


class Generation(_Strict):
    batch_size: int = 16
    max_new_tokens: int | None = None
    stop: list[str] = Field(default_factory=list)
    template: str = "base"


class FinetuneSpec(_Strict):
    """One context-extension run of a study model (spanlab.finetune.FinetuneConfig fields)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    base: str  # a model name of this study
    context: str | int = "4x"
    # FinetuneConfig fields: attention, peft, steps, lr, chunk_size...; `task_fraction` (> 0), `tasks`
    # and `loss: answers` continue the pre-training task mixture at the fine-tuning context, with
    # the study's held-out evaluation samples kept out of it.
    settings: dict[str, Any] = Field(default_factory=dict)
    data: list[str] = Field(default_factory=list)  # default: the vendored essays
    display: str | None = None

    @field_validator("settings")
    @classmethod
    def _known_attention(cls, settings: dict[str, Any]) -> dict[str, Any]:
        if "attention" in settings:
            as_value_error(lambda name: VARIANTS.get_spec(name, patchable=True), str(settings["attention"]))
        return settings


SAME = "same"  # in `eval_attention.attention`: each fine-tune's own attention variant


class AttentionEvalSpec(_Strict):
    """Expansion Span Fig. 11: fine-tunes evaluated a second time with an efficient attention over
    the KV cache (spanlab.models.variant_attention), beside their full-attention evaluation on the
    same samples; the report pairs the two (`attention_eval` table)."""

    # `same` = the variant each fine-tune trained with, with its parameters (one fixed chunk: the
    # smallest of a random draw); or an explicit rule, e.g. `sw:window=1024`, `se:chunk_size=512`.
    attention: list[str] = Field(default_factory=lambda: [SAME], min_length=1)
    blocks: list[str] | None = None  # eval blocks (default: those of `finetune_eval`)
    # Only these tasks of the blocks (default: all). The paper's Fig. 11 is NIAH-Single-1 alone; the
    # samples are those of the full-attention evaluation (same seed, task, length and index).
    tasks: list[str] | None = None
    finetunes: list[str] | None = None  # default: every fine-tune whose variant has an eval rule

    @field_validator("attention")
    @classmethod
    def _rules(cls, specs: list[str]) -> list[str]:
        for spec in specs:
            if spec.strip() in (SAME, "full"):
                if spec.strip() == "full":
                    raise ValueError("eval_attention.attention: every fine-tune is already evaluated with full "
                                     "attention; list `same` or an efficient rule such as sw:window=1024")
                continue
            from spanlab.models.variant_attention import parse_spec

            as_value_error(parse_spec, spec)
        if len(set(specs)) != len(specs):
            raise ValueError("eval_attention.attention lists a rule twice")
        return specs

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, names: list[str] | None) -> list[str] | None:
        from spanlab.tasks import TASKS

        for n in names or []:
            if n not in TASKS:
                raise ValueError(f"eval_attention.tasks: unknown task {n!r}; choose from {', '.join(TASKS)}")
        return names


class PerplexitySpec(_Strict):
    lengths: list[str | int]
    max_windows: int = 8


class ProfileSpec(_Strict):
    """The attention runtime/memory profile (the expansion-span paper's Fig. 4): one training step
    (fwd + bwd) per variant and length, spanlab.attention.profile.run_profile fields. Lengths,
    chunk sizes and the window may be multiples of the study's pre-training context (`4x`)."""

    variants: list[str] = Field(default_factory=lambda: ["full", "sw", "s2", "se", "se-nomem"])
    lengths: list[str | int]
    chunk_sizes: list[str | int] = Field(default_factory=lambda: ["1x"])
    # each: one SE row per chunk size; alternate: one row per variant whose step runs a layer call
    # per chunk size in turn, as the paper's training draws one per call from {2048, 4096}.
    chunk_mode: Literal["each", "alternate"] = "each"
    window: str | int = "1x"
    group_size: int = Field(0, ge=0)  # 0 = a quarter of each length (LongLoRA)
    block_size: int = Field(32, ge=1)
    top_k: int = Field(8, ge=1)
    heads: int = Field(8, ge=1)
    kv_heads: int = Field(0, ge=0)  # 0 = heads
    head_dim: int = Field(64, ge=1)
    batch: int = Field(1, ge=1)
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    mode: Literal["op", "layer"] = "layer"
    warmup: int = Field(3, ge=0)
    repeats: int = Field(10, ge=1)
    kernels: KernelChoices = Field(default_factory=dict)  # kernel choices of the timed steps (spanlab.kernels)
    # CPU timings say nothing about the paper's GPU figure, so without CUDA the step is skipped
    # (and stays to do, so a resume on a GPU machine runs it) unless this is set (tests, toy runs).
    cpu: bool = False

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, names: list[str]) -> list[str]:
        for name in names:
            as_value_error(VARIANTS.get_spec, name)
        return names


class StudyConfig(_Strict):
    name: str
    out: str | None = None  # default runs/study-<name>
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    models: list[ModelSpec]
    eval: list[EvalBlock] = Field(default_factory=list)
    generation: Generation = Generation()
    finetune: list[FinetuneSpec] = Field(default_factory=list)
    finetune_eval: list[str] | None = None  # eval block names for fine-tuned models (default: all)
    eval_attention: AttentionEvalSpec | None = None  # Fig. 11: fine-tunes also evaluated with their own attention
    perplexity: PerplexitySpec | None = None
    profile: ProfileSpec | None = None
    threshold: float = 85.6
    heldout: bool = True  # keep every eval needle out of the pre-training stream
    # Natural text for fine-tuning (and pre-training) and perplexity, split by document
    # (spanlab.study.corpus); default the vendored essays. `spanlab study --corpus DIR` sets it.
    corpus: str | None = None
    # How many `train` steps run at the same time (separate processes on the same device): tiny
    # models leave a GPU mostly idle. Where it runs, not what it computes: not pinned on resume.
    train_parallel: int = Field(1, ge=1)
    # Kernel choices (spanlab.kernels) for every step; an eval or fine-tune's own `kernels` go on top.
    kernels: KernelChoices = Field(default_factory=dict)

    @field_validator("corpus")
    @classmethod
    def _corpus_folder(cls, v: str | None) -> str | None:
        if v is not None:
            from spanlab.study.corpus import check_corpus

            as_value_error(check_corpus, v)
        return v

    @model_validator(mode="after")
    def _refs(self) -> StudyConfig:
        names = [m.name for m in self.models] + [f.name for f in self.finetune]
        if len(set(names)) != len(names):
            raise ValueError("model and fine-tune names must be unique")
        known = {m.name for m in self.models}
        for f in self.finetune:
            if f.base not in known:
                raise ValueError(f"finetune {f.name!r}: base {f.base!r} is not one of the study's models")
        blocks = {b.name for b in self.eval}
        for b in self.finetune_eval or []:
            if b not in blocks:
                raise ValueError(f"finetune_eval: {b!r} is not an eval block name")
        if self.eval_attention is not None:
            ea = self.eval_attention
            if not self.finetune or not self.eval:
                raise ValueError("eval_attention needs `finetune` runs and `eval` blocks to evaluate them on")
            ft_blocks = self.finetune_eval if self.finetune_eval is not None else sorted(blocks)
            for b in ea.blocks or []:
                if b not in ft_blocks:
                    raise ValueError(f"eval_attention.blocks: {b!r} is not an eval block of the fine-tunes "
                                     f"({', '.join(ft_blocks)}); their full-attention scores are the comparison")
            for n in ea.finetunes or []:
                if n not in {f.name for f in self.finetune}:
                    raise ValueError(f"eval_attention.finetunes: {n!r} is not a fine-tune of this study")
        from spanlab.mixture.heldout import TRAIN_SEED_BASE

        if self.seed >= TRAIN_SEED_BASE:
            raise ValueError(f"seed must be below {TRAIN_SEED_BASE} (higher seeds are reserved for training data)")
        return self

    def out_dir(self) -> Path:
        return Path(self.out or f"runs/study-{self.name}")


def resolve_length(value: str | int, context: int | None) -> int:
    """`4096`, `4k` -> tokens (spanlab.units.parse_length); `2x`, `0.5x` -> that multiple of context."""
    if isinstance(value, str) and value.strip().lower().endswith("x"):
        try:
            num = float(value.strip()[:-1])
        except ValueError:
            num = -1.0
        if num <= 0:
            raise SpanlabError(f"cannot read length {value!r}; write e.g. 4096, 4k or 2x (times the training context)")
        if context is None:
            raise SpanlabError(f"length {value!r} is relative but the model's training context is unknown; "
                               "set `context:` on the model")
        return round(num * context)
    try:
        return parse_length(value)
    except SpanlabError as e:
        raise SpanlabError(f"{e}, or 2x (times the training context)") from None


def packaged_configs() -> dict[str, Path]:
    root = Path(str(resources.files("spanlab.data") / "studies"))  # shipped as package data
    return {p.stem: p for p in sorted(root.glob("*.yaml"))} if root.is_dir() else {}


def find_config(name_or_path: str) -> Path:
    """A YAML path, or a config name looked up in ./configs/ and then in the package."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (Path("configs") / f"{name_or_path}.yaml", Path("configs") / name_or_path):
        if cand.is_file():
            return cand
    packaged = packaged_configs()
    if name_or_path in packaged:
        return packaged[name_or_path]
    raise SpanlabError(f"no study config {name_or_path!r}: pass a YAML file or one of "
                       f"{', '.join(packaged) or 'the configs/ folder'}")


def load_study(name_or_path: str, **overrides: Any) -> StudyConfig:
    path = find_config(name_or_path)
    raw = read_yaml_mapping(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return validated(StudyConfig, raw, source=str(path))
