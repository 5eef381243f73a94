"""`spanlab generate`: write RULER-style sample files for a suite or a task list at several lengths.

This is the Typer declaration (help text, usage errors); the body is `run_generate` in
`spanlab/cli/_generate.py`, which `spanlab.cli.main` also calls directly, without importing Typer,
for plain command lines (see that module). Options added here must be added to its `OPTIONS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from spanlab.cli.app import app


@app.command("generate")
def generate_cmd(
    suite: Optional[str] = typer.Option(None, "--suite", help="Named suite: ruler (the 13 RULER tasks), niah-depth (Essay-Word-Num, Essay-Word-UUID, Repeat-Word-Num at depths 0, 20, 40, 50, 60, 80, 100; the report averages the three per depth, as Huang 2024 Tables 2-3), niah-format (Essay-Word-Num, Essay-Word-UUID, Repeat-Word-Num at depths 0, 50, 100)."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated task names instead of a suite, e.g. niah_single_2,vt; parameters as name@key=value, e.g. niah_single_2@depth=50@haystack=repeat."),
    lengths: str = typer.Option("4096", "--lengths", help="Comma-separated max lengths in tokens (prompt + tokens_to_generate, as RULER), e.g. 4096,8192 or 4k,8k."),
    num_samples: int = typer.Option(100, "--num-samples", "-n", help="Samples per task and length; sample i is the same whatever this number is."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer used to count tokens: a local Hugging Face tokenizer folder, a tokenizer.json, or a cached hub name. Default: spanlab's built-in BPE."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let --tokenizer fetch a hub tokenizer that is not cached locally."),
    template: str = typer.Option("base", "--template", help="Prompt template around each task: RULER's named ones (base, meta-chat, vicuna-chat, lwm-chat, command-r-chat, chatglm-chat, RWKV, Phi3, meta-llama3, jamba, nemotron5-instruct) or chat (the tokenizer's own chat template)."),
    seed: int = typer.Option(42, "--seed", help="Random seed; same arguments and seed give byte-identical files."),
    qa_data: Optional[str] = typer.Option(None, "--qa-data", help="Folder with squad.json (or dev-v2.0.json) and hotpotqa.json (or hotpot_dev_distractor_v1.json) for qa_1/qa_2. Default: $SPANLAB_QA_DATA."),
    squad: Optional[str] = typer.Option(None, "--squad", help="Path to the SQuAD v2.0 dev JSON (overrides --qa-data for qa_1)."),
    hotpotqa: Optional[str] = typer.Option(None, "--hotpotqa", help="Path to the HotpotQA dev JSON (overrides --qa-data for qa_2)."),
    out: Path = typer.Option(Path("data/ruler"), "--out", help="Output folder; files go to OUT/LENGTH/TASK.jsonl."),
    format: str = typer.Option("jsonl", "--format", help="jsonl (RULER-compatible lines) or parquet."),
    force: bool = typer.Option(False, "--force", help="Regenerate files that already exist and match."),
) -> None:
    """Generate RULER test samples fitted to each length with the given tokenizer and template.

    Each (task, length) goes to its own file, written atomically; files already complete with the
    same settings are skipped, so an interrupted run resumes where it stopped.
    """
    from spanlab.cli._generate import run_generate

    run_generate(suite=suite, tasks=tasks, lengths=lengths, num_samples=num_samples, tokenizer=tokenizer,
                 allow_download=allow_download, template=template, seed=seed, qa_data=qa_data, squad=squad,
                 hotpotqa=hotpotqa, out=out, format=format, force=force)
