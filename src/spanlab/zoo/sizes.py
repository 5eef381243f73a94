"""The size table: one width per size; each architecture's depth (and MLP width where depth alone
is too coarse) at that size lives in its profile (`ArchProfile.zoo_shapes`, spanlab.models.arch),
chosen to bring its non-embedding parameter count within a few percent of the Transformer++ of
that size. `tests/zoo/test_zoo.py` holds the table to that promise."""

from __future__ import annotations

from spanlab.models.arch import zoo_profiles
from spanlab.models.arch.base import ZooShape

Shape = ZooShape  # the name this table used before the shapes moved into the profiles

# Non-embedding parameters (all architectures of a size share the width, hence the embedding):
# tiny ~2.2M (~3.8M total with the built-in 8K vocabulary: three tiny models fit the 25 MB the
# package may ship, in bf16), small ~32M (~36M), base ~98M (~105M).
WIDTHS: dict[str, int] = {"tiny": 192, "small": 512, "base": 768}

# size -> (width, zoo architecture -> shape), from the profiles of the families the zoo builds.
SIZES: dict[str, tuple[int, dict[str, ZooShape]]] = {
    size: (width, {name: p.zoo_shapes[size] for name, p in zoo_profiles().items() if size in p.zoo_shapes})
    for size, width in WIDTHS.items()
}
