"""The CUDA eval path of the shipped Mamba2-family zoo models, every Triton kernel bounds-checked.

Run as `TRITON_INTERPRET=1 python kernel_bounds_checks.py MODEL PREFILL_CHUNK WORDS,WORDS,... NEW_TOKENS`
(tests/models/test_kernel_bounds.py does). What a CUDA run takes, on CPU: a bf16 model, a static
cache, decode steps over the decode-graph buffers (without capture), the prefill kernels (conv,
gated norm, fused SSD scan) and the decode kernels at the shipped geometry (SSD chunk 64, head 32,
state 64), spanlab_sdpa attention with the Triton decode kernel, a left-padded batch prefilled in chunks. Prints the kernels launched, the accesses
checked and every access outside the kernel's tensor arguments (tests/triton_bounds.py).
"""

from __future__ import annotations

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from triton_bounds import bounds_checked  # noqa: E402


def main(model: str, chunk: int, words: list[int], new_tokens: int) -> None:
    from spanlab import kernels
    from spanlab.models import gqa_decode
    from spanlab.models.builtin import resolve_builtin
    from spanlab.models.hf import HFBackend
    from spanlab.tasks.essays import essay_text

    # CUDA's attention: spanlab_sdpa (left-padded prefill per row, the split-KV Triton decode kernel).
    kernels.configure("decode_attn=triton")
    # (On CUDA the backend sets it on models that run SDPA; Mamba2 has no attention to set.)
    from transformers import AutoConfig

    path = resolve_builtin(f"builtin:{model}")
    attn = gqa_decode.register() if AutoConfig.from_pretrained(path).model_type != "mamba2" else None
    be = HFBackend(path, dtype="bfloat16", device="cpu", cache_implementation="static",
                   decode_graphs="eager", prefill_chunk=chunk, attn_implementation=attn)
    # On CUDA the backend installs these itself (decode=True there: decode graphs are on).
    from spanlab.models import mamba2_prefill_kernels as mpk

    print("prefill kernels:", mpk.install(be.model, decode=True))
    text = essay_text().split()
    prompts = [" ".join(text[i * 37:i * 37 + n]) for i, n in enumerate(words)]
    print("prompt tokens:", [len(be.tokenizer(p).input_ids) for p in prompts])
    with bounds_checked() as report:
        out = be.generate(prompts, max_new_tokens=new_tokens)
    print("launches:", json.dumps(dict(sorted(report.launches.items()))))
    print("accesses:", report.accesses)
    print("generated:", [len(o.text) for o in out])
    for v in report.violations:
        print("VIOLATION", v)
    print(f"violations: {len(report.violations)}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), [int(w) for w in sys.argv[3].split(",")], int(sys.argv[4]))
