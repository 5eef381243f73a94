"""`spanlab profile --chunk-mode`: a study's `profile.chunk_mode` on the command line (CPU, tiny sizes)."""

from __future__ import annotations

import csv

import pytest

from spanlab.attention.profile import configurations

TINY = ["--variants", "full,se,se-nomem", "--lengths", "128", "--chunk-sizes", "32,64", "--heads", "2",
        "--head-dim", "8", "--block-size", "8", "--top-k", "2", "--dtype", "fp32", "--mode", "layer",
        "--warmup", "0", "--repeats", "1", "--device", "cpu", "--no-plots"]


def _labels(path) -> list[str]:
    with path.open(newline="") as fh:
        return [r["label"] for r in csv.DictReader(fh)]


@pytest.mark.parametrize("mode,expected", [
    ("each", ["full", "se[M=32]", "se[M=64]", "se-nomem[M=32]", "se-nomem[M=64]"]),
    ("alternate", ["full", "se[M=32/64]", "se-nomem[M=32/64]"]),
])
def test_chunk_mode_rows_are_labelled_as_a_study_labels_them(mode, expected, tmp_path, cli, capsys):
    out = tmp_path / mode
    assert cli("profile", *TINY, "--chunk-mode", mode, "--out", out) == 0
    # The study's profile step runs the same configurations(variants, chunk_sizes, chunk_mode).
    study = [label for _, label, _ in configurations(["full", "se", "se-nomem"], [32, 64], mode)]
    assert _labels(out / "profile.csv") == study == expected
    with (out / "profile.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["status"] == "ok" and float(r["ms"]) > 0 for r in rows)
    # An alternating row records its mean chunk (what its FLOPs count); "each" rows their own.
    assert {r["label"]: int(r["chunk_size"]) for r in rows if r["variant"] == "se"} == (
        {"se[M=32/64]": 48} if mode == "alternate" else {"se[M=32]": 32, "se[M=64]": 64})
    printed = capsys.readouterr().out
    assert all(label in printed for label in expected)


def test_the_default_is_the_study_default_and_a_rerun_in_the_other_mode_adds_its_rows(tmp_path, cli):
    from spanlab.study.config import ProfileSpec

    assert ProfileSpec.model_fields["chunk_mode"].default == "each"
    assert cli("profile", *TINY, "--variants", "se", "--out", tmp_path) == 0
    assert _labels(tmp_path / "profile.csv") == ["se[M=32]", "se[M=64]"]
    assert cli("profile", *TINY, "--variants", "se", "--chunk-mode", "alternate", "--out", tmp_path) == 0
    assert _labels(tmp_path / "profile.csv") == ["se[M=32]", "se[M=64]", "se[M=32/64]"]


def test_a_bad_chunk_mode_exits_2_naming_the_flag_and_its_values(tmp_path, user_error):
    err = user_error("profile", *TINY, "--chunk-mode", "random", "--out", tmp_path / "p")
    assert err.startswith("error: --chunk-mode must be ")
    assert "'each'" in err and "'alternate'" in err and "'random'" in err
    assert not (tmp_path / "p").exists()


def test_help_lists_the_chunk_modes(cli, capsys):
    assert cli("profile", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--chunk-mode" in text and "each | alternate" in text
