"""The steps of a study, each a function of a StudyContext (spanlab.study.context):

    heldout   write the evaluation samples that training data must leave out
    train     pre-train a zoo model (`spanlab train`), several in parallel processes if asked
    evaluate  run one eval block on one model (`spanlab eval`); perplexity on the essays
    finetune  fine-tune a model (`spanlab finetune`)
    profile   the attention runtime/memory profile (`spanlab profile`, Fig. 4)
    report    tables, figures and summary.md (spanlab.report)

The runner (spanlab.study.runner) orders them, skips the ones journaled as done and journals the
rest; a step resumes inside itself (training from checkpoints, evaluation from its journal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Step:
    id: str
    kind: str
    run: Callable[[], dict[str, Any]]


class StepSkipped(Exception):
    """A step that cannot run on this machine (the GPU profile without CUDA): it is logged with the
    reason and stays to do, so resuming the study where it can run completes it."""


__all__ = ["Step", "StepSkipped"]
