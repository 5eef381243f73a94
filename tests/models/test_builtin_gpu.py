"""The shipped recurrent zoo models through `spanlab eval` on CUDA with every kernel at its default:
the same answers as with transformers' torch paths. A study run on a lent GPU (2026-12-06) died at
the tiny hybrid's first eval batch with an illegal memory access under the default kernels (the
fused SSD scan compiled for 32-channel heads; tests/models/test_ssd_triton_cuda.py); the kernels'
own tests use other geometries (chunk 32, state 16), so this runs the shipped ones (chunk 64, state
64, head 32) with the prefill chunked and the batch left-padded.

At 1K tokens, where the models still answer (they were trained at 512): at 2K they ramble for all
128 new tokens, and two bf16 paths that sum in different orders then part somewhere in the ramble
(H100, 2026-12-07: 11-13 of 16 such generations identical for any one kernel switched to torch,
benchmarks/hybrid_diag.sh), which says nothing about the kernels. Short answers must agree."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("spanlab_cache")]

TORCH_PATHS = "ssd=torch,mamba2_prefill=torch,mamba2_decode=torch,decode_graphs=off,decode_loop=generate"


def _eval(model: str, out, kernels: str) -> list[dict]:
    from spanlab.cli import main

    args = ["eval", "--model", f"builtin:{model}", "--tasks", "niah_single_1,vt", "--lengths", "1k",
            "--num-samples", "8", "--prefill-chunk", "256", "--batch-size", "8", "--no-progress", "--out", str(out)]
    try:
        main(args + (["--kernels", kernels] if kernels else []))
    except SystemExit as e:
        assert e.code in (0, None), f"exit {e.code}"
    return sorted((json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()),
                  key=lambda r: r["id"])


@pytest.mark.parametrize("model", ["hybrid-tiny-c512", "mamba2-tiny-c512"])
def test_default_kernels_answer_like_the_torch_paths(model, tmp_path):
    fast = _eval(model, tmp_path / "auto", "")
    ref = _eval(model, tmp_path / "torch", TORCH_PATHS)
    assert [r["id"] for r in fast] == [r["id"] for r in ref] and len(fast) == 16
    same_score = sum(a["score"] == b["score"] for a, b in zip(fast, ref))
    # Answers the model ended itself (fewer new tokens than the limit), and rambles that ran to it.
    limit = max(r["new_tokens"] for r in ref)
    answers, rambles = [], []
    for a, b in zip(fast, ref):
        (answers if b["new_tokens"] < limit else rambles).append((a, b))

    def common_words(a, b):
        n = 0
        for x, y in zip(a["prediction"].split(), b["prediction"].split()):
            if x != y:
                break
            n += 1
        return n

    same_answers = sum(a["prediction"] == b["prediction"] for a, b in answers)
    prefixes = [common_words(a, b) for a, b in rambles]
    print(f"{model}: {same_score}/16 scores as the torch paths, {same_answers}/{len(answers)} answers identical, "
          f"rambles' common prefix (words) {prefixes}; torch niah mean "
          f"{sum(r['score'] for r in ref if r['task'] == 'niah_single_1') / 8:.1f}")
    # The model must read at this length, or the comparison is between two kinds of noise.
    assert sum(r["score"] for r in ref if r["task"] == "niah_single_1") >= 4 * 100
    assert len(answers) >= 4
    # bf16 kernels sum in another order than torch: a near-tie may flip a greedy token now and then
    # (one sample of 16), and a ramble of 128 tokens parts somewhere (H100, 2026-12-07: after 2 to 27
    # words); its first word comes from the prefill's last position, so it must agree.
    assert same_score >= 15
    assert same_answers >= len(answers) - 1, [(a["prediction"], b["prediction"]) for a, b in answers]
    assert sum(n >= 1 for n in prefixes) >= len(prefixes) - 1, prefixes
