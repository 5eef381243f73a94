"""Public surface: the dispatcher, bad input as SpanlabError, and `spanlab profile` end to end."""

import csv

import pytest
import torch
from attn_helpers import rand_qkv

from spanlab.attention import VARIANTS, get_attention, sliding_window_attention
from spanlab.cli import main
from spanlab.errors import SpanlabError


def test_variants_and_dispatch():
    assert VARIANTS == ("full", "sw", "s2", "se", "se-nomem", "se-random", "se-landmark", "se-meanq")
    q, k, v = rand_qkv(1, 2, 1, 50, 8)
    fn = get_attention("sw", window=10)
    assert torch.equal(fn(q, k, v), sliding_window_attention(q, k, v, 10))
    for name in VARIANTS:
        params = {"sw": {"window": 8}, "s2": {"group_size": 16}}.get(name, {} if name == "full" else {"chunk_size": (16, 32)})
        out = get_attention(name, **params)(q, k, v)
        assert out.shape == q.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_attention("nope"),
        lambda: get_attention("sw"),
        lambda: get_attention("full", window=3),
        lambda: get_attention("se", chunk_size=16, selection="relevance"),
        lambda: get_attention("sw", window=0)(*rand_qkv(1, 1, 1, 8, 4)),
        lambda: get_attention("full")(torch.randn(2, 8, 4), torch.randn(2, 8, 4), torch.randn(2, 8, 4)),
        lambda: get_attention("full")(*rand_qkv(1, 3, 2, 8, 4)),
        lambda: get_attention("se", chunk_size=16, top_k=-1)(*rand_qkv(1, 1, 1, 8, 4)),
    ],
)
def test_bad_input_is_a_spanlab_error(call):
    with pytest.raises(SpanlabError):
        call()


def _run(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code in (0, None)


def test_profile_cli_writes_csv_plots_and_resumes(tmp_path, capsys):
    args = ["profile", "--variants", "full,se", "--lengths", "64,128", "--heads", "2", "--head-dim", "16",
            "--chunk-sizes", "32", "--block-size", "8", "--top-k", "2", "--dtype", "fp32", "--warmup", "0",
            "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)]
    _run(args)
    rows = list(csv.DictReader((tmp_path / "profile.csv").open()))
    assert [(r["label"], r["length"]) for r in rows] == [("full", "64"), ("se[M=32]", "64"), ("full", "128"), ("se[M=32]", "128")]
    assert all(float(r["ms"]) > 0 and r["status"] == "ok" for r in rows)
    assert (tmp_path / "profile_runtime.png").stat().st_size > 0
    _run(args)  # resume: nothing new to measure
    assert len(list(csv.DictReader((tmp_path / "profile.csv").open()))) == 4


def test_profile_cli_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["profile", "--lengths", "12,x", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--lengths" in capsys.readouterr().err
