"""What comes back from a GPU call is enough for paired tests: benchmarks/pack_journals.sh packs a
study's per-sample journals (small, no weights), and `spanlab report A B --compare` runs on the
unpacked copy exactly as on the original."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from spanlab.study import Study, load_study

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "benchmarks" / "pack_journals.sh"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    from spanlab.tasks import load_tokenizer
    from spanlab.zoo import build_model

    tmp = tmp_path_factory.mktemp("pack")
    tok = load_tokenizer(None)
    for seed, name in ((0, "m0"), (1, "m1")):
        m = build_model("transformer", "tiny", vocab_size=len(tok), seed=seed, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        m.save_pretrained(tmp / name)
        tok.save_pretrained(tmp / name)
    cfg = {"name": "pack", "out": str(tmp / "runs" / "study-pack"), "device": "cpu",
           "models": [{"name": "a", "path": str(tmp / "m0"), "context": 256},
                      {"name": "b", "path": str(tmp / "m1"), "context": 256}],
           "generation": {"batch_size": 2, "max_new_tokens": 4},
           "eval": [{"name": "ruler", "tasks": ["niah_single_1", "niah_single_2"], "lengths": ["1x", "2x"],
                     "num_samples": 3}]}
    (tmp / "study.yaml").write_text(yaml.safe_dump(cfg))
    Study(load_study(str(tmp / "study.yaml")), progress=False, log=lambda m: None).run()
    return tmp / "runs" / "study-pack"


def test_journals_pack_small_and_compare_after_unpacking(study_dir, tmp_path, cli):
    dest = tmp_path / "study-pack.journals.tgz"
    subprocess.run(["bash", str(PACK), str(study_dir), str(dest)], check=True, capture_output=True)
    with tarfile.open(dest) as tf:
        names = tf.getnames()
        tf.extractall(tmp_path / "back", filter="data")
    assert {"study-pack/eval/a/results.jsonl", "study-pack/eval/b/manifest.json", "study-pack/steps.jsonl",
            "study-pack/study.yaml", "study-pack/report/summary.md"} <= set(names)
    assert not [n for n in names if n.endswith((".safetensors", ".png", "tokenizer.json")) or "/heldout/" in n]
    back = tmp_path / "back" / "study-pack"
    orig = (study_dir / "eval" / "a" / "results.jsonl").read_text()
    assert (back / "eval" / "a" / "results.jsonl").read_text() == orig  # every per-sample record
    assert len(orig.splitlines()) == 12

    def compare(root: Path, out: Path) -> dict:
        assert cli("report", root / "eval" / "a", root / "eval" / "b", "--out", out, "--compare") == 0
        return json.loads((out / "compare.json").read_text())

    packed = compare(back, tmp_path / "rep_back")
    assert packed == compare(study_dir, tmp_path / "rep_orig")
    # Paired on the same 3 samples of each (task, length), 4 cells + a pooled row per length.
    n = {(r[0], r[1]): r[3] for r in packed["rows"]}
    assert n[("niah_single_1", 256)] == 3 and n[("all tasks", 512)] == 6


def test_a_directory_without_study_output_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run(["bash", str(PACK), str(tmp_path / "empty"), str(tmp_path / "x.tgz")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "holds no study output" in r.stderr


def test_study_gpu_packs_the_journals_first():
    text = (ROOT / "benchmarks" / "study_gpu.sh").read_text()
    assert text.index("pack_journals.sh") < text.index("results.tgz")
    session = (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    assert "replicate)" in session and "expansion-span|huang2024)" in session and "smollm2)" in session
