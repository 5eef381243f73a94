from __future__ import annotations

import pytest


@pytest.fixture
def cli():
    """Run `spanlab ARGS` in-process; returns the exit code."""

    def run(*args: str) -> int:
        from spanlab.cli import main

        try:
            main([str(a) for a in args])
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    return run
