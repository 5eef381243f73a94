"""Run a study: train -> eval -> finetune -> eval -> (perplexity) -> report, resumable step by step.

Each finished step is appended (and flushed) to `OUT/steps.jsonl`; a re-run skips those steps.
Steps themselves resume inside (training from its last checkpoint, evaluation from its per-sample
journal), so a kill at any moment loses at most one checkpoint interval or one batch.

Layout of OUT:
    study.yaml          the resolved config (a re-run with a different config is refused)
    steps.jsonl         journal of finished steps
    heldout/            evaluation samples whose needles are kept out of pre-training and of the
                        task rows of fine-tuning
    data/               the token streams of pre-training (shared by every model trained on the same
                        one) and of fine-tuning on task rows (shared by the fine-tunes of one base)
    train/<model>/      `spanlab train` runs (+ <model>.log when trained in a parallel process)
    finetune/<name>/    `spanlab finetune` runs
    eval/<model>/       one `spanlab eval` run directory per model (all eval blocks)
    ppl/<model>.jsonl   perplexity journal per model
    profile/profile.csv attention runtime/memory profile (rows journaled; Fig. 4)
    report/             tables, heatmaps, curves, index.html, loss_curves.png, profile_*.png, summary.md

A (task, length) pair whose prompt template alone does not fit the length (e.g. vt below ~700
tokens) is left out of the grid with a logged note -- an empty cell, as in the seed papers' tables
-- rather than failing the study.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spanlab.errors import SpanlabError
from spanlab.study.config import EvalBlock, StudyConfig, resolve_length

STEPS_FILE = "steps.jsonl"


@dataclass
class Step:
    id: str
    kind: str
    run: Callable[[], dict[str, Any]]


class StepSkipped(Exception):
    """A step that cannot run on this machine (the GPU profile without CUDA): it is logged with the
    reason and stays to do, so resuming the study where it can run completes it."""


# Parts of the config that say where or how fast a study runs, not what it computes.
_UNPINNED = {"out", "device", "train_parallel"}


class Study:
    def __init__(self, cfg: StudyConfig, *, out: str | Path | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out = Path(out) if out else cfg.out_dir()
        self.progress = progress
        self.log = log
        self._contexts: dict[str, int | None] = {}
        self._unfit: set[tuple[str, int]] = set()

    # ----- bookkeeping -------------------------------------------------------------------------
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

    def _record(self, rec: dict[str, Any]) -> None:
        with open(self.out / STEPS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()

    def _pin_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        p = self.out / "study.yaml"
        # Where it runs (out, device) may change between resumes; what it computes may not.
        now = self.cfg.model_dump(mode="json", exclude=_UNPINNED)
        if p.exists():
            old = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            if old != now:
                changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
                raise SpanlabError(f"{self.out} holds a study with a different config (changed: {', '.join(changed)}); "
                                   "use another --out or delete that directory")
        else:
            p.write_text(yaml.safe_dump(now, sort_keys=False), encoding="utf-8")

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

    def display(self, name: str) -> str:
        for m in list(self.cfg.models) + list(self.cfg.finetune):
            if m.name == name and m.display:
                return m.display
        return name

    # ----- steps -------------------------------------------------------------------------------
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

    def _tokenizer_source(self, name: str) -> str | None:
        path = Path(self.model_path(name))
        return str(path) if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() else None

    def tokenizer_of(self, name: str) -> Any:
        """The tokenizer that counts a model's prompt lengths: its own, or the built-in BPE that
        every study-trained zoo model uses (also before it is trained)."""
        from spanlab.tasks import load_tokenizer

        return load_tokenizer(self._tokenizer_source(name))

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

    def _task_finetunes(self) -> list[str]:
        """Fine-tunes whose data holds RULER-format task rows (settings `task_fraction` > 0)."""
        return [f.name for f in self.cfg.finetune if float(f.settings.get("task_fraction") or 0) > 0]

    def _heldout_models(self) -> list[str]:
        """The models whose evaluation samples training data must not contain: every model trained
        here, and the base of every fine-tune on task rows (its fine-tuned copies are evaluated on
        the base's samples: same lengths, seed and tokenizer)."""
        names = [m.name for m in self.cfg.models if m.train is not None]
        for f in self.cfg.finetune:
            if f.name in self._task_finetunes() and f.base not in names:
                names.append(f.base)
        return names

    def _heldout_step(self) -> dict[str, Any]:
        """Write every evaluation sample of the models `_heldout_models` names, so training and
        fine-tuning data can exclude their needles."""
        dest = self.out / "heldout"
        dest.mkdir(parents=True, exist_ok=True)
        n = 0
        made: set[str] = set()  # models with the same grid and tokenizer share one file: written once
        for name in self._heldout_models():
            for block in self.cfg.eval:
                key = json.dumps([block.name, self.eval_config(name, block).lengths, self._tokenizer_source(name)])
                if key in made:
                    continue
                made.add(key)
                path = dest / f"{name}.{block.name}.jsonl"
                text = "".join(s.to_json() + "\n" for s in self.block_samples(name, block))
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)
                n += text.count("\n")
        return {"samples": n}

    def pretrain_config(self, name: str) -> Any:
        from spanlab.pretrain.data import DEFAULT_TASKS
        from spanlab.pretrain.run import PretrainConfig, parse_count

        m = next(x for x in self.cfg.models if x.name == name)
        assert m.train is not None
        t = m.train
        heldout = [str(self.out / "heldout")] if self.cfg.heldout and (self.out / "heldout").is_dir() else []
        return PretrainConfig(
            arch=t.arch, size=t.size, context=t.context, tokens=parse_count(t.tokens), out=self.out / "train" / name,
            seed=self.cfg.seed, micro_batch_size=t.batch_size, grad_accum=t.grad_accum, lr=t.lr,
            warmup_fraction=t.warmup_fraction, mixed_precision=t.mixed_precision,
            gradient_checkpointing=t.gradient_checkpointing, task_fraction=t.task_fraction,
            tasks=tuple(t.tasks) if t.tasks else DEFAULT_TASKS, loss=t.loss, heldout=heldout,
            save_every=t.save_every, progress=self.progress,
            # One cache for the study: models with the same mixture read the same stream file.
            data_dir=self.out / "data",
        )

    def _train_step(self, name: str) -> dict[str, Any]:
        from spanlab.pretrain.run import pretrain

        return pretrain(self.pretrain_config(name))

    def _train_parallel(self, steps: list[Step], report: Callable[[Step, dict[str, Any], float], None]) -> None:
        """Run train steps as concurrent processes (`python -m spanlab.pretrain.run`), at most
        `train_parallel` at a time, after building their streams here once (with every core)."""
        from dataclasses import asdict

        from spanlab.pretrain.run import prepare_stream

        configs = {s.id: self.pretrain_config(s.id.split(":", 1)[1]) for s in steps}
        t0 = time.perf_counter()
        for c in configs.values():  # identical mixtures resolve to one cached file
            prepare_stream(c)
        self.log(f"  training data ready in {time.perf_counter() - t0:.1f}s")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                                       os.environ.get("PYTHONPATH", "")] if p)}
        queue = list(steps)
        running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
        failed: list[str] = []
        try:
            while queue or running:
                while queue and len(running) < self.cfg.train_parallel:
                    step = queue.pop(0)
                    cfg = configs[step.id]
                    cfg.progress = False
                    out = Path(cfg.out)
                    out.mkdir(parents=True, exist_ok=True)
                    spec = out / "pretrain_config.json"
                    spec.write_text(json.dumps(asdict(cfg), default=str, indent=1))
                    log = open(out.parent / f"{out.name}.log", "a", encoding="utf-8")  # noqa: SIM115 (closed when the child ends)
                    proc = subprocess.Popen([sys.executable, "-m", "spanlab.pretrain.run", str(spec)], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
                    running[step.id] = (proc, log, time.perf_counter())
                    self.log(f"  {step.id}: started (pid {proc.pid}, log {log.name})")
                time.sleep(1.0)
                for sid, (proc, log, started) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    log.close()
                    del running[sid]
                    step = next(s for s in steps if s.id == sid)
                    out = Path(configs[sid].out)
                    if proc.returncode != 0:
                        tail = Path(log.name).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
                        self.log(f"  {sid}: FAILED (exit {proc.returncode}); last lines of {log.name}:\n" + "\n".join(tail))
                        failed.append(sid)
                        continue
                    from spanlab.pretrain.run import SUMMARY_FILE

                    report(step, json.loads((out / SUMMARY_FILE).read_text()), time.perf_counter() - started)
        finally:
            for proc, log, _ in running.values():  # interrupted: stop the children, they resume later
                proc.terminate()
                proc.wait()
                log.close()
        if failed:
            raise SpanlabError(f"training failed for {', '.join(failed)}; see the logs under {self.out / 'train'}")

    def finetune_config(self, name: str) -> Any:
        """The FinetuneConfig of one fine-tuning step (validates the config's `settings`)."""
        from spanlab.finetune.config import FinetuneConfig

        f = next(x for x in self.cfg.finetune if x.name == name)
        raw: dict[str, Any] = {"model": self.model_path(f.base), "out": str(self.out / "finetune" / name),
                               "context": resolve_length(f.context, self.context_of(f.base)), "seed": self.cfg.seed,
                               "progress": self.progress, "merge": True, **f.settings}
        if name in self._task_finetunes():
            # Task rows continue the pre-training mixture: its natural text (the essays) unless the
            # config names other data, and the study's held-out evaluation samples kept out.
            raw["data"] = list(f.data)
            if self.cfg.heldout and self.cfg.eval:
                raw.setdefault("heldout", [str(self.out / "heldout")])
            raw.setdefault("cache_dir", str(self.out / "data"))  # beside the pre-training streams
        else:
            raw["data"] = f.data or [str(_essay_dir())]
        return FinetuneConfig.parse(raw, source=f"finetune {name}")

    def _finetune_step(self, name: str) -> dict[str, Any]:
        from spanlab.finetune.recipe import run_finetune
        from spanlab.zoo import use_fast_ssd

        use_fast_ssd()  # a Mamba2-family base trains through spanlab's scan (no-op for others)
        return run_finetune(self.finetune_config(name))

    def _eval_step(self, name: str, block: EvalBlock) -> dict[str, Any]:
        from spanlab.eval import run_eval

        records = run_eval(self.eval_config(name, block), samples=self.block_samples(name, block))
        return {"records": len(records)}

    def profile_settings(self) -> dict[str, Any]:
        """run_profile keyword arguments of the `profile:` section, relative lengths resolved
        against the (first) pre-trained model's context."""
        p = self.cfg.profile
        assert p is not None
        ctx = self.context_of(self.cfg.models[0].name)
        return {
            "variants": list(p.variants), "lengths": sorted({resolve_length(x, ctx) for x in p.lengths}),
            "chunk_sizes": [resolve_length(x, ctx) for x in p.chunk_sizes], "window": resolve_length(p.window, ctx),
            "group_size": p.group_size, "block_size": p.block_size, "top_k": p.top_k, "heads": p.heads,
            "kv_heads": p.kv_heads or None, "head_dim": p.head_dim, "batch": p.batch, "dtype": p.dtype,
            "mode": p.mode, "warmup": p.warmup, "repeats": p.repeats, "seed": self.cfg.seed,
        }

    def _profile_step(self) -> dict[str, Any]:
        import torch

        from spanlab.attention.profile import run_profile

        p = self.cfg.profile
        assert p is not None
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if not device.startswith("cuda") and not p.cpu:
            raise StepSkipped("no CUDA device: the runtime/memory profile (Fig. 4) is a GPU measurement; "
                              "resume this study on a GPU machine to add it (or set profile.cpu: true)")
        if p.cpu and not device.startswith("cuda"):
            device = "cpu"
        csv_path = self.out / "profile" / "profile.csv"
        rows = run_profile(**self.profile_settings(), device=device, csv_path=csv_path,
                           on_row=lambda r: self.log(f"  {r.label:>16} L={r.length:>6} {r.ms:9.3f} ms "
                                                     f"{r.peak_mem_gib:7.3f} GiB {r.status}"))
        return {"csv": str(csv_path), "rows": len(rows), "device": device}

    def _ppl_step(self, name: str) -> dict[str, Any]:
        import torch

        from spanlab.finetune.data import build_token_cache
        from spanlab.finetune.perplexity import perplexity
        from spanlab.finetune.recipe import load_base_model, load_tokenizer
        from spanlab.zoo import use_fast_ssd

        spec = self.cfg.perplexity
        assert spec is not None
        use_fast_ssd()
        path = self.model_path(name)
        lengths = [resolve_length(x, self.base_context(name)) for x in spec.lengths]
        device = self.cfg.device if self.cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        tok = load_tokenizer(path)
        tokens = build_token_cache(str(_essay_dir()), tok, self.out / "ppl" / "cache", progress=False).tokens
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        net = load_base_model(path, dtype=dtype).to(device)
        (self.out / "ppl").mkdir(parents=True, exist_ok=True)
        rows = perplexity(net, tokens, lengths, max_windows=spec.max_windows, journal=self.out / "ppl" / f"{name}.jsonl",
                          progress=self.progress, meta={"model": name})
        return {"ppl": {int(r["length"]): r["ppl"] for r in rows}}

    def base_context(self, name: str) -> int | None:
        # Relative lengths are multiples of the *pre-training* context for every model of a study,
        # so base and fine-tuned rows line up in one table (the paper's C..8C for both).
        for f in self.cfg.finetune:
            if f.name == name:
                return self.context_of(f.base)
        return self.context_of(name)

    def _report_step(self) -> dict[str, Any]:
        from spanlab.pretrain.run import plot_loss_curves
        from spanlab.report import build_report

        rundirs = [str(self.out / "eval" / n) for n in self.evaluated_models() if (self.out / "eval" / n).is_dir()]
        dest = self.out / "report"
        if rundirs:
            build_report(rundirs, out=str(dest), threshold=self.cfg.threshold)
        dest.mkdir(parents=True, exist_ok=True)
        logs = {self.display(m.name): self.out / "train" / m.name / "train_log.jsonl"
                for m in self.cfg.models if m.train is not None}
        logs.update({self.display(m.name): Path(self.model_path(m.name)) / "train_log.jsonl"
                     for m in self.cfg.models if m.train is None and (Path(self.model_path(m.name)) / "train_log.jsonl").is_file()})
        logs = {k: v for k, v in logs.items() if v.is_file()}
        if logs:
            plot_loss_curves(logs, dest / "loss_curves.png", title=f"{self.cfg.name}: pre-training loss")
        profile_csv = self.out / "profile" / "profile.csv"
        if profile_csv.is_file():
            import shutil

            from spanlab.attention.profile import plot_rows, read_rows

            shutil.copy2(profile_csv, dest / "profile.csv")
            plot_rows(read_rows(profile_csv), dest)
        summary = write_summary(self, dest)
        return {"report": str(dest), "summary": str(summary)}

    def evaluated_models(self) -> list[str]:
        names = [m.name for m in self.cfg.models] if self.cfg.eval else []
        if self.cfg.eval and self.cfg.finetune:
            names += [f.name for f in self.cfg.finetune]
        return names

    def plan(self) -> list[Step]:
        cfg = self.cfg
        steps: list[Step] = []
        if cfg.heldout and self._heldout_models() and cfg.eval:
            steps.append(Step("heldout", "heldout", self._heldout_step))
        for m in cfg.models:
            if m.train is not None:
                steps.append(Step(f"train:{m.name}", "train", lambda n=m.name: self._train_step(n)))
        for m in cfg.models:
            for b in cfg.eval:
                steps.append(Step(f"eval:{m.name}:{b.name}", "eval", lambda n=m.name, b=b: self._eval_step(n, b)))
        ft_blocks = [b for b in cfg.eval if cfg.finetune_eval is None or b.name in cfg.finetune_eval]
        for f in cfg.finetune:
            steps.append(Step(f"finetune:{f.name}", "finetune", lambda n=f.name: self._finetune_step(n)))
            for b in ft_blocks:
                steps.append(Step(f"eval:{f.name}:{b.name}", "eval", lambda n=f.name, b=b: self._eval_step(n, b)))
        if cfg.perplexity is not None:
            for n in [m.name for m in cfg.models] + [f.name for f in cfg.finetune]:
                steps.append(Step(f"ppl:{n}", "ppl", lambda n=n: self._ppl_step(n)))
        if cfg.profile is not None:
            steps.append(Step("profile", "profile", self._profile_step))
        steps.append(Step("report", "report", self._report_step))
        return steps

    def run(self, *, only: list[str] | None = None) -> dict[str, Any]:
        self._pin_config()
        done = self.done_steps()
        steps = self.plan()
        index = {s.id: i for i, s in enumerate(steps, 1)}
        t_all = time.perf_counter()
        ran: list[str] = []
        skipped: list[str] = []

        def finish(step: Step, result: dict[str, Any], wall: float) -> None:
            self._record({"step": step.id, "kind": step.kind, "wall_s": round(wall, 3),
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "result": _jsonable(result)})
            ran.append(step.id)
            self.log(f"[{index[step.id]}/{len(steps)}] {step.id}: finished in {wall:.1f}s")

        todo = []
        for step in steps:
            if only and step.kind not in only and step.id not in only:
                continue
            # The report always re-runs: it is cheap and must reflect every finished step.
            if step.id in done and step.kind != "report":
                self.log(f"[{index[step.id]}/{len(steps)}] {step.id}: done, skipped")
                continue
            todo.append(step)
        pending_train = [s for s in todo if s.kind == "train"]
        for step in todo:
            if step.kind == "train" and self.cfg.train_parallel > 1 and len(pending_train) > 1:
                if step is pending_train[0]:  # the whole group starts at its first member
                    self.log(f"[{index[step.id]}/{len(steps)}] training {len(pending_train)} models, "
                             f"{self.cfg.train_parallel} at a time ...")
                    self._train_parallel(pending_train, finish)
                continue
            self.log(f"[{index[step.id]}/{len(steps)}] {step.id} ...")
            t0 = time.perf_counter()
            try:
                result = step.run()
            except StepSkipped as e:
                self.log(f"[{index[step.id]}/{len(steps)}] {step.id}: not run here ({e})")
                skipped.append(step.id)
                continue
            finish(step, result, time.perf_counter() - t0)
        return {"out": str(self.out), "ran": ran, "not_run": skipped, "wall_s": time.perf_counter() - t_all,
                "report": str(self.out / "report")}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "extra" and isinstance(v, (str, int, float, bool, list, dict, type(None)))}


def _essay_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("spanlab.data") / "paul_graham_essays"))


def _context_from_model_dir(path: Path) -> int | None:
    pre = path / "pretrain.json"
    if pre.is_file():
        return int(json.loads(pre.read_text())["context"])
    return None


def write_summary(study: Study, dest: Path) -> Path:
    """`summary.md`: the steps with wall times, perplexity table and where every figure is."""
    lines = [f"# Study `{study.cfg.name}`", ""]
    done = study.done_steps()
    lines += ["| step | wall (s) |", "|---|---:|"]
    lines += [f"| {k} | {v.get('wall_s', 0):.1f} |" for k, v in done.items()]
    ppl_dir = study.out / "ppl"
    if ppl_dir.is_dir():
        rows: dict[str, dict[int, float]] = {}
        for p in sorted(ppl_dir.glob("*.jsonl")):
            for line in p.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    rows.setdefault(study.display(p.stem), {})[int(r["length"])] = float(r["ppl"])
        if rows:
            lens = sorted({n for r in rows.values() for n in r})
            lines += ["", "## Perplexity (essays)", "", "| model | " + " | ".join(map(str, lens)) + " |",
                      "|---|" + "---:|" * len(lens)]
            for name, r in rows.items():
                lines.append(f"| {name} | " + " | ".join(f"{r[n]:.2f}" if n in r else "" for n in lens) + " |")
    profile_csv = study.out / "profile" / "profile.csv"
    if profile_csv.is_file():
        from spanlab.attention.profile import read_rows

        prow = read_rows(profile_csv)
        lens = sorted({r.length for r in prow})
        labels = list(dict.fromkeys(r.label for r in prow))
        cell = {(r.label, r.length): r for r in prow}
        dev = prow[0].device if prow else ""
        mode = prow[0].mode if prow else ""
        lines += ["", f"## Attention training step: time (ms) / peak memory (GiB), {mode} mode, {dev}", "",
                  "| variant | " + " | ".join(map(str, lens)) + " |", "|---|" + "---:|" * len(lens)]
        for lab in labels:
            vals = []
            for n in lens:
                r = cell.get((lab, n))
                vals.append("" if r is None else "OOM" if r.status != "ok" else f"{r.ms:.2f} / {r.peak_mem_gib:.2f}")
            lines.append(f"| {lab} | " + " | ".join(vals) + " |")
    elif study.cfg.profile is not None:
        note = ("Not run: it needs a CUDA device (see the step log); resume the study on a GPU machine "
                "to add it.")
        lines += ["", "## Attention profile", "", note]
    report_md = dest / "report.md"
    if report_md.is_file():
        lines += ["", report_md.read_text(encoding="utf-8")]
    figs = sorted(p.name for p in dest.glob("*.png"))
    if figs:
        lines += ["", "## Figures", ""] + [f"- `{f}`" for f in figs]
    out = dest / "summary.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
