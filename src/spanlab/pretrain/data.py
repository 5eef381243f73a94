"""The pre-training stream: `spanlab.mixture.stream` under the name `spanlab train` and study
configs have always used (`--loss answers`, DEFAULT_TASKS, answer spans beside the rows)."""

from spanlab.mixture.stream import DEFAULT_TASKS, LOSS_MODES, MixtureConfig, StreamDataset, answers_path, build_stream

__all__ = ["DEFAULT_TASKS", "LOSS_MODES", "MixtureConfig", "StreamDataset", "answers_path", "build_stream"]
