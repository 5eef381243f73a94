"""spanlab's own transformers model classes, registered with the Auto* factories on demand.

Every loader that turns a local folder into a model (the HF eval backend, fine-tuning, perplexity)
calls `register_all()` first, so a folder written by `spanlab convert` loads with plain
`from_pretrained` and no trust_remote_code. Registration imports transformers, so it is done
here lazily rather than at `import spanlab`.
"""

from __future__ import annotations


def register_all() -> None:
    from spanlab.models import mamba2attn, rwkv6

    mamba2attn.register()
    rwkv6.register()


__all__ = ["register_all"]
