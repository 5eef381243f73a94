"""This process's rank and the world size (torchrun / accelerate launch set the env vars)."""

from __future__ import annotations

import os

from spanlab.errors import SpanlabError


def rank_world() -> tuple[int, int]:
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        rank, world = -1, 0
    if not 0 <= rank < world:
        raise SpanlabError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} do not "
                           "describe a process of a run; unset both for one process, or launch with torchrun / "
                           "accelerate launch")
    return rank, world
