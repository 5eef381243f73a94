"""Studies: config validation, relative lengths, step journal, resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from spanlab.errors import SpanlabError
from spanlab.study import Study, load_study, resolve_length

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_resolve_length():
    assert resolve_length("2x", 512) == 1024
    assert resolve_length("0.5x", 512) == 256
    assert resolve_length("4k", None) == 4096
    assert resolve_length(300, None) == 300
    with pytest.raises(SpanlabError, match="relative"):
        resolve_length("2x", None)
    with pytest.raises(SpanlabError):
        resolve_length("two", 512)


def test_config_errors_are_one_line_spanlab_errors(tmp_path):
    bad = _write(tmp_path, {"name": "x", "models": [{"name": "a"}]})
    with pytest.raises(SpanlabError, match="exactly one of"):
        load_study(str(bad))
    bad = _write(tmp_path, {"name": "x", "models": [{"name": "a", "path": "p"}],
                            "finetune": [{"name": "f", "base": "nope"}]})
    with pytest.raises(SpanlabError, match="base 'nope'"):
        load_study(str(bad))
    with pytest.raises(SpanlabError, match="no study config"):
        load_study("no-such-study")


@pytest.mark.parametrize("name", ["demo", "huang2024-mini", "expansion-span-mini", "huang2024-mini-gpu-quick",
                                  "expansion-span-mini-gpu-quick"])
def test_shipped_configs_parse_and_plan(name, tmp_path):
    cfg = load_study(name)  # by name: shipped in the package, so it works from any directory
    steps = [s.id for s in Study(cfg, out=tmp_path).plan()]
    assert steps[-1] == "report" and len(steps) == len(set(steps))
    study = Study(cfg, out=tmp_path)
    for f in cfg.finetune:  # settings are real FinetuneConfig fields
        fc = study.finetune_config(f.name)
        assert fc.context == 4 * study.context_of(cfg.models[0].name)
        # Every variant at one learning rate (S2's default 2e-5 would confound the comparison), on
        # the pre-training task mixture with the evaluation needles held out (written first).
        assert fc.learning_rate == 2e-4 and (fc.task_fraction, fc.loss) == (0.9, "answers")
        assert fc.heldout == [str(tmp_path / "heldout")] and steps[0] == "heldout"
    if cfg.profile is not None:  # Fig. 4 from the fine-tuning length 4C up, chunk = window = C
        p = study.profile_settings()
        c = study.context_of(cfg.models[0].name)
        assert p["lengths"][0] == 4 * c and p["chunk_sizes"] == [c] and p["window"] == c
    for m in cfg.models:  # the recipe under which the zoo's tiny models learn to retrieve
        if m.train is not None:
            assert m.train.loss == "answers" and m.train.task_fraction == 0.9
    from spanlab.study.config import find_config, packaged_configs

    assert find_config(name) == packaged_configs()[name]


def _study_cfg(model: Path, out: Path) -> dict:
    return {
        "name": "t",
        "out": str(out),
        "device": "cpu",
        "models": [{"name": "a", "path": str(model), "context": 256},
                   {"name": "b", "path": str(model), "context": 256}],
        "generation": {"batch_size": 4, "max_new_tokens": 4},
        "eval": [{"name": "ruler", "tasks": ["niah_single_1"], "lengths": ["1x", "2x"], "num_samples": 2}],
    }


def _steps(out: Path) -> list[str]:
    return [json.loads(l)["step"] for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]


def test_study_resumes_after_a_kill(tmp_path, random_model):
    out = tmp_path / "study"
    cfg = _write(tmp_path, _study_cfg(random_model, out))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "spanlab", "study", str(cfg), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "steps.jsonl").exists() and _steps(out):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _steps(out)
    assert first and first[0] == "eval:a:ruler"

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "eval:a:ruler: done, skipped" in res.stdout
    steps = _steps(out)
    assert steps.count("eval:a:ruler") == 1 and steps.count("eval:b:ruler") == 1 and "report" in steps
    # Each sample was scored once for each model, whatever the kill interrupted.
    for m in ("a", "b"):
        ids = [json.loads(l)["id"] for f in (out / "eval" / m).glob("results*.jsonl")
               for l in f.read_text().splitlines() if l.strip()]
        assert len(ids) == len(set(ids)) == 4
    assert (out / "report" / "summary.md").is_file()
    # A changed config is refused instead of mixing runs.
    changed = _study_cfg(random_model, out)
    changed["seed"] = 1
    bad = subprocess.run([sys.executable, "-m", "spanlab", "study", str(_write(tmp_path, changed))],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "different config" in bad.stderr


def test_full_pipeline_train_finetune_ppl_report(tmp_path):
    """Every step kind on CPU at toy scale: heldout -> train -> eval -> finetune -> eval -> ppl -> report."""
    cfg = {
        "name": "full",
        "out": str(tmp_path / "s"),
        "device": "cpu",
        "models": [{"name": "hyb", "train": {"arch": "hybrid", "size": "tiny", "context": 256, "tokens": 256 * 4 * 3,
                                            "batch_size": 4, "task_fraction": 0.5, "save_every": 0}}],
        "generation": {"batch_size": 4, "max_new_tokens": 4},
        "eval": [{"name": "ruler", "tasks": ["niah_single_2"], "lengths": ["1x", "2x"], "num_samples": 1}],
        "finetune": [{"name": "se", "base": "hyb", "context": "2x",
                      "settings": {"attention": "se", "peft": "hylora", "steps": 2, "micro_batch_size": 1,
                                   "grad_accum": 1, "mixed_precision": "no", "gradient_checkpointing": False,
                                   "chunk_size": [128], "block_size": 16, "top_k": 2, "rank": 4, "alpha": 8,
                                   "save_every": 0}}],
        "perplexity": {"lengths": ["1x", "2x"], "max_windows": 2},
    }
    study = Study(load_study(str(_write(tmp_path, cfg))), progress=False, log=lambda m: None)
    res = study.run()
    steps = _steps(tmp_path / "s")
    assert steps == ["heldout", "train:hyb", "eval:hyb:ruler", "finetune:se", "eval:se:ruler",
                     "ppl:hyb", "ppl:se", "report"]
    # Relative lengths follow the pre-training context for the fine-tuned model too.
    for m in ("hyb", "se"):
        recs = [json.loads(l) for l in (tmp_path / "s" / "eval" / m / "results.jsonl").read_text().splitlines()]
        assert sorted({r["length"] <= 256 for r in recs}) == [False, True]  # 1x = 256, 2x = 512
        assert all(r["length"] <= 512 for r in recs)
    # The eval needles never appear in the pre-training stream.
    import numpy as np

    from spanlab.pretrain import rare_tokens
    from spanlab.tasks import load_tokenizer

    held = set()
    for f in (tmp_path / "s" / "heldout").glob("*.jsonl"):
        for l in f.read_text().splitlines():
            d = json.loads(l)
            held |= set(d["outputs"])
    (stream,) = (tmp_path / "s" / "data").glob("stream-*[0-9a-f].npy")  # the study's shared stream cache
    text = load_tokenizer(None).decode(np.load(stream).astype(np.int64).ravel().tolist())
    assert held and not held & rare_tokens(text)
    # Perplexity reads essays the fine-tune did not: the fine-tune's text is the train split, and
    # the perplexity token cache was built from the held-out split.
    import yaml

    ft = yaml.safe_load((tmp_path / "s" / "finetune" / "se" / "finetune_config.yaml").read_text())
    assert ft["data"] == [str(tmp_path / "s" / "essays" / "train")]
    (ppl_meta,) = (tmp_path / "s" / "ppl" / "cache").glob("*/meta.json")
    assert json.loads(ppl_meta.read_text())["source"] == str(tmp_path / "s" / "essays" / "heldout")
    summary = (tmp_path / "s" / "report" / "summary.md").read_text()
    assert "Perplexity" in summary and "| se |" in summary
    assert res["ran"][-1] == "report"


def test_parallel_training_profile_and_unfit_tasks(tmp_path):
    """`train_parallel` trains models in concurrent processes on one shared stream; the profile
    step journals Fig. 4 rows and plots them into the report; a task whose template does not fit a
    length is left out of the grid with a note instead of failing the study."""
    train = {"size": "tiny", "context": 256, "tokens": 256 * 4 * 2, "batch_size": 4, "task_fraction": 0.5,
             "save_every": 0, "loss": "answers"}
    cfg = {
        "name": "par",
        "out": str(tmp_path / "s"),
        "device": "cpu",
        "train_parallel": 2,
        "models": [{"name": "tf", "train": {"arch": "transformer", **train}},
                   {"name": "m2", "train": {"arch": "mamba2", **train}}],
        "generation": {"batch_size": 4, "max_new_tokens": 4},
        # vt needs ~700 prompt tokens: it cannot fit 256 (1x) but fits 1024 (4x).
        "eval": [{"name": "ruler", "tasks": ["niah_single_1", "vt"], "lengths": ["1x", "4x"], "num_samples": 1}],
        "profile": {"variants": ["full", "sw", "se"], "lengths": ["1x", "2x"], "chunk_sizes": ["0.5x"],
                    "window": "0.5x", "block_size": 16, "top_k": 2, "heads": 2, "head_dim": 16, "dtype": "fp32",
                    "warmup": 0, "repeats": 1, "cpu": True},
    }
    logs: list[str] = []
    study = Study(load_study(str(_write(tmp_path, cfg))), progress=False, log=logs.append)
    study.run()
    out = tmp_path / "s"
    steps = _steps(out)
    assert sorted(steps[1:3]) == ["train:m2", "train:tf"] and steps[-2:] == ["profile", "report"]
    assert any("started (pid" in m for m in logs)
    assert any("vt does not fit 256 tokens" in m for m in logs)
    # Both models trained on the same rows: one stream file, and their logs say the same tokens.
    assert len(list((out / "data").glob("stream-*[0-9a-f].npy"))) == 1
    for m in ("tf", "m2"):
        pre = json.loads((out / "train" / m / "pretrain.json").read_text())
        assert pre["loss"] == "answers" and pre["tokens"] == 256 * 4 * 2
        assert (out / "train" / f"{m}.log").is_file()
        recs = [json.loads(l) for l in (out / "eval" / m / "results.jsonl").read_text().splitlines()]
        assert sorted({(r["task"], r["length"]) for r in recs}) == [
            ("niah_single_1", 256), ("niah_single_1", 1024), ("vt", 1024)]
    # Fig. 4: one row per (variant label, length), the three plots and the table in the summary.
    from spanlab.attention.profile import read_rows

    rows = read_rows(out / "profile" / "profile.csv")
    assert sorted((r.label, r.length) for r in rows) == sorted(
        (lab, n) for lab in ("full", "sw", "se[M=128]") for n in (256, 512))
    assert all(r.status == "ok" and r.ms > 0 for r in rows)
    report = out / "report"
    for name in ("profile.csv", "profile_runtime.png"):
        assert (report / name).is_file(), name
    # Peak memory is measured on CUDA only: a CPU run draws no (empty) memory figures.
    assert not list(report.glob("profile_*memory*.png"))
    assert "| se[M=128] |" in (report / "summary.md").read_text()


def test_gpu_profile_is_not_run_on_cpu_and_stays_to_do(tmp_path, random_model):
    cfg = _study_cfg(random_model, tmp_path / "s")
    cfg["eval"][0]["lengths"] = ["1x"]
    cfg["models"] = cfg["models"][:1]
    cfg["profile"] = {"lengths": ["1x"]}
    logs: list[str] = []
    study = Study(load_study(str(_write(tmp_path, cfg))), progress=False, log=logs.append)
    res = study.run()
    assert res["not_run"] == ["profile"] and "profile" not in _steps(tmp_path / "s")
    assert any("profile: not run here (no CUDA device" in m for m in logs)
    assert "Not run: it needs a CUDA device" in (tmp_path / "s" / "report" / "summary.md").read_text()
    # On a resume it is still to do (the eval step is not).
    logs.clear()
    study.run()
    assert any("eval:a:ruler: done, skipped" in m for m in logs) and any("profile: not run here" in m for m in logs)


def test_every_cell_keeps_its_samples_when_blocks_share_prompts(tmp_path, random_model):
    """A format-suite sample equals a depth-sweep one (Essay-Word-Num@depth=50 is niah_single_2 at
    depth 50, same seed), and at a short length two depths can give the same prompt. Every (label,
    length, depth) cell the config asks for still gets its samples in the journal and the report,
    each prompt is generated once, and the task x length table holds only the RULER block."""
    from collections import Counter

    from spanlab.eval import run_eval
    from spanlab.tasks.suites import FORMATS

    out = tmp_path / "s"
    cfg = {
        "name": "cells", "out": str(out), "device": "cpu",
        "models": [{"name": "a", "path": str(random_model), "context": 512}],
        "generation": {"batch_size": 8, "max_new_tokens": 4},
        "eval": [{"name": "ruler", "tasks": ["niah_single_2"], "lengths": ["0.5x", "1x"], "num_samples": 2},
                 # niah_single_2 alone at 7 depths: the same prompts as Essay-Word-Num in other cells
                 {"name": "depth", "tasks": [f"niah_single_2@depth={d}" for d in (0, 20, 40, 50, 60, 80, 100)],
                  "lengths": ["1x"], "num_samples": 2},
                 {"name": "format", "suite": "niah-format", "lengths": ["0.5x", "1x"], "num_samples": 2}],
    }
    study = Study(load_study(str(_write(tmp_path, cfg))), out=out, progress=False, log=lambda m: None)
    samples = [s for block in study.cfg.eval for s in study.block_samples("a", block)]
    asked = Counter((s.params.get("label") or s.task, s.max_length, s.depth) for s in samples)
    assert len({s.id for s in samples}) < len(samples), "the test needs prompts shared between cells"
    study.run()

    recs = [json.loads(l) for l in (out / "eval" / "a" / "results.jsonl").read_text().splitlines() if l.strip()]
    got = Counter((r["label"], r["length"], r["depth"]) for r in recs)
    assert got == asked  # every cell, each sample once
    generated = [r for r in recs if not r.get("reused")]
    assert len(generated) == len({r["id"] for r in recs})  # each prompt went through the model once
    by_id = {}
    for r in recs:  # a reused record carries the output of its prompt
        assert by_id.setdefault(r["id"], (r["prediction"], r["score"])) == (r["prediction"], r["score"])

    grid = json.loads((out / "report" / "formats_a_512.json").read_text())
    assert grid["columns"] == ["format", "0", "50", "100", "Avg"]
    assert [row[0] for row in grid["rows"]] == ["Essay-Word-Num", "Essay-Word-UUID", "Repeat-Word-Num"]
    assert all(v is not None for row in grid["rows"] for v in row[1:])
    short = json.loads((out / "report" / "formats_a_256.json").read_text())
    assert short["columns"] == ["format", "0", "50", "100", "Avg"]
    assert all(v is not None for row in short["rows"] for v in row[1:])
    tasks = json.loads((out / "report" / "tasks_a.json").read_text())
    assert [row[0] for row in tasks["rows"]] == ["niah_single_2", "Average"]
    depth = json.loads((out / "report" / "depth_niah_single_2_512.json").read_text())
    assert [row[0] for row in depth["rows"]] == ["0", "20", "40", "50", "60", "80", "100", "Average"]

    # Resuming a block whose cells are all journaled generates nothing and adds no record.
    before = (out / "eval" / "a" / "results.jsonl").read_text()
    block = study.cfg.eval[2]
    again = run_eval(study.eval_config("a", block), samples=study.block_samples("a", block))
    assert (out / "eval" / "a" / "results.jsonl").read_text() == before
    assert Counter((r["label"], r["length"], r["depth"]) for r in again) == Counter(
        {k: v for k, v in asked.items() if k[0].split("@")[0] in FORMATS})


def test_finetune_on_the_pretraining_task_mixture(tmp_path, random_model):
    """`task_fraction` in a fine-tune's settings: the study first writes the base's evaluation
    samples to heldout/, and the fine-tune reads task rows at its own context (here 2x) from a
    stream in the study's data/ whose needles exclude them."""
    import numpy as np

    from spanlab.pretrain import rare_tokens
    from spanlab.pretrain.data import answers_path
    from spanlab.tasks import load_tokenizer

    out = tmp_path / "s"
    cfg = _study_cfg(random_model, out)
    cfg["models"] = cfg["models"][:1]
    cfg["eval"][0]["num_samples"] = 4
    cfg["finetune"] = [{"name": "ft", "base": "a", "context": "2x", "settings": {
        "attention": "full", "peft": "lora+", "steps": 3, "micro_batch_size": 2, "grad_accum": 1, "lr": 2e-4,
        "mixed_precision": "no", "gradient_checkpointing": False, "rank": 4, "alpha": 8, "save_every": 0,
        "task_fraction": 0.75, "tasks": ["niah_single_1", "niah_single_2"], "loss": "answers"}}]
    study = Study(load_study(str(_write(tmp_path, cfg))), progress=False, log=lambda m: None)
    fc = study.finetune_config("ft")
    # Its natural text is the essays perplexity does not score (study.context.essay_split).
    assert (fc.context, fc.task_fraction, fc.loss, fc.data) == (512, 0.75, "answers", [str(out / "essays" / "train")])
    assert fc.heldout == [str(out / "heldout")] and fc.cache_dir == out / "data"
    study.run()
    assert _steps(out) == ["heldout", "eval:a:ruler", "finetune:ft", "eval:ft:ruler", "report"]
    held = set()
    for f in (out / "heldout").glob("a.*.jsonl"):
        for line in f.read_text().splitlines():
            held |= set(json.loads(line)["outputs"])
    assert len(held) == 8  # the base's evaluation needles: 4 samples at 1x and 2x
    (stream,) = (out / "data").glob("stream-*[0-9a-f].npy")
    rows = np.load(stream)
    assert rows.shape == (6, 512)  # 3 steps x 2 rows at the fine-tuning context
    assert (np.load(answers_path(stream))[:, 1] > 0).any()
    text = load_tokenizer(None).decode(rows.astype(np.int64).ravel().tolist())
    assert not held & rare_tokens(text)
    # Passes over the natural text count the text rows only: 25 % of 6 x 512 tokens.
    res = study.done_steps()["finetune:ft"]["result"]
    train_text = "".join(f.read_text(encoding="utf-8") for f in sorted((out / "essays" / "train").glob("*.txt")))
    assert res["text_tokens"] > len(train_text) // 8  # the train split's tokens, not one row's
    assert res["text_passes"] == pytest.approx(0.25 * 6 * 512 / res["text_tokens"])


def test_study_corpus_feeds_training_and_perplexity_and_counts_passes(tmp_path, random_model, capfd):
    """`corpus:` replaces the essays: fine-tunes and pre-training read its training documents,
    perplexity its held-out ones, and a fine-tune that reads its little text many times says so
    (stderr) and records the passes, which summary.md shows."""
    from spanlab.tasks.essays import essay_files

    books = tmp_path / "books"
    books.mkdir()
    for i, f in enumerate(essay_files()[:6]):  # 6 short documents: the 5th is held out
        (books / f"book{i}.txt").write_text(f.read_text(encoding="utf-8")[:2000], encoding="utf-8")
    out = tmp_path / "s"
    cfg = _study_cfg(random_model, out)
    cfg["models"] = cfg["models"][:1] + [{"name": "z", "train": {"arch": "transformer", "size": "tiny", "context": 256,
                                                                 "tokens": 1024, "batch_size": 2}}]
    cfg["eval"] = []
    cfg["corpus"] = str(books)
    cfg["finetune"] = [{"name": "ft", "base": "a", "context": "1x", "settings": {
        "attention": "full", "peft": "lora", "steps": 12, "micro_batch_size": 4, "grad_accum": 1,
        "mixed_precision": "no", "gradient_checkpointing": False, "rank": 2, "alpha": 4, "save_every": 0}}]
    cfg["perplexity"] = {"lengths": ["1x"], "max_windows": 1}
    study = Study(load_study(str(_write(tmp_path, cfg))), progress=False, log=lambda m: None)
    assert study.finetune_config("ft").data == [str(out / "corpus" / "train")]
    assert study.pretrain_config("z").text == str(out / "corpus" / "train")
    assert not (out / "corpus").exists()  # building configs makes nothing
    study.run(only=["finetune", "ppl:a", "report"])
    assert "reads its natural text" in capfd.readouterr().err
    held = [os.path.basename(os.path.realpath(p)) for p in (out / "corpus" / "heldout").iterdir()]
    assert held == ["book4.txt"]
    (meta,) = (out / "ppl" / "cache").glob("*/meta.json")
    assert json.loads(meta.read_text())["source"] == str(out / "corpus" / "heldout")
    result = study.done_steps()["finetune:ft"]["result"]
    # 12 steps x 4 rows of 256 tokens over the five training books' packed 256-token sequences.
    assert result["text_passes"] == pytest.approx(48 / (result["text_tokens"] // 256))
    assert result["text_passes"] > 4
    summary = (out / "report" / "summary.md").read_text()
    assert "## Training text (books)" in summary and "| finetune:ft |" in summary
    assert "memorised" in summary and "## Perplexity (held-out books)" in summary


def test_study_cli_rejects_a_corpus_it_cannot_split(tmp_path, random_model):
    one = tmp_path / "one"
    one.mkdir()
    (one / "only.txt").write_text("text " * 100)
    cfg = _write(tmp_path, _study_cfg(random_model, tmp_path / "s"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "spanlab", "study", str(cfg), "--corpus", str(one), "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "cannot be split by document" in proc.stderr
    assert "Traceback" not in proc.stderr
