"""Triton, where it is installed: the one import and interpreter test every kernel module uses.

Triton is optional (CPU installs and CI without the dev extra run the torch paths), so each
kernel module asks here instead of importing it in its own try/except. Its interpreter
(TRITON_INTERPRET=1) must be switched on before triton is first imported — its language functions
are bound then — which is why the CPU kernel tests start a subprocess rather than set the
variable in-process.
"""
from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def load() -> tuple[ModuleType | None, ModuleType | None]:
    """(triton, triton.language), or (None, None) when Triton is not installed."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None, None
    return triton, tl


def available() -> bool:
    return load()[0] is not None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 before import)."""
    triton = load()[0]
    return triton is not None and bool(triton.knobs.runtime.interpret)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): tile sizes, without importing Triton for it."""
    return 1 << max(0, int(n) - 1).bit_length()
