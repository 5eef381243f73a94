"""The one parser and formatter for lengths, token counts and needle depths.

Every command and config file reads these through this module, so `4k` means the same thing
everywhere:

* **Lengths** (context / window / chunk sizes, in tokens) are binary: `k` = 1024, `m` = 1024².
  `4096`, `4k`, `4K` -> 4096; `1.5k` -> 1536; `1m` -> 1048576. The value must be a whole, positive
  number of tokens: `1.3k` (1331.2) is rejected, as are `4kk`, `1k6`, `4096.0`, `0` and `-4k`.
* **Counts** (token budgets such as `spanlab train --tokens`) are SI, as parameter and token counts
  are usually written: `k` = 10³, `M` = 10⁶, `B`/`G` = 10⁹ (any case). `200M` -> 200,000,000;
  `1.5k` -> 1500. Again a whole positive number.
* **Depths** (where a needle sits) are a percentage of the haystack, a number from 0 to 100; that
  one number is the Sample `depth` field, the journal record's `depth`, and the report's axis.

This module imports nothing heavy (no torch, no pydantic): `spanlab.tasks` may use it.
"""

from __future__ import annotations

import re
from fractions import Fraction

from spanlab.errors import SpanlabError

_LENGTH_UNITS = {"": 1, "k": 1024, "m": 1024**2}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
# One number (digits, optionally one decimal part) and at most one unit letter; nothing else.
_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]?)")


def _parse(text: str | int, units: dict[str, int], what: str, example: str) -> int:
    if isinstance(text, bool):  # bool is an int subclass; True is not a length
        raise SpanlabError(f"bad {what} {text!r}; write e.g. {example}")
    if isinstance(text, int):
        if text < 1:
            raise SpanlabError(f"bad {what} {text}: must be a positive whole number, e.g. {example}")
        return text
    raw = str(text).strip()
    m = _NUMBER.fullmatch(raw)
    if not m:
        hint = " (a negative value)" if raw.startswith("-") else " (empty)" if not raw else ""
        raise SpanlabError(f"bad {what} {text!r}{hint}; write e.g. {example}")
    num, unit = m.group(1), m.group(2).lower()
    if unit not in units:
        raise SpanlabError(f"bad {what} {text!r}: unknown unit {m.group(2)!r} "
                           f"(use {'/'.join(u for u in units if u)}); write e.g. {example}")
    if unit == "" and "." in num:
        raise SpanlabError(f"bad {what} {text!r}: a number of tokens is a whole number; write e.g. {example}")
    value = Fraction(num) * units[unit]
    if value.denominator != 1:
        raise SpanlabError(f"bad {what} {text!r}: it is {float(value):g} tokens, not a whole number; "
                           f"write e.g. {example}")
    if value < 1:
        raise SpanlabError(f"bad {what} {text!r}: must be at least 1 token; write e.g. {example}")
    return int(value)


def parse_length(text: str | int) -> int:
    """A length in tokens: `4096`, `4k` (= 4096), `1.5k` (= 1536), `1m` (= 1048576)."""
    return _parse(text, _LENGTH_UNITS, "length", "4096, 4k or 1.5k")


def parse_lengths(text: str | list[str | int] | None, flag: str = "--lengths") -> list[int]:
    """Comma-separated lengths (`4k,8k`) or a list of them, in the given order. Empty -> []."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue  # "4k,8k," : a trailing comma is harmless
        try:
            out.append(parse_length(item))
        except SpanlabError as e:
            raise SpanlabError(f"{flag}: {e}") from None
    return out


def format_length(n: int) -> str:
    """The short form of a length that `parse_length` reads back: 4096 -> "4K", 1536 -> "1.5K",
    1048576 -> "1M"; lengths that are not a simple multiple of 1K stay plain ("1000")."""
    for unit, size in (("M", 1024**2), ("K", 1024)):
        if n >= size and (n * 100) % size == 0:  # at most two decimals, so it reads back exactly
            return f"{Fraction(n, size).__float__():g}{unit}"
    return str(n)


def parse_count(text: str | int) -> int:
    """A token count, SI units: `200M` = 200,000,000; `1.5k` = 1500; `2B` = 2,000,000,000."""
    return _parse(text, _COUNT_UNITS, "token count", "20M, 200M or 1500000")


def parse_depth(value: str | float) -> float:
    """A needle depth: a percentage 0-100 (`50`, `12.5`)."""
    try:
        d = float(value)
    except (TypeError, ValueError):
        raise SpanlabError(f"bad depth {value!r}; a depth is a percentage from 0 to 100, e.g. 50") from None
    if not 0 <= d <= 100:
        raise SpanlabError(f"bad depth {value!r}: outside 0-100; a depth is the needle's position in percent "
                           "of the haystack, from 0 to 100")
    return d


def parse_depths(text: str | None, flag: str = "--depths") -> list[float] | None:
    """Comma-separated depths in percent (`0,50,100`); None or empty -> None."""
    if not text or not text.strip():
        return None
    try:
        return [parse_depth(x) for x in text.split(",") if x.strip()]
    except SpanlabError as e:
        raise SpanlabError(f"{flag}: {e}") from None


def format_depth(d: float) -> str:
    """50.0 -> "50", 12.5 -> "12.5" (as in suite labels like `niah_single_2@depth=50`)."""
    return str(int(d)) if float(d).is_integer() else f"{d:g}"


__all__ = ["format_depth", "format_length", "parse_count", "parse_depth", "parse_depths", "parse_length",
           "parse_lengths"]
