"""`manifest.json`: what produced a run, and the guard against mixing runs in one directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from spanlab.errors import SpanlabError

MANIFEST = "manifest.json"
# Keys of the model description that must match for two invocations to share a run directory.
_MODEL_KEYS = ("backend", "model", "model_class", "model_hash", "tokenizer_hash", "dtype")
_PACKAGES = ("spanlab", "torch", "transformers", "tokenizers", "accelerate", "peft", "vllm")


def _git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_manifest(*, model: dict[str, Any], generation: dict[str, Any], tasks: dict[str, dict[str, Any]],
                   lengths: list[int], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": sys.argv,
        "git_sha": _git_sha(),
        "packages": package_versions(),
        "model": model,
        "generation": generation,
        "tasks": tasks,
        "lengths": sorted(set(lengths)),
        **(extra or {}),
    }


def read_manifest(rundir: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(rundir) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpanlabError(f"{p} is not valid JSON ({e}); delete it or use another --out") from None


def check_compatible(old: dict[str, Any], new: dict[str, Any], rundir: str | os.PathLike) -> None:
    """Refuse to resume a run with another model, generation setting or task parameters.

    New tasks and new lengths may be added to a run; a task already in it must keep its params.
    """
    diffs = []
    for k in _MODEL_KEYS:
        a, b = old.get("model", {}).get(k), new["model"].get(k)
        if a != b:
            diffs.append(f"model.{k}: {a!r} -> {b!r}")
    if old.get("generation") != new["generation"]:
        diffs.append(f"generation: {old.get('generation')!r} -> {new['generation']!r}")
    for label, params in new["tasks"].items():
        if label in old.get("tasks", {}) and old["tasks"][label] != params:
            diffs.append(f"task {label} params: {old['tasks'][label]!r} -> {params!r}")
    if diffs:
        raise SpanlabError(
            f"run directory {rundir} holds a different run ({'; '.join(diffs[:3])}); "
            "use a new --out directory (runs are never mixed)")


def write_manifest(rundir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    Path(rundir).mkdir(parents=True, exist_ok=True)
    p = Path(rundir) / MANIFEST
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, p)  # atomic: a kill never leaves half a manifest


def merge_manifest(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return new
    merged = dict(old)
    merged["tasks"] = {**old.get("tasks", {}), **new["tasks"]}
    merged["lengths"] = sorted(set(old.get("lengths", [])) | set(new["lengths"]))
    merged.setdefault("resumed", []).append({"created": new["created"], "command": new["command"], "git_sha": new["git_sha"],
                                             "kernels": new.get("kernels")})
    return merged
