"""The task registry under RULER's names and default parameters (RULER's scripts/synthetic.yaml).

`TASKS` is a read-only mapping name -> Task that imports a task's module the first time the task
is looked up: `spanlab generate --tasks vt` then never imports the NIAH, cwe, fwe or QA code
(start-up counts: a whole 100-sample vt run at 4K is ~0.15 s CPU). Iterating names, `len` and
`in` import nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from spanlab.tasks.base import Task

# name -> (module, class, defaults)
_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "niah_single_1": ("niah", "NIAH", {"haystack": "repeat", "key_type": "words", "value_type": "numbers"}),
    "niah_single_2": ("niah", "NIAH", {"haystack": "essay", "key_type": "words", "value_type": "numbers"}),
    "niah_single_3": ("niah", "NIAH", {"haystack": "essay", "key_type": "words", "value_type": "uuids"}),
    "niah_multikey_1": ("niah", "NIAH", {"haystack": "essay", "key_type": "words", "value_type": "numbers",
                                         "num_keys": 4}),
    "niah_multikey_2": ("niah", "NIAH", {"haystack": "needle", "key_type": "words", "value_type": "numbers"}),
    "niah_multikey_3": ("niah", "NIAH", {"haystack": "needle", "key_type": "uuids", "value_type": "uuids"}),
    "niah_multivalue": ("niah", "NIAH", {"haystack": "essay", "key_type": "words", "value_type": "numbers",
                                         "num_values": 4}),
    "niah_multiquery": ("niah", "NIAH", {"haystack": "essay", "key_type": "words", "value_type": "numbers",
                                         "num_queries": 4}),
    "vt": ("variable_tracking", "VariableTracking", {"num_chains": 1, "num_hops": 4}),
    "cwe": ("common_words", "CommonWords", {"freq_cw": 30, "freq_ucw": 3, "num_cw": 10}),
    "fwe": ("freq_words", "FreqWords", {"alpha": 2.0}),
    "qa_1": ("qa", "QA", {"dataset": "squad"}),
    "qa_2": ("qa", "QA", {"dataset": "hotpotqa"}),
}


class _Registry(Mapping[str, Task]):
    def __init__(self) -> None:
        self._built: dict[str, Task] = {}

    def __getitem__(self, name: str) -> Task:
        task = self._built.get(name)
        if task is None:
            module, cls, defaults = _SPECS[name]  # KeyError for unknown names, as a dict
            task = getattr(importlib.import_module(f"spanlab.tasks.{module}"), cls)(name, **defaults)
            task = self._built.setdefault(name, task)  # one object per name, even across threads
        return task

    def __iter__(self) -> Iterator[str]:
        return iter(_SPECS)

    def __len__(self) -> int:
        return len(_SPECS)

    def __contains__(self, name: object) -> bool:
        return name in _SPECS

    def __repr__(self) -> str:
        return f"TASKS({', '.join(_SPECS)})"


TASKS: Mapping[str, Task] = _Registry()
