"""Runs survive SIGKILL, resume without redoing or losing samples, and refuse silent mixing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_sigkill_then_resume_loses_nothing_and_matches_uninterrupted(tiny_models, sample_file, tmp_path, cli):
    run = tmp_path / "run"
    args = ["eval", "--model", tiny_models["llama"], "--samples", str(sample_file), "--out", str(run),
            "--batch-size", "1", "--max-new-tokens", "48", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "spanlab", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = run / "results.jsonl"
    deadline = time.time() + 120
    while len(_lines(journal)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _lines(journal)
    assert proc.returncode == -signal.SIGKILL and 2 <= len(before) < 8, "the run should be killed midway"
    with open(journal, "a") as f:
        f.write('{"id": "torn-by-kill", "predic')  # what a kill in the middle of a write leaves
    assert cli(*args) == 0
    after = [json.loads(x) for x in _lines(journal) if x.startswith("{") and x.endswith("}")]
    assert _lines(journal)[: len(before)] == before  # finished samples are never rewritten
    assert len(after) == 8 == len({r["id"] for r in after})  # each sample exactly once
    # The torn fragment was moved aside (kept for inspection), so the journal holds whole records only.
    assert (run / "results.jsonl.corrupt").read_text() == '{"id": "torn-by-kill", "predic\n'
    assert cli(*args) == 0 and len(_lines(journal)) == 8  # nothing redone

    ref = tmp_path / "ref"
    assert cli(*[a if a != str(run) else str(ref) for a in args]) == 0
    ref_preds = {json.loads(x)["id"]: json.loads(x)["prediction"] for x in _lines(ref / "results.jsonl")}
    assert {r["id"]: r["prediction"] for r in after} == ref_preds


def test_other_model_or_settings_are_refused(tiny_models, sample_file, tmp_path, cli, capsys):
    base = ["eval", "--samples", str(sample_file), "--out", str(tmp_path), "--max-new-tokens", "2", "--no-progress"]
    assert cli(*base, "--model", tiny_models["llama"]) == 0
    capsys.readouterr()
    assert cli(*base, "--model", tiny_models["mamba2"]) == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and "model" in err and "Traceback" not in err
    assert cli(*[a if a != "2" else "3" for a in base], "--model", tiny_models["llama"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err
