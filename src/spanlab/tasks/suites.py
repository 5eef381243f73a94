"""Named suites: lists of (task, params, label) the CLI and the eval engine iterate over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.units import format_depth

RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
DEPTH_SWEEP = (0, 20, 40, 50, 60, 80, 100)
FORMAT_DEPTHS = (0, 50, 100)
# Haystack-key-value formats of the seed study, as RULER tasks they equal by default.
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "Essay-Word-Num": ("niah_single_2", {"haystack": "essay", "key_type": "words", "value_type": "numbers"}),
    "Essay-Word-UUID": ("niah_single_3", {"haystack": "essay", "key_type": "words", "value_type": "uuids"}),
    "Repeat-Word-Num": ("niah_single_1", {"haystack": "repeat", "key_type": "words", "value_type": "numbers"}),
}


@dataclass(frozen=True)
class TaskSpec:
    task: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.task)


def depth_label(base: str, depth: float) -> str:
    """The label of one depth of a sweep: `niah_single_2@depth=50` (depth in percent)."""
    return f"{base}@depth={format_depth(depth)}"


def label_group(label: str) -> str:
    """A label without its `@depth=` part: the row a depth sweep's cells share in a report
    (`niah_single_2@depth=50@haystack=repeat` -> `niah_single_2@haystack=repeat`)."""
    base, *parts = label.split("@")
    return "@".join([base, *(p for p in parts if not p.startswith("depth="))])


def _ruler() -> list[TaskSpec]:
    return [TaskSpec(t) for t in RULER_TASKS]


def _niah_depth() -> list[TaskSpec]:
    # The seed's Tables 2-3 average the three formats of its Table 4 at each depth (its Mamba2 at
    # depth 0 = (45.6 + 49.6 + 82.0) / 3), so the sweep runs all three; the report averages them.
    return [TaskSpec(task, {**params, "depth": d}, depth_label(name, d))
            for name, (task, params) in FORMATS.items() for d in DEPTH_SWEEP]


def _niah_format() -> list[TaskSpec]:
    return [TaskSpec(task, {**params, "depth": d}, depth_label(name, d))
            for name, (task, params) in FORMATS.items() for d in FORMAT_DEPTHS]


SUITES = {"ruler": _ruler, "niah-depth": _niah_depth, "niah-format": _niah_format}


def expand_suite(name: str) -> list[TaskSpec]:
    """The TaskSpecs of a named suite, in a stable order."""
    if name not in SUITES:
        raise SpanlabError(f"unknown suite {name!r}; choose one of: {', '.join(SUITES)}")
    return SUITES[name]()


def parse_tasks(names: str | list[str]) -> list[TaskSpec]:
    """`--tasks a,b` into TaskSpecs; a name may also be a suite label like `niah_single_2@depth=50`."""
    from spanlab.tasks.registry import TASKS

    items = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
    if not items:
        raise SpanlabError("no tasks given; pass --tasks a,b or --suite ruler")
    out = []
    for item in items:
        base, _, rest = item.partition("@")
        params: dict[str, Any] = {}
        if base in FORMATS:
            base, params = FORMATS[base][0], dict(FORMATS[base][1])
        if base not in TASKS:
            raise SpanlabError(f"unknown task {base!r}; choose from: {', '.join(TASKS)} "
                               f"(or formats {', '.join(FORMATS)})")
        for kv in filter(None, rest.split("@")):
            k, eq, v = kv.partition("=")
            if not eq:
                raise SpanlabError(f"bad task parameter {kv!r} in {item!r}; write it as name@key=value")
            params[k] = _value(v)  # a NIAH task checks its depth (percent, 0-100) itself
        out.append(TaskSpec(base, params, item))
    return out


def _value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v
