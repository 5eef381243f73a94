"""Out-of-bounds loads and stores of Triton kernels, caught on CPU under Triton's interpreter.

On a GPU an unmasked access past a tensor shows up, if at all, as "an illegal memory access" at
some later synchronisation, naming no kernel; within the caching allocator's pools it may not
show up at all and silently read a neighbour's bytes. Triton's interpreter (TRITON_INTERPRET=1)
runs the same kernel code on CPU tensors with their real addresses, so each access can be checked:
`bounds_checked()` records, for every launch, the byte extent of each tensor argument's view
(from its storage offset, sizes and strides) and fails any load or store whose active lanes
(mask true) touch a byte outside all of them. That is stricter than the GPU (which faults only
outside an allocation): a kernel reading past its own view into the rest of a storage is caught too.

Import this module only after TRITON_INTERPRET=1 is set (the tests run it in a subprocess).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Launch:
    kernel: str
    extents: list[tuple[int, int, str]]  # (first byte, one past the last byte, argument name)


@dataclass
class Report:
    launches: dict[str, int] = field(default_factory=dict)  # kernel name -> launches checked
    accesses: int = 0  # loads and stores checked
    violations: list[str] = field(default_factory=list)


def _extent(t) -> tuple[int, int]:
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    es = t.element_size()
    lo = sum(min(0, (n - 1) * s) for n, s in zip(t.shape, t.stride()))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(t.shape, t.stride()))
    return t.data_ptr() + lo * es, t.data_ptr() + (hi + 1) * es


def _tensors(fn, args, kwargs):
    names = inspect.getfullargspec(fn).args
    pairs = list(zip(names, args)) + list(kwargs.items())
    for name, a in pairs:
        if hasattr(a, "data_ptr") and hasattr(a, "stride"):
            yield name, a


@contextlib.contextmanager
def bounds_checked(max_report: int = 20):
    """Check every Triton launch inside the block; yields the Report (violations listed, not raised,
    so a test sees all of them; the caller asserts the list is empty)."""
    import triton

    if not triton.knobs.runtime.interpret:
        raise RuntimeError("bounds_checked needs TRITON_INTERPRET=1 before triton is imported")
    from triton.runtime import interpreter as I

    report = Report()
    stack: list[Launch] = []
    orig_call = I.GridExecutor.__call__
    orig_load = I.InterpreterBuilder.create_masked_load
    orig_store = I.InterpreterBuilder.create_masked_store

    def call(self, *args, **kwargs):
        name = getattr(self.fn, "__name__", "?")
        ext = [(*_extent(t), n) for n, t in _tensors(self.fn, args, kwargs)]
        stack.append(Launch(name, ext))
        report.launches[name] = report.launches.get(name, 0) + 1
        try:
            return orig_call(self, *args, **kwargs)
        finally:
            stack.pop()

    def check(kind, ptrs, mask):
        if not stack:
            return
        report.accesses += 1
        launch = stack[-1]
        addr = np.asarray(ptrs.data).astype(np.uint64).ravel()
        active = np.broadcast_to(np.asarray(mask.data, dtype=bool), np.asarray(ptrs.data).shape).ravel()
        size = np.uint64(np.dtype(I._get_np_dtype(ptrs.get_element_ty())).itemsize)
        inside = np.zeros_like(active)
        for lo, hi, _ in launch.extents:
            inside |= (addr >= np.uint64(lo)) & (addr + size <= np.uint64(hi))
        bad = active & ~inside
        if bad.any() and len(report.violations) < max_report:
            first = int(addr[bad][0])
            near = min(launch.extents, key=lambda e: min(abs(first - e[0]), abs(first - e[1])))
            off = (first - near[0]) if first >= near[0] else -(near[0] - first)
            report.violations.append(
                f"{launch.kernel}: {kind} of {int(bad.sum())} lane(s) outside every argument; first at byte "
                f"{off:+d} from {near[2]} (extent {near[1] - near[0]} bytes)")

    def load(self, ptrs, mask, other, *a, **k):
        check("load", ptrs, mask)
        return orig_load(self, ptrs, mask, other, *a, **k)

    def store(self, ptrs, value, mask, *a, **k):
        check("store", ptrs, mask)
        return orig_store(self, ptrs, value, mask, *a, **k)

    I.GridExecutor.__call__ = call
    I.InterpreterBuilder.create_masked_load = load
    I.InterpreterBuilder.create_masked_store = store
    try:
        yield report
    finally:
        I.GridExecutor.__call__ = orig_call
        I.InterpreterBuilder.create_masked_load = orig_load
        I.InterpreterBuilder.create_masked_store = orig_store
