"""The tiny zoo models that ship inside the package (`src/spanlab/data/models/<name>/`).

They are trained by `spanlab train` (command and data in docs/zoo.md), then exported here: weights
in bf16 safetensors to keep all of them under 25 MB, while `config.json` says float32 so a CPU
load upcasts them (bf16 matmuls on CPU are slow and lossy). The training log is shipped compact
(every step's loss, learning rate and token count, 5 significant digits): throughput and memory
are summarised in `pretrain.json`, and the full per-step log stays in the run directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from spanlab.errors import SpanlabError

# The listing lives with the built-in model registry (models/ may not import zoo/); re-exported here.
from spanlab.models.builtin import resolve_builtin, shipped_models, shipped_root  # noqa: F401

SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "pretrain.json", "train_log.jsonl")


def resolve_model(name_or_path: str) -> str:
    """A built-in model (`builtin:<name>`, see `spanlab.models.builtin`) or a bare shipped name -> its
    directory; anything else unchanged."""
    models = shipped_models()
    if name_or_path in models and not Path(name_or_path).exists():
        return str(models[name_or_path])
    return resolve_builtin(name_or_path)


def export_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a `spanlab train` run's final model into `dest` with bf16 weights and its provenance."""
    import torch
    from safetensors.torch import load_file, save_file

    run_dir, dest = Path(run_dir), Path(dest)
    final = run_dir / "final"
    if not (final / "model.safetensors").is_file():
        raise SpanlabError(f"{final} holds no model.safetensors; train it first with `spanlab train --out {run_dir}`")
    dest.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(final / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = json.loads((final / "config.json").read_text())
    cfg["dtype"] = "float32"
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in SHIPPED_FILES:
        if name in ("config.json", "model.safetensors"):
            continue
        src = final / name if (final / name).exists() else run_dir / name
        if name == "train_log.jsonl" and src.exists():
            compact_train_log(src, dest / name)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


LOG_KEYS = ("step", "loss", "lr", "tokens")


def compact_train_log(src: str | Path, dest: str | Path) -> Path:
    """Keep one line per step with `LOG_KEYS` only, floats to 5 significant digits (a 1,764-step
    log: 400 KB -> ~100 KB, the difference between three models fitting 25 MB or not)."""
    lines = []
    for line in Path(src).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            lines.append(json.dumps({k: float(f"{rec[k]:.5g}") if isinstance(rec[k], float) else rec[k]
                                     for k in LOG_KEYS if k in rec}, separators=(",", ":")))
    Path(dest).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return Path(dest)
