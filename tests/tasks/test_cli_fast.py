"""`spanlab generate` without Typer: the fast parser must take exactly what Typer would, hand
everything else to Typer, and give the same files, messages and exit codes either way."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spanlab.cli import _generate, load_app
from spanlab.cli._generate import OPTIONS, ProgressBar, parse_args


def _typer_kwargs(argv, monkeypatch):
    """The keyword arguments Typer's `generate` command passes to `run_generate` for `argv`."""
    seen = {}
    monkeypatch.setattr(_generate, "run_generate", lambda **kw: seen.update(kw))
    load_app()(args=["generate", *argv], standalone_mode=False)
    return seen


def test_options_table_matches_the_typer_declaration():
    import typer.main

    cmd = typer.main.get_command(load_app()).commands["generate"]
    declared = {p.name: p for p in cmd.params if p.name != "help"}
    assert set(declared) == set(OPTIONS)
    for name, (opts, kind, default) in OPTIONS.items():
        p = declared[name]
        assert sorted(p.opts) == sorted(opts) and not p.secondary_opts, name
        assert p.is_flag == (kind == "flag"), name
        assert p.default == default or (kind == "path" and Path(p.default) == default), name


ACCEPTED = [
    ["--tasks", "vt"],
    ["--tasks=vt,cwe", "--lengths=4k,8192", "-n", "7", "--seed", "3", "--out", "some/dir"],
    ["--suite", "ruler", "--qa-data", "/x/y", "--template", "meta-llama3", "--force", "--format", "parquet"],
    ["--tasks", "niah_single_2@depth=50@haystack=repeat", "--num-samples", "12", "--allow-download",
     "--tokenizer", "/tok", "--squad", "a.json", "--hotpotqa", "b.json"],
    ["--out", "o", "--tasks", "fwe", "--num-samples=0", "--seed=007"],
    [],
]


@pytest.mark.parametrize("argv", ACCEPTED)
def test_fast_parser_agrees_with_typer(argv, monkeypatch):
    fast = parse_args(argv)
    assert fast is not None, "a plain command line must not need Typer"
    assert fast == _typer_kwargs(argv, monkeypatch)


@pytest.mark.parametrize("argv", [
    ["--help"], ["--tasks", "vt", "--help"], ["--bogus"], ["--tasks", "vt", "--tasks", "cwe"],
    ["--force=1"], ["--tasks"], ["--tasks", "-n"], ["-n", "-3"], ["-n", "1_000"], ["-n", " 5"], ["-n", "5.0"],
    ["-n5"], ["--seed", "99999999999999999999"], ["positional"], ["--", "--tasks"], ["--tasks="], ["--task", "vt"],
])
def test_anything_unusual_goes_to_typer(argv):
    assert parse_args(argv) is None


def test_shell_completion_requests_go_to_typer(monkeypatch):
    monkeypatch.setenv("_SPANLAB_COMPLETE", "bash_complete")
    assert parse_args(["--tasks", "vt"]) is None


def test_generate_does_not_import_typer_or_pydantic(tmp_path):
    code = ("import sys\nfrom spanlab.cli import main\n"
            f"try:\n    main(['generate', '--tasks', 'vt', '--lengths', '1024', '-n', '2', '--out', {str(tmp_path)!r}])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = sorted(m for m in ('typer', 'pydantic', 'rich', 'click', 'transformers', 'torch') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "1024/vt.jsonl").exists()


@pytest.mark.parametrize("extra", [
    ["--tasks", "vt,fwe", "--lengths", "1024", "-n", "2"],
    ["--tasks", "niah_single_2@depth=150", "-n", "1"],  # a SpanlabError: one line, exit 2
    ["--tasks", "vt", "--lengths", "4x", "-n", "1"],
    ["--tasks", "vt", "--suite", "ruler", "-n", "1"],
])
def test_fast_and_typer_paths_give_the_same_files_output_and_exit(extra, tmp_path, cli_output, monkeypatch):
    results = []
    for path in ("fast", "typer"):
        out_dir = tmp_path / path
        with monkeypatch.context() as m:
            if path == "typer":
                m.setattr(_generate, "parse_args", lambda argv: None)
            code, out, err = cli_output(["generate", *extra, "--out", str(out_dir)])
        files = {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(out_dir.rglob("*.jsonl"))}
        results.append((code, out.replace(str(out_dir), "OUT"), err, files))
    assert results[0] == results[1]


def test_typer_path_still_answers_help_and_usage_errors(cli_output):
    code, out, _ = cli_output(["generate", "--help"])
    assert code == 0 and "--num-samples" in out and "Usage" in out
    code, _, err = cli_output(["generate", "--tasks", "vt", "--bogus"])
    assert code == 2 and "No such option" in err


def test_manifest_and_summary(tmp_path, cli_output):
    code, out, _ = cli_output(["generate", "--tasks", "cwe", "--lengths", "1024", "-n", "1", "--out", str(tmp_path)])
    assert code == 0 and out == f"wrote 1 file(s), 0 already up to date, in {tmp_path}\n"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tasks"] == ["cwe"] and manifest["lengths"] == [1024] and manifest["tokenizer"] == "builtin"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal():
    tty = _Tty()
    bar = ProgressBar(4, tty)
    bar.describe("vt @ 1024")
    bar.advance(2)
    bar.advance(2)
    bar.close()
    text = tty.getvalue()
    assert "vt @ 1024" in text and "4/4" in text and text.endswith("\n")
    pipe = io.StringIO()
    bar = ProgressBar(4, pipe)
    bar.describe("vt @ 1024")
    bar.advance(4)
    bar.close()
    assert pipe.getvalue() == ""


def test_cli_app_attribute_is_the_typer_application():
    import typer

    import spanlab.cli
    import spanlab.cli.app  # importing the submodule must not replace the attribute

    assert isinstance(spanlab.cli.app, typer.Typer)
    assert "generate" in {c.name for c in spanlab.cli.app.registered_commands}
