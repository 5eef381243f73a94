"""Fixtures every test folder shares."""

from __future__ import annotations

import pytest


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
