"""The training-data mixture shared by pre-training (spanlab.pretrain) and task-row fine-tuning
(spanlab.finetune.data): a deterministic stream of `context`-token rows, a fraction of them
RULER-format task samples, the rest natural text, with evaluation needles kept out.

`spanlab.mixture.stream` builds and reads the stream; `spanlab.mixture.heldout` says which
evaluation tokens training rows must not contain; `spanlab.mixture.text` turns natural-text
sources into token caches (the stream's text rows, fine-tuning data, perplexity) and counts how
many times a run reads them. Layering: tasks -> mixture -> pretrain, finetune
(this package imports no training code, and torch only to hand rows to the training loop).
"""

from spanlab.mixture.heldout import TRAIN_SEED_BASE, HeldOut, heldout_from_files, rare_tokens
from spanlab.mixture.stream import (
    DEFAULT_TASKS,
    LOSS_MODES,
    MixtureConfig,
    StreamDataset,
    answers_path,
    build_stream,
    feasible_tasks,
    natural_text,
    stream_key,
)

__all__ = [
    "DEFAULT_TASKS",
    "LOSS_MODES",
    "TRAIN_SEED_BASE",
    "HeldOut",
    "MixtureConfig",
    "StreamDataset",
    "answers_path",
    "build_stream",
    "feasible_tasks",
    "heldout_from_files",
    "natural_text",
    "rare_tokens",
    "stream_key",
]
