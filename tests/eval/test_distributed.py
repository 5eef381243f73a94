"""torchrun deals whole batches to ranks; rank journals merge into one run identical to a single process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_equal_single_process(tiny_models, sample_file, tmp_path, cli):
    args = ["eval", "--model", tiny_models["mamba2"], "--samples", str(sample_file), "--max-new-tokens", "5", "--batch-size", "2",
            "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "spanlab", *args, "--out", str(tmp_path / "dist")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shards = [tmp_path / "dist" / f"results.rank{r}-of-2.jsonl" for r in range(2)]
    ids = [{json.loads(x)["id"] for x in p.read_text().splitlines()} for p in shards]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert cli(*args, "--out", tmp_path / "single") == 0

    from spanlab.eval import read_run

    # Same batch-mates on every path, so the same predictions, not just the same scores.
    merged = {r["id"]: (r["prediction"], r["score"], r["batch_size"]) for r in read_run(tmp_path / "dist")}
    single = {r["id"]: (r["prediction"], r["score"], r["batch_size"]) for r in read_run(tmp_path / "single")}
    assert merged == single and len(merged) == 8
    # A single-process resume of the sharded run finds nothing left to do.
    assert cli(*args, "--out", tmp_path / "dist") == 0
    assert not (tmp_path / "dist" / "results.jsonl").read_text().strip()
