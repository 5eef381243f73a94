"""Typed configs from their two sources, YAML files and command-line flags: reading a file's
mapping, validating it with the config's pydantic model, and a validation error as one line that
names the flag (`--num-samples: must be >= 1`) or the file and field (`ppl.yaml: batch_size ...`).

Every config model (eval, finetune, ppl, study and its blocks) and every command goes through here,
so a bad value reads the same whichever front end it came from. Imports neither torch nor (until
called) pydantic or yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from spanlab.errors import SpanlabError

M = TypeVar("M")
T = TypeVar("T")


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def as_value_error(parse: Callable[[Any], T], value: Any) -> T:
    """`parse(value)`, its SpanlabError raised as a ValueError: inside a pydantic validator that
    makes it a validation error of the field (named by its YAML key or CLI flag below); a
    SpanlabError would pass through without that name."""
    try:
        return parse(value)
    except SpanlabError as e:
        raise ValueError(str(e)) from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML config file (an empty file: none), or a one-line SpanlabError."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpanlabError(f"{p}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SpanlabError(f"{p}: invalid YAML ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(raw, dict):
        raise SpanlabError(f"{p}: expected a mapping of settings at the top level")
    return raw


def validated(model: type[M], values: Mapping[str, Any], *, flags: Mapping[str, str] | None = None,
              source: str = "") -> M:
    """`model.model_validate(values)`, with a validation error reported as the flag (or, with
    `source`, the config file field) that was wrong: `--num-samples: must be >= 1 (got 0)`."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(values))  # type: ignore[attr-defined]
    except ValidationError as e:
        raise SpanlabError(describe_validation_error(e, flags=flags, source=source)) from None


def describe_validation_error(e: Any, *, flags: Mapping[str, str] | None = None, source: str = "") -> str:
    first = e.errors()[0]
    loc = [str(x) for x in first["loc"]]
    field = loc[0] if loc else ""
    if source:
        where = f"{source}: {'.'.join(loc) or 'config'}"
    else:
        where = (flags or {}).get(field) or (flag_name(field) if field else "options")
    msg = str(first["msg"])
    msg = msg.removeprefix("Value error, ")  # a validator's own message is already a sentence
    got = first.get("input")
    more = f" (got {got!r})" if loc and not isinstance(got, (dict, list)) and repr(got) not in msg and "got" not in msg else ""
    extra = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    if msg.startswith("Input should be "):  # pydantic's own limits read as "--flag must be ..."
        return f"{where} must be {msg[len('Input should be '):]}{more}{extra}"
    return f"{where}: {msg}{more}{extra}"


__all__ = ["as_value_error", "describe_validation_error", "flag_name", "read_yaml_mapping", "validated"]
