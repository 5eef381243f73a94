"""This process's rank and the world size (torchrun / accelerate launch set the env vars)."""

from __future__ import annotations

import os


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
