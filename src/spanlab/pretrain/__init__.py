"""Pre-training recipe for the zoo: one deterministic token stream for every architecture.

The stream itself (mixture, held-out needles) lives in `spanlab.mixture`, shared with fine-tuning;
its names are re-exported here because pre-training is where most callers meet them.
"""

from spanlab.mixture import (
    DEFAULT_TASKS,
    TRAIN_SEED_BASE,
    HeldOut,
    MixtureConfig,
    StreamDataset,
    build_stream,
    natural_text,
    rare_tokens,
)

__all__ = [
    "DEFAULT_TASKS",
    "TRAIN_SEED_BASE",
    "HeldOut",
    "MixtureConfig",
    "StreamDataset",
    "build_stream",
    "natural_text",
    "rare_tokens",
]
