"""The `spanlab` Typer application; each subcommand lives in its own module beside this one."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="spanlab",
    help="Measure how far long-context models really remember (RULER, NIAH sweeps) and extend it (SE-Attn, HyLoRA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain text: they give defaults as "[4096]" and "[off]", which Rich markup would
    # read as style tags and drop.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from spanlab import __version__

        typer.echo(f"spanlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print spanlab's version and exit."),
) -> None:
    """Measure how far long-context models really remember (RULER, NIAH sweeps) and extend it (SE-Attn, HyLoRA)."""
