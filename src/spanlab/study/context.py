"""What every study step reads: the config, the output folder, and how a study model name resolves
to a path, a training context, a tokenizer and its evaluation samples.

Steps (spanlab.study.steps) are functions of a StudyContext; the runner (spanlab.study.runner) only
plans them, skips finished ones and journals the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.study.config import EvalBlock, StudyConfig, resolve_length
from spanlab.study.corpus import HELDOUT_EVERY, CorpusSplit, corpus_split, essay_split, materialise

__all__ = ["HELDOUT_EVERY", "STEPS_FILE", "StudyContext", "essay_split"]

STEPS_FILE = "steps.jsonl"


class StudyContext:
    def __init__(self, cfg: StudyConfig, *, out: str | Path | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out = Path(out) if out else cfg.out_dir()
        self.progress = progress
        self.log = log
        self._contexts: dict[str, int | None] = {}
        self._unfit: set[tuple[str, int]] = set()

    # ----- the step journal --------------------------------------------------------------------
    def done_steps(self) -> dict[str, dict[str, Any]]:
        p = self.out / STEPS_FILE
        done: dict[str, dict[str, Any]] = {}
        if p.exists():
            for line in p.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that step simply runs again
                done[rec["step"]] = rec
        return done

    def record(self, rec: dict[str, Any]) -> None:
        with open(self.out / STEPS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()

    # ----- natural text ------------------------------------------------------------------------
    def corpus(self, *, create: bool = False) -> CorpusSplit:
        """The study's training / held-out text (spanlab.study.corpus); `create` makes the folders."""
        split = corpus_split(self.out, self.cfg.corpus)
        return materialise(split) if create else split

    # ----- models ------------------------------------------------------------------------------
    def model_path(self, name: str) -> str:
        for m in self.cfg.models:
            if m.name == name:
                if m.train is not None:
                    return str(self.out / "train" / name / "final")
                from spanlab.zoo.shipped import resolve_model

                return resolve_model(m.path or "")
        for f in self.cfg.finetune:
            if f.name == name:
                return str(self.out / "finetune" / name / "merged")
        raise SpanlabError(f"unknown model {name!r}")

    def context_of(self, name: str) -> int | None:
        """The training context of a study model (for `2x`-style lengths)."""
        if name in self._contexts:
            return self._contexts[name]
        ctx: int | None = None
        for m in self.cfg.models:
            if m.name == name:
                ctx = m.context or (m.train.context if m.train else None)
                if ctx is None:
                    ctx = _context_from_model_dir(Path(self.model_path(name)))
        for f in self.cfg.finetune:
            if f.name == name:
                ctx = resolve_length(f.context, self.context_of(f.base))
        self._contexts[name] = ctx
        return ctx

    def base_context(self, name: str) -> int | None:
        # Relative lengths are multiples of the *pre-training* context for every model of a study,
        # so base and fine-tuned rows line up in one table (the paper's C..8C for both).
        for f in self.cfg.finetune:
            if f.name == name:
                return self.context_of(f.base)
        return self.context_of(name)

    def display(self, name: str) -> str:
        for m in list(self.cfg.models) + list(self.cfg.finetune):
            if m.name == name and m.display:
                return m.display
        return name

    def evaluated_models(self) -> list[str]:
        names = [m.name for m in self.cfg.models] if self.cfg.eval else []
        if self.cfg.eval and self.cfg.finetune:
            names += [f.name for f in self.cfg.finetune]
        return names

    def task_finetunes(self) -> list[str]:
        """Fine-tunes whose data holds RULER-format task rows (settings `task_fraction` > 0)."""
        return [f.name for f in self.cfg.finetune if float(f.settings.get("task_fraction") or 0) > 0]

    def heldout_models(self) -> list[str]:
        """The models whose evaluation samples training data must not contain: every model trained
        here, and the base of every fine-tune on task rows (its fine-tuned copies are evaluated on
        the base's samples: same lengths, seed and tokenizer)."""
        names = [m.name for m in self.cfg.models if m.train is not None]
        for f in self.cfg.finetune:
            if f.name in self.task_finetunes() and f.base not in names:
                names.append(f.base)
        return names

    # ----- evaluation samples ------------------------------------------------------------------
    def eval_config(self, name: str, block: EvalBlock) -> Any:
        from spanlab.eval import EvalConfig

        ctx = self.context_of(name)
        base = self.base_context(name)  # `2x` means twice the pre-training context, for every row
        g = self.cfg.generation
        return EvalConfig(
            model=self.model_path(name),
            out=str(self.out / "eval" / name),
            suite=block.suite,
            tasks=list(block.tasks),
            lengths=sorted({resolve_length(x, base) for x in block.lengths}),
            depths=block.depths,
            num_samples=block.num_samples,
            template=g.template,
            seed=self.cfg.seed,
            device=self.cfg.device,
            dtype=self.cfg.dtype,
            batch_size=g.batch_size,
            max_new_tokens=g.max_new_tokens,
            stop=list(g.stop),
            allow_extrapolation=True,  # going past the training length is the point
            train_length=ctx,
            progress=self.progress,
        )

    def tokenizer_source(self, name: str) -> str | None:
        path = Path(self.model_path(name))
        return str(path) if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() else None

    def tokenizer_of(self, name: str) -> Any:
        """The tokenizer that counts a model's prompt lengths: its own, or the built-in BPE that
        every study-trained zoo model uses (also before it is trained)."""
        from spanlab.tasks import load_tokenizer

        return load_tokenizer(self.tokenizer_source(name))

    def block_samples(self, name: str, block: EvalBlock, tokenizer: Any = None) -> list[Any]:
        """The samples of one eval block for one model, leaving out (task, length) pairs whose
        template cannot fit that length (logged once per pair)."""
        from spanlab.eval.samples import generate_samples, specs_from

        cfg = self.eval_config(name, block)
        tok = tokenizer if tokenizer is not None else self.tokenizer_of(name)
        out: list[Any] = []
        for spec in specs_from(cfg.suite, cfg.tasks):
            for length in cfg.lengths:
                try:
                    out += generate_samples([spec], lengths=[length], depths=cfg.depths, num_samples=cfg.num_samples,
                                            tokenizer=tok, seed=cfg.seed, template=cfg.template)
                except SpanlabError as e:
                    if "too small" not in str(e) and "too short" not in str(e):
                        raise
                    key = (spec.label, length)
                    if key not in self._unfit:
                        self._unfit.add(key)
                        self.log(f"  note: {spec.label} does not fit {length} tokens; left out ({e})")
        if not out:
            raise SpanlabError(f"eval block {block.name!r}: no task fits any of its lengths {cfg.lengths}")
        return out


def _context_from_model_dir(path: Path) -> int | None:
    pre = path / "pretrain.json"
    if pre.is_file():
        return int(json.loads(pre.read_text())["context"])
    return None
