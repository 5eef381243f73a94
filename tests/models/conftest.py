"""Shared fixtures for spanlab's own model classes (tiny random configs, no downloads)."""

from __future__ import annotations

import pathlib
import sys

import pytest

# --import-mode=importlib puts no test folder on sys.path; make the reference helpers importable.
sys.path.insert(0, str(pathlib.Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _cli(*args: str) -> int:
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


@pytest.fixture(scope="session")
def tokenizer():
    from spanlab.tasks.tokenizer import load_tokenizer

    return load_tokenizer(None)
