"""`train:<model>` steps: pre-training zoo models, in this process or as parallel processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spanlab import kernels
from spanlab.errors import SpanlabError
from spanlab.study.context import StudyContext
from spanlab.study.steps import Step

# The `src` folder holding this copy of spanlab: child training processes must import the same code.
_SRC = Path(__file__).resolve().parents[3]


def pretrain_config(ctx: StudyContext, name: str) -> Any:
    from spanlab.mixture import DEFAULT_TASKS
    from spanlab.pretrain.run import PretrainConfig, parse_count

    m = next(x for x in ctx.cfg.models if x.name == name)
    assert m.train is not None
    t = m.train
    heldout = [str(ctx.out / "heldout")] if ctx.cfg.heldout and (ctx.out / "heldout").is_dir() else []
    return PretrainConfig(
        arch=t.arch, size=t.size, context=t.context, tokens=parse_count(t.tokens), out=ctx.out / "train" / name,
        seed=ctx.cfg.seed, micro_batch_size=t.batch_size, grad_accum=t.grad_accum, lr=t.lr,
        warmup_fraction=t.warmup_fraction, mixed_precision=t.mixed_precision,
        gradient_checkpointing=t.gradient_checkpointing, task_fraction=t.task_fraction,
        tasks=tuple(t.tasks) if t.tasks else DEFAULT_TASKS, loss=t.loss, heldout=heldout,
        save_every=t.save_every, progress=ctx.progress,
        # One cache for the study: models with the same mixture read the same stream file.
        data_dir=ctx.out / "data",
        # A study corpus: pre-training reads its training documents, never the held-out ones.
        text=str(ctx.corpus().train) if ctx.cfg.corpus else None,
    )


def run_train(ctx: StudyContext, name: str) -> dict[str, Any]:
    from spanlab.pretrain.run import pretrain

    ctx.corpus(create=True)
    return pretrain(pretrain_config(ctx, name))


def run_train_parallel(ctx: StudyContext, steps: list[Step],
                       report: Callable[[Step, dict[str, Any], float], None]) -> None:
    """Run train steps as concurrent processes (`python -m spanlab.pretrain.run`), at most
    `train_parallel` at a time, after building their streams here once (with every core);
    `report(step, summary, wall_s)` is called as each finishes."""
    from spanlab.pretrain.run import SUMMARY_FILE, prepare_stream

    ctx.corpus(create=True)
    configs = {s.id: pretrain_config(ctx, s.id.split(":", 1)[1]) for s in steps}
    t0 = time.perf_counter()
    for c in configs.values():  # identical mixtures resolve to one cached file
        prepare_stream(c)
    ctx.log(f"  training data ready in {time.perf_counter() - t0:.1f}s")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(_SRC), os.environ.get("PYTHONPATH", "")] if p)}
    env[kernels.ENV] = kernels.current().spec()  # the study's kernel choices reach the training processes
    queue = list(steps)
    running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    failed: list[str] = []
    try:
        while queue or running:
            while queue and len(running) < ctx.cfg.train_parallel:
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
                ctx.log(f"  {step.id}: started (pid {proc.pid}, log {log.name})")
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
                    ctx.log(f"  {sid}: FAILED (exit {proc.returncode}); last lines of {log.name}:\n" + "\n".join(tail))
                    failed.append(sid)
                    continue
                report(step, json.loads((out / SUMMARY_FILE).read_text()), time.perf_counter() - started)
    finally:
        for proc, log, _ in running.values():  # interrupted: stop the children, they resume later
            proc.terminate()
            proc.wait()
            log.close()
    if failed:
        raise SpanlabError(f"training failed for {', '.join(failed)}; see the logs under {ctx.out / 'train'}")
