"""Shared fixtures for spanlab's own model classes (tiny random configs, no downloads)."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

from spanlab.tasks.diskcache import ENV

# --import-mode=importlib puts no test folder on sys.path; make the reference helpers importable.
sys.path.insert(0, str(pathlib.Path(__file__).parent))


@pytest.fixture(scope="session")
def tokenizer():
    from spanlab.tasks.tokenizer import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="module")
def spanlab_cache(tmp_path_factory):
    """A private spanlab cache folder for the module that asks for it (converted models, token counts), not the user's,
    unless the caller chose one (or `off`)."""
    if ENV in os.environ:
        yield os.environ[ENV]
        return
    old = os.environ.get(ENV)
    os.environ[ENV] = str(tmp_path_factory.mktemp("spanlab-cache"))
    yield os.environ[ENV]
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old
