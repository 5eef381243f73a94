"""Triton kernels of `spanlab.models.fused` (a module of their own: `triton.jit` resolves the names a
kernel uses, such as `libdevice`, among its module's globals)."""

import triton
import triton.language as tl

# CUDA's expf and rsqrtf (libdevice is their bitcode), as torch's silu and rsqrt call them.
from triton.language.extra import libdevice


@triton.jit
def rms_kernel(X, W, Y, sx, sy, H, inv_h, eps, BLOCK: tl.constexpr, LIBDEVICE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < H
    x = tl.load(X + row * sx + cols, mask=m, other=0.0).to(tl.float32)
    var = tl.sum(x * x, axis=0) * inv_h
    if LIBDEVICE:
        r = libdevice.rsqrt(var + eps)
    else:  # Triton's interpreter has no libdevice
        r = tl.math.rsqrt(var + eps)
    y = (x * r).to(Y.dtype.element_ty)
    w = tl.load(W + cols, mask=m, other=0.0)
    out = (w.to(tl.float32) * y.to(tl.float32)).to(Y.dtype.element_ty)
    tl.store(Y + row * sy + cols, out, mask=m)


@triton.jit
def silu_mul_kernel(G, U, Y, n, BLOCK: tl.constexpr, LIBDEVICE: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    g = tl.load(G + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=m, other=0.0).to(tl.float32)
    if LIBDEVICE:
        e = libdevice.exp(-g)
    else:
        e = tl.exp(-g)
    s = tl.math.div_rn(g, 1.0 + e).to(Y.dtype.element_ty)
    tl.store(Y + offs, (s.to(tl.float32) * u).to(Y.dtype.element_ty), mask=m)


@triton.jit
def rope_kernel(X, COS, SIN, OUT, S,
                sxb, sxh, sxs, sxd, scb, scs, scd, ssb, sss, ssd, sob, soh, sos,
                NH, HALF: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // S
    s = pid % S
    hb = tl.program_id(1) * BH + tl.arange(0, BH)
    d = tl.arange(0, BD)
    dm = d < HALF
    hm = hb < NH
    c1 = tl.load(COS + b * scb + s * scs + d * scd, mask=dm, other=0.0).to(tl.float32)
    c2 = tl.load(COS + b * scb + s * scs + (d + HALF) * scd, mask=dm, other=0.0).to(tl.float32)
    s1 = tl.load(SIN + b * ssb + s * sss + d * ssd, mask=dm, other=0.0).to(tl.float32)
    s2 = tl.load(SIN + b * ssb + s * sss + (d + HALF) * ssd, mask=dm, other=0.0).to(tl.float32)
    m2 = hm[:, None] & dm[None, :]
    base = X + b * sxb + s * sxs + hb[:, None] * sxh
    x1 = tl.load(base + d[None, :] * sxd, mask=m2, other=0.0).to(tl.float32)
    x2 = tl.load(base + (d[None, :] + HALF) * sxd, mask=m2, other=0.0).to(tl.float32)
    dt = OUT.dtype.element_ty
    # Rounded where eager rounds: q * cos, rotate_half(q) * sin, their sum.
    o1 = ((x1 * c1[None, :]).to(dt).to(tl.float32) + (-x2 * s1[None, :]).to(dt).to(tl.float32)).to(dt)
    o2 = ((x2 * c2[None, :]).to(dt).to(tl.float32) + (x1 * s2[None, :]).to(dt).to(tl.float32)).to(dt)
    obase = OUT + b * sob + s * sos + hb[:, None] * soh
    tl.store(obase + d[None, :], o1, mask=m2)
    tl.store(obase + d[None, :] + HALF, o2, mask=m2)
