"""Controlled studies from one YAML: train -> eval -> finetune -> eval -> report, resumable.

    from spanlab.study import load_study, Study
    Study(load_study("demo")).run()
"""

from spanlab.study.config import StudyConfig, find_config, load_study, resolve_length
from spanlab.study.context import STEPS_FILE, StudyContext
from spanlab.study.runner import Study

__all__ = ["STEPS_FILE", "Study", "StudyConfig", "StudyContext", "find_config", "load_study", "resolve_length"]
