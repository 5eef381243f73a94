"""Helpers every command shares: checking an output folder before any work, the `--kernels` help,
and quieting transformers' harmless warnings. Flags are validated by the config models through
`spanlab.configs.validated`.

Private (leading underscore), so the command discovery in `spanlab.cli` does not import it as a
command module. Imports neither Typer nor torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Fail now, with one line, when `path` cannot become an output folder: it is an existing file,
    or its nearest existing parent is not a folder we may write into. Creates nothing, so a
    command that stops on a later check leaves no empty folder behind."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise SpanlabError(f"{flag} {p} is an existing file, not a folder; choose another path")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SpanlabError(f"{flag} {p}: {probe} is a file, so no folder can be made under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SpanlabError(f"{flag} {p}: {probe} is not writable; choose a writable folder")
    return p


def kernels_help() -> str:
    """The help of every command's `--kernels` option, listing each choice's values."""
    from spanlab.kernels import NAMES, choices

    listed = "; ".join(f"{n}={'|'.join(choices(n))}" for n in NAMES)
    return (f"Kernel choices for this run, KEY=VALUE,... over SPANLAB_KERNELS (same results, other speed; "
            f"recorded with the run; docs/eval.md): {listed}. Default: auto everywhere.")


# transformers messages that are expected and harmless in spanlab's runs (Mamba2-family models
# without the optional CUDA packages): one per kernel, per process, per model class, they drown
# the progress output and the one error a user must read. spanlab says it once instead.
_HARMLESS = (
    "is falling back to its reference PyTorch implementation",  # causal_conv1d / mamba_ssm absent
    "`use_mamba_kernels=False` is deprecated",
)


class _HarmlessFilter:
    def __init__(self) -> None:
        self.dropped: set[str] = set()

    def filter(self, record: Any) -> bool:
        msg = record.getMessage()
        for pattern in _HARMLESS:
            if pattern in msg:
                self.dropped.add(msg.split("`")[1] if msg.startswith("`") else pattern)
                return False
        return True


class quiet_transformers:
    """Within this block, drop the known-harmless transformers warnings above (only those; every
    other warning still shows) and, at the end, print one note naming the kernels that fell back."""

    def __enter__(self) -> quiet_transformers:
        import logging

        self._filter = _HarmlessFilter()
        self._logger = logging.getLogger("transformers")
        self._handlers: list[Any] = []
        try:  # configures transformers' own stderr handler, to filter it as well
            from transformers.utils import logging as tlog

            tlog.get_logger("transformers")
        except ImportError:
            pass
        for h in self._logger.handlers:
            h.addFilter(self._filter)
            self._handlers.append(h)
        self._logger.addFilter(self._filter)  # records logged on the library root itself
        return self

    def __exit__(self, *exc: object) -> None:
        import sys

        for h in self._handlers:
            h.removeFilter(self._filter)
        self._logger.removeFilter(self._filter)
        fell_back = sorted(x for x in self._filter.dropped if not x.startswith("`use_") and " " not in x)
        if fell_back:
            print(f"note: optional kernels not installed, PyTorch reference paths used for {', '.join(fell_back)} "
                  "(correct, slower; install causal-conv1d / mamba-ssm for speed)", file=sys.stderr, flush=True)
