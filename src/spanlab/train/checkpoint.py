"""Checkpoint folders: `out/checkpoints/step-000100/` written atomically, newest found on resume.

accelerate's `save_state` writes model, optimizer, scheduler and every RNG state (and handles
FSDP / DeepSpeed sharding: under FSDP's SHARDED_STATE_DICT the model and optimizer are
`pytorch_model_fsdp_0/` and `optimizer_0/` with one `.distcp` file per rank, so a resume needs the
same world size, which `trainer_state.json` records); we add `trainer_state.json` last, so a folder
without it is a save that crashed half-way and is ignored.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def step_dir(out_dir: Path, step: int) -> Path:
    return checkpoint_root(out_dir) / f"step-{step:06d}"


def complete_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Path | None:
    done = complete_checkpoints(out_dir)
    return done[-1][1] if done else None


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def save_checkpoint(accelerator: Any, out_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save on every process (sharded states need all ranks); only the main one renames and prunes."""
    final = step_dir(out_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in complete_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
