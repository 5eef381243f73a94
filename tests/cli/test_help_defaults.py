"""Help texts give defaults in brackets ("[bf16]", "[off]"); the help is plain text, so Rich markup
does not read them as style tags and drop them (it did before: "bf16 | fp16 | no ." was printed)."""

from __future__ import annotations


def test_bracketed_defaults_survive_in_help(cli_output, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli_output(["finetune", "--help"])
    assert code == 0
    flat = " ".join(out.split())
    assert "auto | bf16 | fp16 | no [auto: bf16 on CUDA, no (fp32) on CPU]." in flat
    assert "(64K-128K contexts) [off]." in flat
    assert "Save the merged HF model [merge]." in flat
