"""Issue 15's newcomer defects, one test each: bad input is one line and exit 2, nothing half-made."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import spanlab

NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")


def test_version(cli, capsys):
    assert cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"spanlab {spanlab.__version__}"


@pytest.mark.parametrize("cmd", [
    ["eval", "--model", "m", "--tasks", "vt", "--lengths", "1k", "--out"],
    ["generate", "--tasks", "vt", "--lengths", "1k", "--out"],
    ["finetune", "--model", "m", "--data", "d", "--out"],
    ["train", "--arch", "mamba2", "--out"],
    ["profile", "--variants", "full", "--lengths", "64", "--out"],
    ["study", "demo", "--out"],
    ["report", "r", "--out"],
    ["convert", "ckpt"],
])
def test_out_an_existing_file_is_a_one_line_error(cmd, tmp_path, user_error):
    f = tmp_path / "taken"
    f.write_text("keep me")
    err = user_error(*cmd, f)
    assert str(f) in err and ("file" in err or "exists" in err)
    assert f.read_text() == "keep me"


@NOT_ROOT
@pytest.mark.parametrize("cmd", [
    ["eval", "--model", "m", "--tasks", "vt", "--lengths", "1k", "--out"],
    ["generate", "--tasks", "vt", "--lengths", "1k", "--out"],
    ["train", "--arch", "mamba2", "--out"],
])
def test_unwritable_out_is_a_one_line_error(cmd, tmp_path, user_error):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert "writ" in user_error(*cmd, ro / "run")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_out_under_a_file_is_a_one_line_error(tmp_path, user_error):
    (tmp_path / "f").write_text("")
    assert "is a file" in user_error("eval", "--model", "m", "--tasks", "vt", "--lengths", "1k",
                                     "--out", tmp_path / "f" / "run")


@pytest.mark.parametrize("flag,value,flag_named", [("--context", "0", "--context"), ("--context", "32", "--context"),
                                                  ("--tokens", "0", "--tokens"), ("--batch-size", "0", "--batch-size"),
                                                  ("--loss", "some", "--loss")])
def test_train_bad_values_name_the_flag(flag, value, flag_named, tmp_path, user_error):
    err = user_error("train", "--arch", "mamba2", "--out", tmp_path / "t", flag, value)
    assert err.startswith(f"error: {flag_named}")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("flag,value", [("--heads", "0"), ("--repeats", "0"), ("--mode", "fast"), ("--dtype", "int8")])
def test_profile_flags_are_validated_by_the_study_profile_model(flag, value, tmp_path, user_error):
    assert user_error("profile", "--out", tmp_path / "p", flag, value).startswith(f"error: {flag} must be ")
    assert not (tmp_path / "p").exists()


def test_missing_remote_code_file_is_a_one_line_error(tiny_llama, tmp_path, user_error):
    import shutil

    m = tmp_path / "custom"
    shutil.copytree(tiny_llama, m)
    cfg = json.loads((m / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XModel"}
    cfg["model_type"] = "xmodel"
    (m / "config.json").write_text(json.dumps(cfg))
    (m / "configuration_x.py").write_text("from transformers import LlamaConfig\n\n\nclass XConfig(LlamaConfig):\n"
                                          "    model_type = 'xmodel'\n")
    err = user_error("eval", "--model", m, "--trust-remote-code", "--out", tmp_path / "run", "--tasks", "vt",
                     "--lengths", "512", "-n", "1", "--no-progress")
    assert "modeling_x.py" in err
    assert not (tmp_path / "run").exists()  # nothing made for a run that could not start


def test_study_only_typo_fails_and_names_the_step_kinds(tmp_path, user_error, cli, capsys):
    err = user_error("study", "demo", "--only", "evl", "--out", tmp_path / "s")
    assert "'evl'" in err and "eval" in err and "report" in err
    assert not (tmp_path / "s").exists()


def test_named_studies_work_from_any_directory(tmp_path, monkeypatch, cli, capsys):
    from spanlab.study.config import find_config, packaged_configs

    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    for name in ("demo", "huang2024-mini", "expansion-span-mini", "huang2024-mini-gpu-quick",
                 "expansion-span-mini-gpu-quick"):
        assert find_config(name) == packaged_configs()[name]
    assert cli("study", "huang2024-mini", "--dry-run", "--out", tmp_path / "s") == 0
    assert "train:" in capsys.readouterr().out


def _gen(cli, out: Path, *extra: object) -> int:
    return cli("generate", "--tasks", "vt", "--lengths", "1024", "-n", "2", "--out", out, *extra)


def test_generate_keeps_files_made_with_other_settings_and_merges_its_manifest(tmp_path, cli, capsys):
    out = tmp_path / "samples"
    assert _gen(cli, out) == 0
    first = (out / "1024" / "vt.jsonl").read_bytes()
    assert stat.S_IMODE((out / "1024" / "vt.jsonl").stat().st_mode) == 0o666 & ~_umask()
    capsys.readouterr()
    assert _gen(cli, out, "--seed", "7") == 2  # other settings: refused, not silently replaced
    err = capsys.readouterr().err
    assert "1024/vt.jsonl" in err and "seed 42" in err and "--force" in err
    assert (out / "1024" / "vt.jsonl").read_bytes() == first
    assert cli("generate", "--tasks", "niah_single_1", "--lengths", "1024", "-n", "2", "--out", out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["tasks"] for c in manifest["commands"]] == [["vt"], ["niah_single_1"]]
    assert manifest["tasks"] == ["vt", "niah_single_1"] and set(manifest["files"]) == {"1024/vt.jsonl",
                                                                                         "1024/niah_single_1.jsonl"}
    assert _gen(cli, out, "--seed", "7", "--force") == 0  # --force replaces, and the manifest says so
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["1024/vt.jsonl"]["seed"] == 7 and sorted(manifest["seed"]) == [7, 42]


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_essays_licence_is_not_a_training_document():
    from importlib import resources

    from spanlab.finetune.data import source_files

    root = Path(str(resources.files("spanlab.data") / "paul_graham_essays"))
    files = source_files(root)
    assert files and not [f for f in files if "LICENSE" in f.name.upper()]
    assert any(p.name.startswith("LICENSE") for p in root.iterdir())  # the licence still ships


def test_corrupt_journal_line_is_reported_and_moved_aside(tmp_path, capsys):
    from spanlab.eval.journal import Journal, read_run

    j = tmp_path / "results.jsonl"
    good = [{"id": "a", "label": "vt", "depth": None}, {"id": "b", "label": "vt", "depth": None}]
    j.write_text(json.dumps(good[0]) + "\n{not json\n" + json.dumps(good[1]) + "\n")
    assert [r["id"] for r in read_run(tmp_path)] == ["a", "b"]
    assert "line 2" in capsys.readouterr().err
    with Journal(j):
        pass
    err = capsys.readouterr().err
    assert "moved 1 unreadable line" in err
    assert (tmp_path / "results.jsonl.corrupt").read_text() == "{not json\n"
    assert [json.loads(x)["id"] for x in j.read_text().splitlines()] == ["a", "b"]
    read_run(tmp_path)
    assert capsys.readouterr().err == ""  # clean now: no more warnings


def test_eval_checks_flags_before_loading_the_model_and_makes_no_folder(tmp_path, user_error):
    run = tmp_path / "run"
    common = ["eval", "--model", tmp_path / "no-such-model", "--out", run]
    assert "unknown task" in user_error(*common, "--tasks", "nope", "--lengths", "512")
    assert "unknown template" in user_error(*common, "--tasks", "vt", "--lengths", "512", "--template", "zz")
    assert "--num-samples" in user_error(*common, "--tasks", "vt", "--lengths", "512", "-n", "0")  # -n works
    assert "--batch-size" in user_error(*common, "--tasks", "vt", "--lengths", "512", "--batch-size", "0")
    assert "--depths" in user_error(*common, "--tasks", "vt", "--lengths", "512", "--depths", "150")
    assert "--lengths" in user_error(*common, "--tasks", "vt")
    assert "does not exist" in user_error(*common, "--samples", tmp_path / "none.jsonl")
    assert not run.exists()


def test_eval_says_it_is_resuming(tiny_llama, tmp_path, cli, capsys):
    args = ["eval", "--model", tiny_llama, "--out", tmp_path / "run", "--tasks", "niah_single_1", "--lengths", "512",
            "-n", "2", "--max-new-tokens", "2", "--no-progress"]
    assert cli(*args) == 0
    assert "resuming" not in capsys.readouterr().err
    assert cli(*args) == 0
    assert f"resuming {tmp_path / 'run'}: 2 of 2 samples already done" in capsys.readouterr().err


def test_finetune_says_it_is_resuming(tmp_path, cli, capsys, monkeypatch):
    import spanlab.finetune.recipe as recipe

    ckpt = tmp_path / "ft" / "checkpoints" / "step-000040"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 40}))
    seen = []
    monkeypatch.setattr(recipe, "run_finetune", lambda cfg: seen.append(cfg) or {"is_main_process": False})
    data = tmp_path / "d.txt"
    data.write_text("text " * 50)
    assert cli("finetune", "--model", tmp_path, "--data", data, "--out", tmp_path / "ft", "--steps", "100",
               "--context", "1k", "--no-progress") == 0
    assert f"resuming {tmp_path / 'ft'} from step-000040 (step 40 of 100)" in capsys.readouterr().err
    assert seen and seen[0].context == 1024


def test_cpu_profile_reports_no_memory_and_draws_no_empty_plot(tmp_path, cli, capsys):
    out = tmp_path / "prof"
    assert cli("profile", "--variants", "full", "--lengths", "64,128", "--heads", "2", "--head-dim", "8",
               "--dtype", "fp32", "--warmup", "0", "--repeats", "1", "--device", "cpu", "--out", out) == 0
    cap = capsys.readouterr()
    assert "n/a" in cap.out and "nan" not in cap.out and "CUDA only" in cap.err
    assert sorted(p.name for p in out.glob("*.png")) == ["profile_runtime.png"]


def _fake_run(d: Path, tasks: list[str]) -> Path:
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"model": {"model": "m"}}))
    recs = [{"id": f"{t}{i}", "task": t, "label": t, "length": 512, "depth": None, "params": {}, "prediction": "x",
             "gold": ["x"], "score": 100.0} for t in tasks for i in range(2)]
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def test_report_notes_runs_with_different_task_sets(tmp_path, cli, capsys):
    from spanlab.report import build_tables
    from spanlab.report.load import load_runs

    a = _fake_run(tmp_path / "a", ["vt", "cwe"])
    b = _fake_run(tmp_path / "b", ["vt"])
    tables = build_tables(load_runs([str(a), str(b)]))
    assert any("different task sets" in n for n in tables[0].notes)
    assert cli("report", a, b, "--out", tmp_path / "rep") == 0
    assert "different task sets" in capsys.readouterr().err
    c = _fake_run(tmp_path / "c", ["vt", "cwe"])
    assert not any("different task sets" in n for n in build_tables(load_runs([str(a), str(c)]))[0].notes)


def test_known_harmless_transformers_warnings_are_dropped_others_kept(capsys):
    import logging

    from transformers.utils import logging as tlog

    from spanlab.cli._common import quiet_transformers

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root = logging.getLogger("transformers")
    log = tlog.get_logger("transformers.integrations.hub_kernels")
    keep = Keep()
    root.addHandler(keep)  # stands for transformers' own stderr handler
    try:
        with quiet_transformers():
            log.warning("`causal_conv1d_fn` is falling back to its reference PyTorch implementation because x")
            log.warning("something the user must see")
        assert seen == ["something the user must see"]
        assert "causal_conv1d_fn" in capsys.readouterr().err  # one spanlab note names the fallback
        log.warning("`f` is falling back to its reference PyTorch implementation because y")  # outside: untouched
        assert len(seen) == 2
    finally:
        root.removeHandler(keep)


def test_depth_is_one_percent_number_carried_by_the_journal_record():
    from spanlab.eval.runner import make_record
    from spanlab.eval.samples import generate_samples, specs_from
    from spanlab.report.load import base_label, swept_depth
    from spanlab.tasks.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    swept = generate_samples(specs_from("niah-depth", []), lengths=[512], depths=None, num_samples=1,
                             tokenizer=tok, seed=0, template="base")
    recs = [make_record(s, "", 0, 0, 0.0, 1, 0) for s in swept]
    # niah-depth sweeps the three formats of Huang's Table 4 (its Tables 2-3 average them).
    formats = ("Essay-Word-Num", "Essay-Word-UUID", "Repeat-Word-Num")
    assert [(r["group"], r["swept"], r["depth"]) for r in recs] == [(f, True, float(d)) for f in formats
                                                                    for d in (0, 20, 40, 50, 60, 80, 100)]
    assert {base_label(r) for r in recs} == set(formats) and [swept_depth(r) for r in recs] == [
        r["depth"] for r in recs]
    plain = generate_samples(specs_from(None, ["niah_single_1"]), lengths=[512], depths=None, num_samples=1,
                             tokenizer=tok, seed=0, template="base")
    rec = make_record(plain[0], "", 0, 0, 0.0, 1, 0)
    assert rec["depth"] is not None and rec["swept"] is False and swept_depth(rec) is None  # random, not swept
    # A journal written before these fields still reads the same.
    old = {k: v for k, v in recs[3].items() if k not in ("group", "swept")}
    assert base_label(old) == "Essay-Word-Num" and swept_depth(old) == 50.0
