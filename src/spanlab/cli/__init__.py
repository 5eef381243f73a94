"""Command-line entry point.

Every module in this package except `app` and private (`_`) ones registers its subcommands on
`spanlab.cli.app.app` when imported; `load_app` discovers them, so adding a command touches only
its own file. Command modules import heavy libraries (torch, transformers) inside the command
body, so `spanlab --help` starts fast.

Importing this package imports neither Typer nor the command modules: `main` first offers a
`spanlab generate` command line to the Typer-free parser in `spanlab.cli._generate` (Typer and
pydantic cost ~0.3 s CPU of start-up, more than a whole 100-sample vt run), and loads the Typer
application only for everything that parser leaves to it. `spanlab.cli.app` (the attribute)
still gives the Typer application with every command registered.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from spanlab.errors import SpanlabError

_APP: Any = None


def load_app() -> Any:
    """The Typer application with every command module imported (registered)."""
    global _APP
    if _APP is None:
        import importlib
        import pkgutil

        from spanlab.cli.app import app

        for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            if mod != "app" and not mod.startswith("_"):
                importlib.import_module(f"{__name__}.{mod}")
        _APP = app
    return _APP


class _Package(types.ModuleType):
    """`spanlab.cli.app` is the Typer application (as when this package imported it eagerly), built
    on first access; importing the `app` submodule sets that attribute, which is ignored here."""

    @property
    def app(self) -> Any:
        return load_app()

    @app.setter
    def app(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package


def main(argv: list[str] | None = None) -> None:
    """Run the `spanlab` command line (`argv` without the program name; None: sys.argv[1:]).

    Exits like a click standalone command: SystemExit(0) on success, 2 with a one-line
    "error: ..." for a SpanlabError, Typer's own codes and messages for usage errors.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args[:1] == ["generate"]:
            from spanlab.cli._generate import parse_args, run_generate

            kwargs = parse_args(args[1:])
            if kwargs is not None:
                _run_standalone(run_generate, kwargs)
        load_app()(args=argv, standalone_mode=True)
    except SpanlabError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_standalone(fn: Any, kwargs: dict[str, Any]) -> None:
    """Call a command body with the exits Typer's standalone mode gives it: 0 when it returns,
    130 on Ctrl-C, 1 on a closed output pipe."""
    import errno
    import os

    try:
        fn(**kwargs)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
        try:  # the reader is gone: let the exit-time flush of stdout go nowhere instead of failing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
            pass
        raise SystemExit(1) from None
    raise SystemExit(0)


__all__ = ["app", "load_app", "main"]
