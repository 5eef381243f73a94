"""spanlab.units: one reading of lengths, counts and depths, and every command uses it."""

from __future__ import annotations

import pytest

from spanlab.errors import SpanlabError
from spanlab.units import (
    format_length,
    parse_count,
    parse_depths,
    parse_length,
    parse_lengths,
)


@pytest.mark.parametrize("text,n", [("4096", 4096), ("4k", 4096), ("4K", 4096), (" 8k ", 8192), ("1.5k", 1536),
                                     ("0.5k", 512), ("1m", 1048576), ("1M", 1048576), (300, 300)])
def test_lengths_are_binary_multiples(text, n):
    assert parse_length(text) == n


@pytest.mark.parametrize("text,why", [("4kk", "write e.g."), ("1k6", "write e.g."), ("", "empty"),
                                       ("-4k", "negative"), ("0", "at least 1"), ("1.3k", "1331.2 tokens"),
                                       ("4096.0", "whole number"), ("4x", "unknown unit"), (0, "positive"),
                                       (True, "write e.g.")])
def test_bad_lengths_say_what_is_wrong_and_show_a_valid_one(text, why):
    with pytest.raises(SpanlabError) as e:
        parse_length(text)
    assert why in str(e.value) and "4k" in str(e.value)


def test_format_length_reads_back():
    assert [format_length(n) for n in (4096, 1536, 1280, 1048576, 1000, 100)] == ["4K", "1.5K", "1.25K", "1M",
                                                                                  "1000", "100"]
    for n in (1, 512, 1536, 4096, 5000, 131072, 3 * 1024**2):
        assert parse_length(format_length(n)) == n


def test_counts_are_si_and_depths_percent():
    assert parse_count("200M") == 200_000_000 and parse_count("1.5k") == 1500 and parse_count("2B") == 2 * 10**9
    with pytest.raises(SpanlabError, match="token count"):
        parse_count("4kk")
    assert parse_lengths("4k,8k,") == [4096, 8192] and parse_lengths(["2k", 512]) == [2048, 512]
    assert parse_depths("0,12.5,100") == [0.0, 12.5, 100.0] and parse_depths("") is None
    with pytest.raises(SpanlabError, match="--depths.*0 to 100"):
        parse_depths("50,101")


def test_study_and_pretrain_read_lengths_and_counts_the_same_way():
    from spanlab.pretrain.run import parse_count as pretrain_count
    from spanlab.study import resolve_length

    assert resolve_length("1.5k", None) == 1536 and resolve_length("2x", 512) == 1024
    assert pretrain_count("1.5k") == 1500
    for bad in ("4kk", "1k6"):
        with pytest.raises(SpanlabError):
            resolve_length(bad, 512)


@pytest.mark.parametrize("args", [
    ["eval", "--model", "/no/such/model", "--out", "{tmp}/run", "--tasks", "vt", "--lengths", "4kk"],
    ["eval", "--model", "/no/such/model", "--out", "{tmp}/run", "--tasks", "vt", "--lengths", "1k6"],
    ["generate", "--tasks", "vt", "--lengths", "4kk", "--out", "{tmp}/run"],
    ["train", "--arch", "mamba2", "--context", "1k6", "--out", "{tmp}/run"],
    ["finetune", "--model", "/no/such/model", "--data", "{tmp}", "--out", "{tmp}/run", "--chunk-size", "4kk"],
    ["profile", "--lengths", "4kk", "--out", "{tmp}/run"],
    ["ppl", "--model", "/no/such/model", "--data", "{tmp}", "--lengths", "4kk"],
])
def test_every_command_rejects_4kk_and_1k6_with_exit_2(args, tmp_path, user_error):
    err = user_error(*[a.format(tmp=tmp_path) for a in args])
    assert "bad length" in err and "write e.g." in err
    assert not (tmp_path / "run").exists()


def test_eval_lengths_4k_means_4096(tmp_path):
    from spanlab.configs import validated
    from spanlab.eval import EvalConfig

    cfg = validated(EvalConfig, {"model": "m", "out": str(tmp_path), "lengths": "4k,1.5k"})
    assert cfg.lengths == [4096, 1536]
    assert validated(EvalConfig, {"model": "m", "out": "o", "lengths": ["8k", 512]}).lengths == [8192, 512]
