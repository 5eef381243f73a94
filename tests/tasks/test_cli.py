"""`spanlab generate` end to end: files, idempotence, byte-identical reruns, parquet, bad input."""

from __future__ import annotations

import json

import pytest

from spanlab.tasks import expand_suite, read_samples


def test_generate_files_and_rerun(tmp_path, cli_output):
    args = ["generate", "--tasks", "niah_single_2,vt,Essay-Word-UUID@depth=50", "--lengths", "1k,2048", "-n", "3",
            "--out", str(tmp_path / "a")]
    code, out, err = cli_output(args)
    assert code == 0, err
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.jsonl"))
    assert files == ["1024/Essay-Word-UUID@depth=50.jsonl", "1024/niah_single_2.jsonl", "1024/vt.jsonl",
                     "2048/Essay-Word-UUID@depth=50.jsonl", "2048/niah_single_2.jsonl", "2048/vt.jsonl"]
    line = json.loads((tmp_path / "a/1024/vt.jsonl").read_text().splitlines()[0])
    for key in ("index", "input", "outputs", "length", "answer_prefix", "max_length", "depth", "params", "seed", "id"):
        assert key in line
    s = read_samples(tmp_path / "a/2048/Essay-Word-UUID@depth=50.jsonl")
    assert all(x.depth == 50 and x.params["value_type"] == "uuids" and x.length <= 2048 for x in s)
    # idempotent: nothing rewritten
    code, out, _ = cli_output(args)
    assert code == 0 and "wrote 0 file(s), 6 already up to date" in out
    # same args and seed in another folder: byte-identical
    args_b = args[:-1] + [str(tmp_path / "b")]
    assert cli_output(args_b)[0] == 0
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_more_samples_keep_earlier_ones(tmp_path, cli_output):
    base = ["generate", "--tasks", "cwe", "--lengths", "2048", "--out", str(tmp_path)]
    assert cli_output(base + ["-n", "2"])[0] == 0
    first = (tmp_path / "2048/cwe.jsonl").read_text().splitlines()
    assert cli_output(base + ["-n", "4"])[0] == 0
    assert (tmp_path / "2048/cwe.jsonl").read_text().splitlines()[:2] == first


def test_parquet(tmp_path, cli_output):
    code, _, err = cli_output(["generate", "--tasks", "fwe", "--lengths", "1024", "-n", "2", "--format", "parquet",
                               "--out", str(tmp_path)])
    assert code == 0, err
    s = read_samples(tmp_path / "1024/fwe.parquet")
    assert len(s) == 2 and s[0].params["alpha"] == 2.0 and s[0].id == s[0].content_hash()


def test_suites():
    assert [s.label for s in expand_suite("ruler")][:2] == ["niah_single_1", "niah_single_2"]
    assert len(expand_suite("ruler")) == 13
    depth = expand_suite("niah-depth")  # the three formats of Table 4 at each depth, as the seed's Tables 2-3
    assert [s.params["depth"] for s in depth] == [0, 20, 40, 50, 60, 80, 100] * 3
    assert depth[0].label == "Essay-Word-Num@depth=0" and depth[-1].label == "Repeat-Word-Num@depth=100"
    fmt = [s.label for s in expand_suite("niah-format")]
    assert len(fmt) == 9 and "Essay-Word-Num@depth=0" in fmt and "Repeat-Word-Num@depth=100" in fmt


@pytest.mark.parametrize("args,needle", [
    (["--tasks", "niah_single_9"], "unknown task"),
    (["--suite", "rulers"], "unknown suite"),
    (["--tasks", "niah_single_2", "--lengths", "200"], "max_length is too small"),
    (["--tasks", "cwe", "--lengths", "100"], "no room"),
    (["--tasks", "niah_single_2@depth=120"], "outside 0-100"),
    (["--tasks", "vt", "--tokenizer", "/nonexistent/tok"], "could not load tokenizer"),
    (["--tasks", "qa_1", "--qa-data", "/nonexistent"], "squad.json"),
    (["--tasks", "vt", "--template", "nope"], "unknown template"),
    (["--tasks", "vt", "--lengths", "4x"], "bad length"),
    (["--tasks", "vt", "--suite", "ruler"], "exactly one"),
])
def test_bad_input_one_line_exit_2(args, needle, tmp_path, cli_output):
    out_dir = tmp_path / "out"
    code, _, err = cli_output(["generate", *args, "-n", "1", "--out", str(out_dir)])
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(out_dir.rglob("*.jsonl"))  # no partial file


def test_unwritable_out(tmp_path, cli_output):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli_output(["generate", "--tasks", "vt", "-n", "1", "--lengths", "1024", "--out", str(blocker / "sub")])
    assert code == 2 and "writable" in err and err.count("\n") == 1


def test_help_lists_every_flag(cli_output):
    code, out, _ = cli_output(["generate", "--help"])
    assert code == 0
    for flag in ("--suite", "--tasks", "--lengths", "--num-samples", "--tokenizer", "--template", "--seed",
                 "--qa-data", "--out", "--format"):
        assert flag in out


def test_ruler_suite_without_qa_data_skips_qa_with_note(tmp_path, cli_output, monkeypatch):
    monkeypatch.delenv("SPANLAB_QA_DATA", raising=False)
    code, out, err = cli_output(["generate", "--suite", "ruler", "--lengths", "1024", "-n", "1", "--out", str(tmp_path)])
    assert code == 0, err
    assert "skipping qa_1, qa_2" in err and "dev-v2.0.json" in err
    assert len(list((tmp_path / "1024").glob("*.jsonl"))) == 11


def test_ruler_suite_with_qa_data(tmp_path, cli_output, qa_dir):
    code, _, err = cli_output(["generate", "--suite", "ruler", "--lengths", "1024", "-n", "1", "--qa-data", str(qa_dir),
                               "--out", str(tmp_path / "o")])
    assert code == 0, err
    assert len(list((tmp_path / "o/1024").glob("*.jsonl"))) == 13


def test_explicit_qa_task_without_data_is_an_error(tmp_path, cli_output, monkeypatch):
    monkeypatch.delenv("SPANLAB_QA_DATA", raising=False)
    code, _, err = cli_output(["generate", "--tasks", "vt,qa_2", "-n", "1", "--out", str(tmp_path)])
    assert code == 2 and "hotpot_dev_distractor_v1.json" in err
    assert not list(tmp_path.rglob("*.jsonl"))  # checked before any file is written


def test_bad_param_later_in_list_writes_nothing(tmp_path, cli_output):
    code, _, err = cli_output(["generate", "--tasks", "vt,niah_single_2@depth=150", "-n", "1", "--out", str(tmp_path)])
    assert code == 2 and "outside 0-100" in err
    assert not list(tmp_path.rglob("*.jsonl"))
