"""Run lm-evaluation-harness tasks on a spanlab-loaded model (see the package docstring).

Each requested task is one unit of work: its results are written as soon as it finishes, and a
re-run with the same settings skips the tasks already done (other settings in the same folder
are refused, so two configurations never mix in one results file).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spanlab.errors import SpanlabError

RESULTS_FILE = "harness_results.json"
SAMPLES_FILE = "harness_samples.jsonl"
MANIFEST_FILE = "harness_manifest.json"
LOCAL_TASKS_DIR = Path(__file__).resolve().parent.parent / "data" / "harness_tasks"
INSTALL_HINT = 'lm-eval is not installed; install the harness extra: pip install "spanlab[harness]" (or pip install "lm-eval>=0.4.13,<0.5")'

# The settings that make two runs comparable; a folder holds results of one such setting.
_IDENTITY = ("model", "backend", "tokenizer", "attention", "window", "group_size", "chunk_size", "block_size", "top_k",
             "adapter", "limit", "num_fewshot", "dtype", "seed")


@dataclass
class HarnessConfig:
    model: str
    tasks: list[str]
    out: str
    backend: str = "hf"  # hf | mamba_ssm
    tokenizer: str | None = None
    attention: str = "full"  # full | sw | s2 | se | se-nomem | se-random | se-landmark
    window: int | None = None
    group_size: int | None = None
    chunk_size: int | None = None
    block_size: int = 32
    top_k: int = 8
    adapter: str | None = None  # a peft adapter folder (spanlab finetune's OUT/final)
    limit: int | None = None  # at most this many documents per task
    num_fewshot: int | None = None
    batch_size: int = 1
    dtype: str = "auto"
    device: str = "auto"
    include: list[str] = field(default_factory=list)  # more lm-eval task folders
    seed: int = 0
    bootstrap_iters: int = 1000

    def attention_params(self) -> dict[str, Any]:
        if self.attention == "full":
            return {}
        if self.attention == "sw":
            params: dict[str, Any] = {"window": self.window}
        elif self.attention == "s2":
            params = {"group_size": self.group_size}
        elif self.attention.startswith("se"):
            params = {"chunk_size": self.chunk_size, "block_size": self.block_size, "top_k": self.top_k}
        else:
            from spanlab.finetune.patching import VARIANTS

            raise SpanlabError(f"unknown attention variant {self.attention!r}; choose one of {', '.join(VARIANTS)}")
        missing = [k for k, v in params.items() if v is None]
        if missing:
            raise SpanlabError(f"--attention {self.attention} needs --{missing[0].replace('_', '-')}")
        return params

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in _IDENTITY}


def local_tasks() -> dict[str, Path]:
    """The short-context tasks that ship with spanlab: task name -> its YAML file."""
    out = {}
    for p in sorted(LOCAL_TASKS_DIR.glob("*.yaml")):
        doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if isinstance(doc, dict) and doc.get("task"):
            out[str(doc["task"])] = p
    return out


def _materialise_local_tasks(dest: Path) -> None:
    """Copy the shipped task YAMLs to `dest` with their `data_files` made absolute: lm-eval hands
    relative paths to `datasets`, which resolves them against the working directory."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in local_tasks().items():
        doc = yaml.safe_load(src.read_text(encoding="utf-8"))
        files = (doc.get("dataset_kwargs") or {}).get("data_files") or {}
        for split, rel in list(files.items()):
            files[split] = str((src.parent / rel).resolve())
        (dest / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _import_lm_eval() -> Any:
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError:
        raise SpanlabError(INSTALL_HINT) from None
    return lm_eval


def _adapter_rope_scaling(adapter: Path) -> float | None:
    """The RoPE scaling the adapter was trained with: spanlab finetune writes it beside OUT/final."""
    cfg = adapter.parent / "finetune_config.yaml"
    if not cfg.is_file():
        return None
    data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
    value = data.get("rope_scaling") if isinstance(data, dict) else None
    return float(value) if value else None


def load_model(cfg: HarnessConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, description) loaded as `spanlab eval` would, adapters merged, attention patched."""
    from spanlab.models.hf import HFBackend

    if cfg.backend not in ("hf", "mamba_ssm"):
        raise SpanlabError(f"--backend must be hf or mamba_ssm for the harness, got {cfg.backend!r}")
    params = cfg.attention_params()
    if cfg.backend == "mamba_ssm":
        from spanlab.models.mamba_ssm import load_mamba_ssm

        if cfg.adapter:
            raise SpanlabError("--adapter needs an HF model folder; convert the mamba_ssm checkpoint first (spanlab convert)")
        backend = load_mamba_ssm(cfg)
    else:
        model_obj = None
        if cfg.adapter:
            adapter = Path(cfg.adapter)
            if not (adapter / "adapter_config.json").is_file():
                raise SpanlabError(f"{adapter}: not a peft adapter folder (no adapter_config.json); pass spanlab finetune's OUT/final")
            from peft import PeftModel

            from spanlab.finetune.recipe import load_base_model

            # Merged on the CPU in fp32 (as spanlab finetune's own merge), before any device
            # kernels are installed on the modules.
            base = load_base_model(cfg.model, rope_scaling=_adapter_rope_scaling(adapter))
            model_obj = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        backend = HFBackend(cfg.model, tokenizer=cfg.tokenizer, dtype=cfg.dtype, device=cfg.device, model_obj=model_obj,
                            decode_graphs="off", prefill_chunk=0)
    model = backend.model
    if cfg.attention != "full":
        from spanlab.finetune.patching import patch_attention

        patch_attention(model, cfg.attention, **params)
    described = backend.describe()
    described.update({"attention": cfg.attention, "attention_params": params, "adapter": cfg.adapter})
    return model, backend.tokenizer, described


def _plain(value: Any) -> Any:
    """JSON-able copy of lm-eval's results (numpy scalars, tuples, sets)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _task_entries(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """task -> {"metrics": {name: value}, "stderr": {name: value}, "n": docs, "version": ...}."""
    results = out.get("results") or {}
    n_samples = out.get("n-samples") or {}
    versions = out.get("versions") or {}
    entries = {}
    for task, res in results.items():
        metrics: dict[str, Any] = {}
        stderr: dict[str, Any] = {}
        for key, value in res.items():
            if key == "alias" or "," not in key:
                continue
            metric, _filter = key.split(",", 1)
            if metric.endswith("_stderr"):
                stderr[metric[: -len("_stderr")]] = _plain(value) if value != "N/A" else None
            else:
                metrics[metric] = _plain(value)
        n = n_samples.get(task, {})
        entries[task] = {"metrics": metrics, "stderr": stderr, "n": n.get("effective", n.get("original")),
                         "n_docs": n.get("original"), "version": _plain(versions.get(task))}
    return entries


def _sample_rows(task: str, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in samples:
        row = {"task": task, "doc_id": s.get("doc_id"), "target": _plain(s.get("target")),
               # per request: [loglikelihood, is_greedy] (multiple choice: one per choice)
               "responses": _plain(s.get("filtered_resps", s.get("resps")))}
        for metric in s.get("metrics") or []:
            if metric in s:
                row[metric] = _plain(s[metric])
        rows.append(row)
    return rows


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("spanlab", "lm-eval", "transformers", "torch", "datasets", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def run_harness(cfg: HarnessConfig) -> dict[str, Any]:
    """Evaluate `cfg.tasks`; returns the results document written to OUT/harness_results.json."""
    if not cfg.tasks:
        raise SpanlabError("--tasks needs at least one task, e.g. spanlab_capitals,spanlab_proverbs")
    if cfg.limit is not None and cfg.limit < 1:
        raise SpanlabError("--limit must be at least 1")
    if cfg.batch_size < 1:
        raise SpanlabError("--batch-size must be at least 1")
    for d in cfg.include:
        if not Path(d).is_dir():
            raise SpanlabError(f"--include {d}: not a folder of lm-eval task YAMLs")
    cfg.attention_params()  # bad variant or missing parameter: say so before loading anything
    _import_lm_eval()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path, samples_path, manifest_path = out / RESULTS_FILE, out / SAMPLES_FILE, out / MANIFEST_FILE
    doc: dict[str, Any] = {"tasks": {}, "requested": []}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if old.get("identity") != cfg.identity():
            changed = sorted(k for k in cfg.identity() if (old.get("identity") or {}).get(k) != cfg.identity()[k])
            raise SpanlabError(f"{out} holds harness results of other settings ({', '.join(changed)} differ); "
                               "use another --out")
        if results_path.is_file():
            doc = json.loads(results_path.read_text(encoding="utf-8"))
    todo = [t for t in cfg.tasks if t not in doc.get("requested", [])]

    with tempfile.TemporaryDirectory(prefix="spanlab-harness-") as tmp:
        _materialise_local_tasks(Path(tmp))
        include = [tmp, *cfg.include]
        ours = set(local_tasks())
        # lm-eval's own index (thousands of YAMLs) only when a task is not one of ours or the user's.
        manager = TaskManager(include_path=include, include_defaults=False)
        if any(t not in manager.all_tasks for t in todo):
            manager = TaskManager(include_path=include, include_defaults=True)
        unknown = [t for t in todo if t not in manager.all_tasks]
        if unknown:
            raise SpanlabError(f"unknown lm-eval task(s): {', '.join(unknown)} (spanlab ships {', '.join(sorted(ours))}; "
                               "--include DIR adds a folder of task YAMLs)")
        if not todo:
            return doc
        model, tokenizer, described = load_model(cfg)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
        manifest = {"identity": cfg.identity(), "model": described, "versions": _versions(),
                    "files": {"results": RESULTS_FILE, "samples": SAMPLES_FILE}}
        manifest_path.write_text(json.dumps(_plain(manifest), indent=2), encoding="utf-8")
        for task in todo:
            res = lm_eval.simple_evaluate(
                model=lm, tasks=[task], task_manager=manager, limit=cfg.limit, num_fewshot=cfg.num_fewshot,
                log_samples=True, bootstrap_iters=cfg.bootstrap_iters, random_seed=cfg.seed,
                numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed,
            )
            if res is None:  # a non-zero rank under torchrun; rank 0 writes
                continue
            entries = _task_entries(res)
            with samples_path.open("a", encoding="utf-8") as f:
                for name, samples in (res.get("samples") or {}).items():
                    for row in _sample_rows(name, samples):
                        f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
            doc["tasks"].update(entries)
            doc["requested"] = [*doc.get("requested", []), task]
            doc["model"] = cfg.model
            doc["attention"] = cfg.attention
            doc["adapter"] = cfg.adapter
            tmp_path = results_path.with_suffix(".tmp")
            tmp_path.write_text(json.dumps(_plain(doc), indent=2), encoding="utf-8")
            tmp_path.replace(results_path)
    return doc
