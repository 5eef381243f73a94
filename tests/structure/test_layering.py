"""The import directions of docs/architecture.md, checked on the source (every import statement,
also those inside functions: a lazy import is still a dependency).

    tasks -> scoring -> models -> eval -> report     (a layer imports only layers to its left)
    attention -> finetune                            (attention never imports finetune)
    tasks, mixture -> pretrain, finetune             (the shared data mixture imports neither)
    components -> study -> cli                       (recipes import components, never the reverse)

and `spanlab.tasks` / `spanlab.scoring` import no torch, directly or through other spanlab modules
(they must run anywhere, fast: `spanlab generate` starts without torch).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "spanlab"

LAYERS = ["tasks", "scoring", "models", "eval", "report"]
RECIPES = {"study", "cli"}  # orchestration: imports components, is imported by none of them
FORBIDDEN: dict[str, set[str]] = {
    **{low: set(LAYERS[i + 1:]) | RECIPES for i, low in enumerate(LAYERS)},
    "attention": {"finetune", "pretrain", "eval", "report"} | RECIPES,
    "mixture": {"pretrain", "finetune", "train"} | RECIPES,
    "finetune": {"pretrain"} | RECIPES,
    "pretrain": {"finetune"} | RECIPES,
    "report": {"attention", "finetune", "pretrain", "train"} | RECIPES,
    **{pkg: set(RECIPES) for pkg in ("bench", "train", "zoo", "errors")},
    # The kernel choices sit under attention and models alike: they import nothing of spanlab but errors.
    "kernels": {"tasks", "scoring", "models", "eval", "report", "attention", "mixture", "train", "zoo", "pretrain",
                "finetune", "harness", "bench", "units"} | RECIPES,
    "study": {"cli"},
}
# Triton's one import (spanlab.triton_support) sits under every kernel module: it imports no spanlab at all.
FORBIDDEN["triton_support"] = set(FORBIDDEN["kernels"]) | {"kernels", "errors"}
TORCH_FREE = ("tasks", "scoring")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules(root: Path = SRC) -> dict[str, Path]:
    return {_module_name(root, p): p for p in root.rglob("*.py")}


@cache
def _imports(module: str, root: Path = SRC) -> frozenset[str]:
    """Absolute names of every module `module` imports (relative imports resolved)."""
    modules = _modules(root)
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            # `from spanlab.x import y` may import the submodule spanlab.x.y
            out.update(f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in modules)
    return frozenset(out)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "spanlab" else None


def _violations(root: Path = SRC) -> list[str]:
    bad = []
    for mod in sorted(_modules(root)):
        src = _layer(mod)
        for imp in sorted(_imports(mod, root)):
            dst = _layer(imp)
            if src in FORBIDDEN and dst in FORBIDDEN[src]:
                bad.append(f"{mod} imports {imp} ({src} must not import {dst})")
    return bad


def test_layers_import_only_downwards():
    assert _violations() == []


def _reaches_torch(module: str, seen: set[str], root: Path = SRC) -> list[str] | None:
    """An import chain from `module` to torch through spanlab modules, or None."""
    if module in seen:
        return None
    seen.add(module)
    for imp in sorted(_imports(module, root)):
        if imp == "torch" or imp.startswith("torch."):
            return [module, imp]
        if imp in _modules(root):
            chain = _reaches_torch(imp, seen, root)
            if chain:
                return [module, *chain]
    return None


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_tasks_and_scoring_never_import_torch(layer):
    chains = []
    for mod in sorted(m for m in _modules() if _layer(m) == layer):
        chain = _reaches_torch(mod, set())
        if chain:
            chains.append(" -> ".join(chain))
    assert chains == []


def test_the_checker_sees_a_violation(tmp_path):
    """The rules are not vacuous: a tasks module importing eval, and one importing torch lazily,
    are both reported."""
    pkg = tmp_path / "spanlab"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "eval").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks" / "__init__.py").write_text("def f():\n    from spanlab.eval import run\n")
    (pkg / "tasks" / "heavy.py").write_text("def g():\n    import torch.nn\n")
    (pkg / "eval" / "__init__.py").write_text("from . import run\n")
    (pkg / "eval" / "run.py").write_text("")
    assert _violations(pkg) == ["spanlab.tasks imports spanlab.eval (tasks must not import eval)",
                                "spanlab.tasks imports spanlab.eval.run (tasks must not import eval)"]
    assert _reaches_torch("spanlab.tasks.heavy", set(), pkg) == ["spanlab.tasks.heavy", "torch.nn"]
