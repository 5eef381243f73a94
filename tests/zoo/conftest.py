"""Fixtures the zoo/study tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A random-weight tiny Transformer++ with the built-in tokenizer: enough to drive the pipeline."""
    from spanlab.tasks import load_tokenizer
    from spanlab.zoo import build_model

    d = tmp_path_factory.mktemp("model")
    tok = load_tokenizer(None)
    m = build_model("transformer", "tiny", vocab_size=len(tok), seed=0, pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d
