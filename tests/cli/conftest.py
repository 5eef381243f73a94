"""Fixtures of the CLI tests: run `spanlab` in-process, and two tiny saved models (no downloads)."""

from __future__ import annotations

import pytest


@pytest.fixture
def user_error(capsys, cli):
    """user_error(*args) -> the one-line message of a command that must fail as bad input."""

    def run(*args: object) -> str:
        code = cli(*args)
        err = capsys.readouterr().err
        assert code == 2, (code, err)
        assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    return run


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    import torch
    import transformers as T

    from spanlab.tasks.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp("cli_models") / "llama"
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d
