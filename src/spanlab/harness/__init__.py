"""lm-evaluation-harness on spanlab-loaded models: the short-context regression check.

`run_harness(HarnessConfig(...))` loads a model the way the rest of spanlab does (HF folders,
mamba_ssm checkpoints converted in memory, HyLoRA/LoRA adapters merged, attention variants
patched in), hands it to lm-eval's `HFLM(pretrained=model, tokenizer=tok)` and runs
`lm_eval.simple_evaluate`. Results land in the run folder beside RULER's (`harness_results.json`,
`harness_samples.jsonl`, `harness_manifest.json`), and `spanlab report` shows them.

lm-eval is an optional extra (`pip install "spanlab[harness]"`); nothing here imports it before a
run asks for it.
"""

from spanlab.harness.runner import (
    LOCAL_TASKS_DIR,
    MANIFEST_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    HarnessConfig,
    local_tasks,
    run_harness,
)

__all__ = ["LOCAL_TASKS_DIR", "MANIFEST_FILE", "RESULTS_FILE", "SAMPLES_FILE", "HarnessConfig", "local_tasks",
           "run_harness"]
