"""Fixtures every test folder shares."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where CUDA is not available (one rule for every folder)."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu:
        item.add_marker(skip)


def _cli(*args: object) -> int:
    from spanlab.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def cli():
    """Run `spanlab ARGS` in-process; returns the exit code."""
    return _cli


@pytest.fixture
def cli_output(capsys):
    """cli_output(argv) runs `spanlab ARGV` in-process; returns (exit code, stdout, stderr)."""

    def run(argv: list[object]) -> tuple[int, str, str]:
        code = _cli(*argv)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def kernel_choices():
    """Force kernel choices (spanlab.kernels) for one test: `kernel_choices("se_memory=triton")`;
    each call stacks on the previous ones, and all are undone when the test ends."""
    import contextlib

    from spanlab import kernels

    with contextlib.ExitStack() as stack:
        yield lambda spec: stack.enter_context(kernels.use(spec))
