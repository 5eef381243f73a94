"""docs/architecture.md's "How to add a task" example, run as written: the task module and its
registry line from the page, then generation through the public API and the CLI."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from spanlab.cli import main
from spanlab.scoring import task_score
from spanlab.tasks import generate, load_tokenizer, registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def passkey(monkeypatch):
    section = DOC.read_text(encoding="utf-8").split("## How to add a task", 1)[1].split("\n## ", 1)[0]
    module_src, spec_line = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:2]
    mod = types.ModuleType("spanlab.tasks.passkey")
    exec(compile(module_src, str(DOC), "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, "spanlab.tasks.passkey", mod)
    (name, spec), = eval("{" + spec_line.strip().rstrip(",") + "}").items()
    monkeypatch.setitem(registry._SPECS, name, spec)
    yield name
    registry.TASKS._built.pop(name, None)


def test_the_documented_task_generates_fitted_samples_with_the_key_hidden(passkey):
    tok = load_tokenizer(None)
    samples = generate(passkey, length=512, num_samples=3, tokenizer=tok, seed=1)
    assert len({s.outputs[0] for s in samples}) == 3
    for s in samples:
        (key,) = s.outputs
        assert re.fullmatch(r"[1-9]\d{4}", key)
        assert s.input.count(key) == 2 and s.answer_prefix == " The pass key is"
        assert 512 - 16 - 40 < s.length <= 512  # fitted: the haystack fills the length
        assert task_score(passkey, [f" {key}."], [s.outputs]) == 100.0
    # sample i does not depend on how many are asked for
    assert generate(passkey, length=512, num_samples=1, tokenizer=tok, seed=1)[0].input == samples[0].input
    assert generate(passkey, length=512, num_samples=1, tokenizer=tok, seed=1, digits="7")[0].outputs[0].isdigit()


def test_the_documented_task_works_from_the_cli(passkey, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["generate", "--tasks", f"{passkey}@digits=6", "--lengths", "600", "--num-samples", "2",
              "--out", str(tmp_path)])
    assert done.value.code == 0
    lines = [json.loads(x) for x in next(tmp_path.rglob("*.jsonl")).read_text().splitlines()]
    assert len(lines) == 2 and all(len(r["outputs"][0]) == 6 for r in lines)
