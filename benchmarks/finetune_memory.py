"""Where one fine-tuning step's memory and time go, for one attention variant (issue 16).

Builds the same random-weight model as benchmarks/finetune_speed.py (same flags, `--geometry`),
runs `--warmup` untraced steps, then one step under
`torch.cuda.memory._record_memory_history` and `torch.profiler` (profile_memory, record_shapes),
and writes to `--out`:

    <variant>_snapshot.pickle   the allocator history (drag into https://pytorch.org/memory_viz)
    <variant>_memory.json       categories at the peak (parameters, gradients, optimizer state,
                                activations, temporaries, ...) from torch's memory timeline, the
                                allocator's peak, and the top ops by device time by class
                                (attention / matmul / elementwise / other)
    <variant>_memory.md         the same as markdown tables

`--device cpu` is a smoke run: the profiler's op table (CPU time) and the categories where torch
gives them on the CPU; no snapshot.

    python benchmarks/finetune_memory.py --variant se --context 32768 --geometry sheared-llama-2.7b --out mem/
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune_speed as fs  # noqa: E402  (the model, geometry and variant flags are shared)

# Kernel / op names by class. Device rows are kernels (cuBLAS/CUTLASS GEMMs, flash/flex/Triton
# attention); CPU rows are aten ops. First match wins.
CLASSES = [
    ("elementwise", re.compile(r"^aten::(select|index_select|slice|view|reshape|sub|div)$")),
    ("attention", re.compile(r"attention|attn|flash|fmha|flex|sdpa|se_|selection|topk|split_kernel|merge_kernel|"
                             r"mem_rows|triton_tem", re.I)),
    ("matmul", re.compile(r"gemm|gemv|cutlass|cublas|nvjet|xmma|aten::(mm|addmm|bmm|matmul|linear|baddbmm)\b", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|reduce|softmax|norm|copy|fill|cat|silu|mul|add|exp|rsqrt|"
                               r"pow|neg|where|index|embedding|cross_entropy|nll|_to_copy|triton_", re.I)),
]


def op_class(name: str) -> str:
    for cls, pattern in CLASSES:
        if pattern.search(name):
            return cls
    return "other"


def op_table(prof, cuda: bool, top: int) -> dict:
    from torch.autograd import DeviceType

    rows = []
    for evt in prof.key_averages():
        if cuda:
            # Kernel rows only: an aten op's own device time is the sum of its kernels, counted there.
            if evt.device_type != DeviceType.CUDA:
                continue
            us = evt.self_device_time_total
        else:
            if evt.device_type != DeviceType.CPU:
                continue
            us = evt.self_cpu_time_total
        if us > 0:
            rows.append({"name": evt.key, "class": op_class(evt.key), "time_ms": us / 1e3, "calls": evt.count})
    rows.sort(key=lambda r: -r["time_ms"])
    total = sum(r["time_ms"] for r in rows) or 1.0
    by_class: dict[str, float] = {}
    for r in rows:
        by_class[r["class"]] = by_class.get(r["class"], 0.0) + r["time_ms"]
    return {
        "clock": "device (CUDA kernels)" if cuda else "CPU (aten ops, self time)",
        "total_ms": total,
        "by_class": {k: {"time_ms": v, "share_pct": 100 * v / total} for k, v in sorted(by_class.items(), key=lambda x: -x[1])},
        "top": rows[:top],
    }


def memory_categories(prof, device: str) -> dict:
    """Bytes by category at the step's peak, from torch's (private) memory timeline."""
    try:
        from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline

        times, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(device)
    except Exception as e:  # a private API: report why instead of failing the run
        return {"unavailable": f"{type(e).__name__}: {e}"}
    if not sizes:
        return {"unavailable": f"no allocations recorded on {device}"}
    names = ["unknown" if c is None else c.name.lower() for c in _CATEGORY_TO_INDEX]
    totals = [sum(s[1:]) for s in sizes]
    peak = max(range(len(totals)), key=totals.__getitem__)
    at_peak = {n: sizes[peak][i + 1] / 2**30 for i, n in enumerate(names)}
    return {"peak_gib": totals[peak] / 2**30, "peak_time_us": times[peak] - times[0],
            "by_category_gib": dict(sorted(at_peak.items(), key=lambda x: -x[1]))}


def to_markdown(rep: dict) -> str:
    out = [f"# {rep['variant']} at {rep['context']} tokens ({rep['device']})", ""]
    mem = rep["categories"]
    if "by_category_gib" in mem:
        out += [f"Peak of the profiled step: {mem['peak_gib']:.2f} GiB (torch memory timeline); allocator peak "
                f"{rep['allocator_peak_gib'] if rep['allocator_peak_gib'] is not None else 'n/a'} GiB.", "",
                "| category | GiB at peak |", "|---|---:|"]
        out += [f"| {k} | {v:.3f} |" for k, v in mem["by_category_gib"].items()]
    else:
        out += [f"Memory categories unavailable: {mem['unavailable']}"]
    ops = rep["ops"]
    out += ["", f"Time by class ({ops['clock']}, total {ops['total_ms']:.1f} ms):", "",
            "| class | ms | share |", "|---|---:|---:|"]
    out += [f"| {k} | {v['time_ms']:.2f} | {v['share_pct']:.1f} % |" for k, v in ops["by_class"].items()]
    out += ["", "| op | class | ms | calls |", "|---|---|---:|---:|"]
    out += [f"| `{r['name'][:80]}` | {r['class']} | {r['time_ms']:.2f} | {r['calls']} |" for r in ops["top"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="se")
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=1, help="untraced steps first (compilation, allocator growth)")
    p.add_argument("--top", type=int, default=25, help="ops in the table")
    p.add_argument("--out", type=Path, required=True)
    for flag, kw in [("--peft", dict(default="lora+")), ("--rank", dict(type=int, default=32)),
                     ("--window", dict(type=int, default=2048)), ("--chunk-size", dict(type=int, default=2048)),
                     ("--block-size", dict(type=int, default=32)), ("--top-k", dict(type=int, default=8)),
                     ("--hidden", dict(type=int, default=768)), ("--intermediate", dict(type=int, default=2048)),
                     ("--layers", dict(type=int, default=12)), ("--heads", dict(type=int, default=12)),
                     ("--kv-heads", dict(type=int, default=4)), ("--vocab", dict(type=int, default=32000)),
                     ("--geometry", dict(choices=sorted(fs.GEOMETRIES), default=None)),
                     ("--loss-chunk", dict(type=int, default=4096)), ("--seed", dict(type=int, default=0)),
                     ("--device", dict(default="cuda"))]:
        p.add_argument(flag, **kw)
    p.add_argument("--offload-activations", action="store_true")
    args = p.parse_args(argv)
    for k, v in fs.GEOMETRIES.get(args.geometry, {}).items():
        setattr(args, k, v)

    import torch

    from spanlab.finetune import apply_peft, patch_attention
    from spanlab.train import TrainConfig, train

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda needs a CUDA GPU (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = apply_peft(fs.build_model(args), args.peft, rank=args.rank, alpha=2 * args.rank, verbose=False)
    model = model.to(args.device)
    params = fs.variant_params(args.variant, args)
    patch_attention(model, args.variant, **params)
    g = torch.Generator().manual_seed(args.seed)
    rows = [torch.randint(0, args.vocab, (args.context,), generator=g) for _ in range(args.warmup + 1)]

    from torch.profiler import ProfilerActivity, profile

    state: dict = {}

    def on_step(rec: dict) -> None:
        # Tracing starts after the warm-up steps and stops after the traced one.
        if rec["step"] == args.warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.memory._record_memory_history(max_entries=1_000_000)
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            state["prof"] = profile(activities=acts, profile_memory=True, record_shapes=True, with_stack=True)
            state["prof"].__enter__()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out_dir=Path(tmp), max_steps=args.warmup + 1, micro_batch_size=1, grad_accum=1,
                          lr=2e-4, warmup_steps=0, mixed_precision="bf16", gradient_checkpointing=True, save_every=0,
                          progress=False, save_final=False, resume=False, seed=args.seed, loss_chunk=args.loss_chunk,
                          offload_activations=args.offload_activations)
        if args.warmup == 0:
            on_step({"step": 0})
        train(model, rows, cfg, shuffle=False, on_step=on_step)
    prof = state["prof"]
    if cuda:
        torch.cuda.synchronize()
    prof.__exit__(None, None, None)
    stem = args.out / args.variant
    if cuda:
        torch.cuda.memory._dump_snapshot(f"{stem}_snapshot.pickle")
        torch.cuda.memory._record_memory_history(enabled=None)
    rep = {
        "variant": args.variant, **params, "context": args.context, "device": torch.cuda.get_device_name() if cuda else "cpu",
        "geometry": args.geometry, "loss_chunk": args.loss_chunk, "offload_activations": args.offload_activations,
        "allocator_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "allocator_peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if cuda else None,
        "categories": memory_categories(prof, "cuda:0" if cuda else "cpu"),
        "ops": op_table(prof, cuda, args.top), "torch": torch.__version__,
    }
    Path(f"{stem}_memory.json").write_text(json.dumps(rep, indent=1))
    md = to_markdown(rep)
    Path(f"{stem}_memory.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
