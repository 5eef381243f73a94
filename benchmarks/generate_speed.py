"""Sample generation speed: spanlab vs RULER's own generator, same tokenizer and settings.

    python benchmarks/generate_speed.py --samples 100 --lengths 4096,16384 --ruler /tmp/ruler_bench

Both sides are timed as whole processes (start-up, tokenizer load and set-up included), each
writing `--samples` samples of one task at one length with spanlab's built-in tokenizer, CPU
seconds (user + sys, the steadier figure on a shared machine) and wall seconds, medians of
`--repeat` runs; the two sides' runs alternate, so both see the same load. Each process is also
run for a single sample: (CPU(N) - CPU(1)) / (N - 1) is the per-sample cost with start-up and
set-up excluded. spanlab's in-process rate (`generate()` alone, caches warm) is printed too.

Python bytecode: both sides run with a bytecode cache (PYTHONPYCACHEPREFIX in the scratch folder,
written by an untimed warm-up run), as an installed package does; where PYTHONDONTWRITEBYTECODE
is set (this VM sets it), an editable spanlab would otherwise recompile its sources on every run
while RULER's dependencies come precompiled. spanlab's CPU without a bytecode cache is printed
as well. spanlab's per-tokenizer count tables (spanlab.tasks.diskcache) live in the scratch folder
too: the warm-up run fills them; the "first run" column is a run with them empty.

RULER's generator needs downloads we cannot make here, so `--ruler DIR` builds a scratch copy
outside the repository from the RULER snapshot: the essay JSON from spanlab's vendored essays, an
`english_words.json` from wonderwords, `nltk.tokenize.sent_tokenize` shimmed by nupunkt (the
Punkt algorithm, no model download) and `tenacity` shimmed (only used by RULER's API tokenizers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = {  # task -> (RULER script, RULER args, RULER task family)
    "niah_single_2": ("niah.py", "--type_haystack essay --type_needle_k words --type_needle_v numbers "
                      "--num_needle_k 1 --num_needle_v 1 --num_needle_q 1", "niah"),
    "niah_multikey_2": ("niah.py", "--type_haystack needle --type_needle_k words --type_needle_v numbers "
                        "--num_needle_k 1 --num_needle_v 1 --num_needle_q 1", "niah"),
    "vt": ("variable_tracking.py", "--type_haystack noise --num_chains 1 --num_hops 4", "variable_tracking"),
    "cwe": ("common_words_extraction.py", "--freq_cw 30 --freq_ucw 3 --num_cw 10", "common_words_extraction"),
    "fwe": ("freq_words_extraction.py", "--alpha 2.0", "freq_words_extraction"),
}
RULER_MIRROR = "/work/.mirror/NVIDIA+RULER/repo"


def setup_ruler(scratch: Path, mirror: str) -> tuple[Path, Path]:
    from spanlab.tasks import load_tokenizer
    from spanlab.tasks.essays import essay_text
    from spanlab.tasks.words import single_words

    scratch.mkdir(parents=True, exist_ok=True)
    if not (scratch / "scripts").exists():
        tar = subprocess.run(["git", "-C", mirror, "archive", "HEAD", "scripts/data"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=tar, check=True)
    js = scratch / "scripts/data/synthetic/json"
    (js / "PaulGrahamEssays.json").write_text(json.dumps({"text": essay_text()}))
    (js / "english_words.json").write_text(json.dumps({w: w for w in single_words()}))
    shims = scratch / "shims"
    (shims / "nltk").mkdir(parents=True, exist_ok=True)
    (shims / "nltk/__init__.py").write_text("")
    (shims / "nltk/tokenize.py").write_text("from nupunkt import sent_tokenize  # offline Punkt\n")
    (shims / "tenacity.py").write_text(
        "def retry(*a, **k):\n    return lambda f: f\n"
        "def stop_after_attempt(*a): return None\ndef wait_fixed(*a): return 0\ndef wait_random(*a): return 0\n")
    tok_dir = scratch / "tokenizer"
    load_tokenizer().save_pretrained(str(tok_dir))
    return scratch / "scripts/data/synthetic", shims


def ruler_cmd(synthetic: Path, task: str, length: int, n: int, out: Path, tok_dir: Path) -> list[str]:
    sys.path.insert(0, str(synthetic))
    script, args, family = TASKS[task]
    from spanlab.tasks.templates import (
        CWE_ANSWER_PREFIX,
        CWE_TEMPLATE,
        FWE_ANSWER_PREFIX,
        FWE_TEMPLATE,
        NIAH_ANSWER_PREFIX,
        NIAH_TEMPLATE,
        TOKENS_TO_GENERATE,
        VT_ANSWER_PREFIX,
        VT_TEMPLATE,
    )

    tmpl = {"niah": NIAH_TEMPLATE + NIAH_ANSWER_PREFIX, "variable_tracking": VT_TEMPLATE + VT_ANSWER_PREFIX,
            "common_words_extraction": CWE_TEMPLATE + CWE_ANSWER_PREFIX,
            "freq_words_extraction": FWE_TEMPLATE + FWE_ANSWER_PREFIX}[family]
    return [sys.executable, script, "--save_dir", str(out), "--save_name", task, "--tokenizer_path", str(tok_dir),
            "--tokenizer_type", "hf", "--max_seq_length", str(length), "--tokens_to_generate",
            str(TOKENS_TO_GENERATE[family]), "--num_samples", str(n), "--random_seed", "42", *args.split(),
            "--template", tmpl]


def timed(cmd: list[str], cwd: str | None = None, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one child process; CPU time is the steadier figure
    on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{r.stderr[-2000:]}")
    return dt, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fill(path: Path, length: int) -> tuple[float, float]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    fr = [r["length"] / length for r in rows]
    return min(fr), sum(fr) / len(fr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--lengths", default="4096,16384")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--repeat", type=int, default=3, help="process runs per cell and side (median reported)")
    ap.add_argument("--ruler", type=Path, default=None, help="scratch dir for RULER's generator (outside the repo)")
    ap.add_argument("--ruler-mirror", default=RULER_MIRROR)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    tasks = args.tasks.split(",")

    from spanlab.tasks import generate, load_tokenizer

    tok = load_tokenizer()
    ruler = setup_ruler(args.ruler, args.ruler_mirror) if args.ruler else None
    # the console script may be a shell shim (pyenv); call the entry point with this interpreter
    spanlab_cmd = [sys.executable, "-c", "import sys; from spanlab.cli import main; main(sys.argv[1:])"]
    print(f"# {platform.node()} {platform.processor() or platform.machine()} {os.cpu_count()} cores, "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| task | length | spanlab CPU s | RULER CPU s | speed-up CPU | spanlab / RULER wall s | speed-up wall "
          "| spanlab CPU s without bytecode cache (speed-up) | spanlab first run CPU s (empty count cache) "
          "| spanlab / RULER CPU ms per sample | spanlab in-process samples/s | spanlab fill min/mean "
          "| RULER fill min/mean |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    with tempfile.TemporaryDirectory() as tmp:
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = {**base_env, "PYTHONPYCACHEPREFIX": f"{tmp}/pycache", "SPANLAB_CACHE_DIR": f"{tmp}/counts"}
        no_pyc = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "SPANLAB_CACHE_DIR": f"{tmp}/counts"}
        no_pyc.pop("PYTHONPYCACHEPREFIX", None)
        for task in tasks:
            for L in lengths:
                generate(task, length=L, num_samples=1, tokenizer=tok, seed=42)  # warm caches
                t = time.perf_counter()
                generate(task, length=L, num_samples=args.samples, tokenizer=tok, seed=42)
                inproc = args.samples / (time.perf_counter() - t)
                out = Path(tmp) / "spanlab"

                def sp_run(n: int, env: dict = env, task: str = task, L: int = L,
                           out: Path = out) -> tuple[float, float]:
                    return timed([*spanlab_cmd, "generate", "--tasks", task, "--lengths", str(L), "-n", str(n),
                                  "--out", str(out), "--force"], env=env)

                first = sp_run(args.samples, {**env, "SPANLAB_CACHE_DIR": f"{tmp}/counts-first-{task}-{L}"})
                sp_run(1)  # warm-up: bytecode and count tables in place
                r_run = None
                if ruler:
                    synthetic, shims = ruler
                    renv = {**env, "PYTHONPATH": str(shims), "TOKENIZERS_PARALLELISM": "true"}

                    def r_run(n: int, task: str = task, L: int = L, synthetic: Path = synthetic,
                              renv: dict = renv) -> tuple[float, float]:
                        return timed(ruler_cmd(synthetic, task, L, n, Path(tmp) / "ruler" / str(n) / str(L),
                                               args.ruler / "tokenizer"), cwd=str(synthetic), env=renv)
                    r_run(1)  # warm-up
                runs, ones, rruns, rones, cold = [], [], [], [], []
                for _ in range(args.repeat):  # alternate the sides: both see the same load
                    runs.append(sp_run(args.samples))
                    ones.append(sp_run(1))
                    cold.append(sp_run(args.samples, no_pyc))
                    if r_run is not None:
                        rruns.append(r_run(args.samples))
                        rones.append(r_run(1))
                sfill = fill(out / str(L) / f"{task}.jsonl", L)
                sp, sp_cpu = med([w for w, _ in runs]), med([c for _, c in runs])
                sp_one = (sp_cpu - med([c for _, c in ones])) / (args.samples - 1)
                cold_cpu = med([c for _, c in cold])
                rcpu = speed = wall = wspeed = cold_cell = per = rfill_cell = "n/a"
                if rruns:
                    rt, rt_cpu = med([w for w, _ in rruns]), med([c for _, c in rruns])
                    r_one = (rt_cpu - med([c for _, c in rones])) / (args.samples - 1)
                    rfill = fill(Path(tmp) / "ruler" / str(args.samples) / str(L) / task / "validation.jsonl", L)
                    rcpu, speed = f"{rt_cpu:.2f}", f"{rt_cpu / sp_cpu:.1f}x"
                    wall, wspeed = f"{sp:.2f} / {rt:.2f}", f"{rt / sp:.1f}x"
                    cold_cell = f"{cold_cpu:.2f} ({rt_cpu / cold_cpu:.1f}x)"
                    per = f"{1000 * sp_one:.1f} / {1000 * r_one:.1f}"
                    rfill_cell = f"{rfill[0]:.3f} / {rfill[1]:.3f}"
                print(f"| {task} | {L} | {sp_cpu:.3f} | {rcpu} | {speed} | {wall} | {wspeed} | {cold_cell} "
                      f"| {first[1]:.2f} | {per} | {inproc:.0f} | {sfill[0]:.3f} / {sfill[1]:.3f} | {rfill_cell} |",
                      flush=True)
        print(f"# load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
