"""spanlab's SSD scan computes transformers' Mamba2 `mamba2_chunk_scan`, without its 6-D tensors.

References: transformers' own torch fallback (the function `install()` replaces) and, independent
of both chunked forms, the plain per-position recurrence in float64.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest

torch = pytest.importorskip("torch")

from spanlab.models import ssd
from spanlab.models.hf_compat import is_torch_fallback


def reference_scan():
    """transformers' torch fallback, whether or not install() has replaced the module global."""
    ssd.uninstall()
    from transformers.models.mamba2 import modeling_mamba2

    fn = modeling_mamba2.mamba2_chunk_scan
    assert fn is not ssd.ssd_chunk_scan and is_torch_fallback(fn, ssd.GLOBAL)
    return fn


def draw(b, L, h, p, g, n, *, seed, init=True, dtype=torch.float32, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    t = {"x": r(b, L, h, p), "dt": r(b, L, h), "A": -(torch.rand(h, generator=gen) * 3 + 0.1), "B": r(b, L, g, n, scale=0.5),
             "C": r(b, L, g, n, scale=0.5), "D": r(h), "dt_bias": r(h), "s0": r(b, h, p, n) if init else None}
    if requires_grad:
        for v in t.values():
            if v is not None:
                v.requires_grad_(True)
    return t


def call(fn, t, chunk, *, final=True, limit=(0.0, float("inf"))):
    return fn(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=chunk, D=t["D"], dt_bias=t["dt_bias"],
              initial_states=t["s0"], dt_softplus=True, dt_limit=limit, return_final_states=final)


def recurrence(t, limit=(0.0, float("inf"))):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T;  y_t = h_t C_t + D x_t  (float64, one position at a time)."""
    f = {k: (v.detach().double() if v is not None else None) for k, v in t.items()}
    b, L, h, p = f["x"].shape
    g, n = f["B"].shape[2], f["B"].shape[3]
    dt = torch.clamp(torch.nn.functional.softplus(f["dt"] + f["dt_bias"]), *limit)
    Bh = f["B"].repeat_interleave(h // g, dim=2)
    Ch = f["C"].repeat_interleave(h // g, dim=2)
    state = f["s0"].clone() if f["s0"] is not None else torch.zeros(b, h, p, n, dtype=torch.float64)
    ys = []
    for i in range(L):
        decay = torch.exp(dt[:, i] * f["A"])  # (b, h)
        state = state * decay[..., None, None] + (dt[:, i, :, None] * f["x"][:, i])[..., None] * Bh[:, i, :, None, :]
        ys.append((state * Ch[:, i, :, None, :]).sum(-1) + f["D"][:, None] * f["x"][:, i])
    return torch.stack(ys, dim=1), state


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


# (batch, length, heads, head_dim, groups, state, chunk): lengths that do not divide the chunk,
# shorter than one chunk, exactly one chunk; one group and several.
SHAPES = [(2, 37, 4, 8, 2, 16, 16), (1, 64, 6, 4, 3, 8, 16), (3, 5, 4, 8, 1, 8, 16), (2, 100, 8, 16, 4, 16, 32),
          (1, 32, 4, 8, 1, 8, 32)]


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_final_state_equal_transformers_and_the_recurrence(shape, init):
    b, L, h, p, g, n, chunk = shape
    ref_fn = reference_scan()
    t = draw(b, L, h, p, g, n, seed=L * 7 + h + init, init=init)
    limit = (0.0, 1.5)  # a real clamp: softplus of N(0, 2) exceeds 1.5 often
    out, final = call(ssd.ssd_chunk_scan, t, chunk, limit=limit)
    ref_out, ref_final = call(ref_fn, t, chunk, limit=limit)
    assert out.dtype == ref_out.dtype == torch.float32 and final.dtype == torch.float32
    assert out.shape == (b, L, h, p) and final.shape == (b, h, p, n)
    assert rel(out, ref_out) < 1e-6 and rel(final, ref_final) < 1e-6
    seq_out, seq_final = recurrence(t, limit)
    assert rel(out, seq_out) < 1e-5 and rel(final, seq_final) < 1e-5
    # Without return_final_states: the output alone, the same.
    assert torch.equal(call(ssd.ssd_chunk_scan, t, chunk, final=False, limit=limit), out)


def test_non_contiguous_inputs_give_a_contiguous_output():
    """Mixers pass views of one projection (x, B, C split from it) and `.view()` the result."""
    ref_fn = reference_scan()
    b, L, h, p, g, n = 2, 45, 4, 8, 2, 16
    gen = torch.Generator().manual_seed(4)
    proj = torch.randn(b, L, h * p + 2 * g * n + h, generator=gen)
    x, B, C, dt = proj.split([h * p, g * n, g * n, h], dim=-1)
    t = {"x": x.view(b, L, h, p), "dt": dt, "A": -torch.rand(h, generator=gen), "B": B.view(b, L, g, n), "C": C.view(b, L, g, n),
             "D": torch.randn(h, generator=gen), "dt_bias": torch.randn(h, generator=gen), "s0": None}
    out, _ = call(ssd.ssd_chunk_scan, t, 16)
    assert out.is_contiguous() and out.view(b, L, -1).shape == (b, L, h * p)
    assert rel(out, call(ref_fn, t, 16)[0]) < 1e-6


def test_bf16_inputs_accumulate_in_float32_like_transformers():
    ref_fn = reference_scan()
    t = draw(2, 45, 4, 8, 2, 16, seed=3, dtype=torch.bfloat16)
    out, final = call(ssd.ssd_chunk_scan, t, 16)
    ref_out, ref_final = call(ref_fn, t, 16)
    assert out.dtype == torch.float32
    assert rel(out, ref_out) < 1e-6 and rel(final, ref_final) < 1e-6


def test_gradients_equal_transformers():
    ref_fn = reference_scan()
    grads = []
    for fn in (ssd.ssd_chunk_scan, ref_fn):
        t = draw(2, 41, 6, 8, 3, 8, seed=11, requires_grad=True)
        out, final = call(fn, t, 16)
        # Weights drawn once (fixed seed) so both scans get the same upstream gradient.
        gen = torch.Generator().manual_seed(5)
        loss = (out * torch.randn(out.shape, generator=gen)).sum() + (final * torch.randn(final.shape, generator=gen)).sum()
        loss.backward()
        grads.append({k: v.grad for k, v in t.items() if v is not None})
    ours, theirs = grads
    for k in theirs:
        assert ours[k] is not None and rel(ours[k], theirs[k]) < 1e-5, k


def test_packed_sequences_are_refused_like_transformers():
    t = draw(1, 8, 2, 4, 1, 4, seed=0)
    with pytest.raises(ValueError, match="packed sequences"):
        ssd.ssd_chunk_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=4, seq_idx=torch.zeros(1, 8, dtype=torch.int32))


def test_install_is_idempotent_reversible_and_covers_every_mamba2_module():
    ssd.uninstall()
    before = {m: getattr(importlib.import_module(m), ssd.GLOBAL) for m in ssd.MODULES
              if importlib.util.find_spec(m) is not None}
    assert before, "transformers has none of the Mamba2-family modules"
    first = ssd.install()
    assert sorted(first) == sorted(before)  # every module with transformers' torch fallback
    assert ssd.install() == first  # idempotent
    assert all(getattr(importlib.import_module(m), ssd.GLOBAL) is ssd.ssd_chunk_scan for m in first)
    ssd.uninstall()
    assert all(getattr(importlib.import_module(m), ssd.GLOBAL) is fn for m, fn in before.items())
    ssd.uninstall()  # nothing left to undo: a no-op


def test_install_leaves_a_real_kernel_alone(monkeypatch):
    from transformers.models.mamba2 import modeling_mamba2

    ssd.uninstall()

    def kernel(*args, **kwargs):  # stands in for mamba-ssm's mamba_chunk_scan_combined
        raise AssertionError("not called")

    monkeypatch.setattr(modeling_mamba2, ssd.GLOBAL, kernel)
    done = ssd.install()
    assert modeling_mamba2.__name__ not in done and modeling_mamba2.mamba2_chunk_scan is kernel
    ssd.uninstall()


@pytest.mark.parametrize("arch", ["mamba2", "bamba", "zamba2", "falcon_h1"])
def test_tiny_models_give_the_same_logits_and_generation(arch, tokenizer, build_tiny):
    """Whole models: one forward (with the cache, so final states are used by the next step) and a
    greedy continuation, with transformers' scan and with spanlab's."""
    model = build_tiny(arch)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(5, len(tokenizer), (2, 75), generator=gen)  # 75: not a multiple of the chunk (32)
    mask = torch.ones_like(ids)
    ids[1, :9] = tokenizer.pad_token_id
    mask[1, :9] = 0
    module = importlib.import_module(type(model).__module__)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape[1])
        return ssd.ssd_chunk_scan(*args, **kwargs)

    results = []
    for use_ssd in (False, True):
        if use_ssd:
            assert module.__name__ in ssd.install()
            module.mamba2_chunk_scan = counted  # undone by uninstall(), which restores the original
        else:
            ssd.uninstall()
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True, output_logits=True)
        results.append((logits, out))
    module.mamba2_chunk_scan = ssd.ssd_chunk_scan
    ssd.uninstall()
    assert calls and max(calls) == 75  # the whole prompt went through spanlab's scan
    (l0, o0), (l1, o1) = results
    scale = float(l0.abs().max())
    assert float((l1 - l0).abs().max()) <= 1e-5 * scale
    assert torch.equal(o0.sequences, o1.sequences)
    for a, b in zip(o1.logits, o0.logits):
        assert float((a - b).abs().max()) <= 1e-5 * scale


def largest_allocation(fn) -> int:
    """Bytes of the largest single CPU allocation made while `fn` runs (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


def test_no_tensor_larger_than_the_decay_matrix():
    """The contract that keeps a 16K prompt on the card: no buffer larger than one float32
    (batch, chunks, heads, l, l) decay matrix. transformers 5.17's fallback builds a
    (batch, chunks, l, l, heads, state) tensor, `state` times larger; later releases' einsums
    may stay within the bound, so only its size is asserted for the old layout."""
    b, L, h, p, g, n, chunk = 1, 512, 8, 16, 1, 32, 64
    t = draw(b, L, h, p, g, n, seed=1)
    bound = b * (L // chunk) * h * chunk * chunk * 4
    with torch.inference_mode():
        ours = largest_allocation(lambda: call(ssd.ssd_chunk_scan, t, chunk))
    # At a 16K prompt of a 1B Mamba2 (64 heads, state 128, chunk 256) this bound is 1 GiB, where
    # the 6-D contraction of 5.17 needs 128 GiB: what the GPU benchmark ran out of memory on.
    assert ours <= bound, f"largest buffer {ours} B > decay matrix {bound} B"
    # The measurement sees buffers of that size (it is not vacuous): the decay matrix itself.
    assert ours >= bound // 2


def test_hf_backend_installs_the_scan_for_mamba2_family_and_the_kernel_choice_turns_it_off(tiny_models, kernel_choices):
    from spanlab.models.hf import HFBackend

    ssd.uninstall()
    llama = HFBackend(tiny_models["llama"], device="cpu")
    assert llama.describe()["ssd_scan"] is None and not ssd.installed()  # not a Mamba2-family model
    on = HFBackend(tiny_models["mamba2"], device="cpu")
    assert on.describe()["ssd_scan"] == "spanlab" and ssd.installed()
    text_on = on.generate(["Hello there, general"], 8)
    kernel_choices("ssd=off")
    off = HFBackend(tiny_models["mamba2"], device="cpu")
    assert off.describe()["ssd_scan"] == "transformers" and not ssd.installed()
    assert off.generate(["Hello there, general"], 8) == text_on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scan_equals_transformers_within_the_memory_bound(monkeypatch, kernel_choices):
    # The float32-operand option equals transformers' float32 math; the default bf16 operands on
    # CUDA are checked to their tolerance in tests/models/test_mamba2_kernels_ssd.py.
    kernel_choices("ssd_matmul=float32")
    ref_fn = reference_scan()
    for dtype in (torch.float32, torch.bfloat16):
        t = {k: (v.cuda() if v is not None else None) for k, v in draw(2, 1000, 8, 64, 2, 64, seed=9, dtype=dtype).items()}
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out, final = call(ssd.ssd_chunk_scan, t, 256)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        ref_out, ref_final = call(ref_fn, t, 256)
        assert rel(out, ref_out) < 1e-5 and rel(final, ref_final) < 1e-5
        # A few buffers of the (batch, chunks, heads, l, l) float32 decay matrix and of the input's
        # size, never the (batch, chunks, l, l, heads, state) contraction of 5.17 (1 GiB here).
        decay, inputs = 2 * 4 * 8 * 256 * 256 * 4, 2 * 1024 * 8 * 64 * 4
        assert peak <= 3 * decay + 16 * inputs, f"peak {peak / 2**20:.0f} MiB vs decay matrix {decay / 2**20:.0f} MiB"
