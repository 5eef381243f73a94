"""Hugging Face transformers backend: any AutoModelForCausalLM, batched greedy decoding.

Works for attention models (Llama family), SSMs (Mamba2), hybrids (Bamba, Zamba2, Jamba,
FalconH1), RecurrentGemma and RWKV through `model.generate`, which owns each architecture's
cache. What differs per architecture is whether batching is exact: every class above masks
padded positions (attention mask, or zeroing padded SSM inputs) so left padding is exact, except
RWKV, which ignores the mask and whose batched recurrent-state decoding in transformers does not
reproduce batch-1 outputs even for equal-length prompts, so RWKV runs at batch 1 (tests compare
batched with single generation for every architecture).

Mamba2-family layers (Mamba2, Bamba, Zamba2, FalconH1, NemotronH, GraniteMoeHybrid) run their
prefill through spanlab's SSD scan (`spanlab.models.ssd`) instead of transformers' torch fallback
when mamba-ssm is absent: the same function in linear memory per chunk; the kernel choice `ssd=off` turns it off.

Prompts longer than `prefill_chunk` tokens are prefilled in chunks where that is exact for the
class (Mamba2, Bamba, Zamba2, FalconH1, RWKV; see `spanlab.models.prefill`), so the memory of a
recurrent model's prefill does not grow with the prompt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spanlab import triton_support
from spanlab.errors import SpanlabError
from spanlab.models.base import Backend, Generation, cut_at_stop
from spanlab.models.builtin import resolve_builtin
from spanlab.models.fingerprint import model_dir_hash, tokenizer_hash
from spanlab.models.hf_compat import NO_HUB_KERNELS
from spanlab.models.prefill import (
    DEFAULT_PREFILL_CHUNK,
    chunked_generate,
    note,
    plan_prefill,
)

# What differs per architecture (exact left padding, static KV cache, CUDA-graph decode, SSD scan,
# chunked prefill) is in its profile, spanlab.models.arch. A static cache avoids re-concatenating
# the whole cache at every decode step (measured in docs/benchmarks.md).

def _loop_choice() -> str:
    from spanlab import kernels

    return kernels.current().decode_loop


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        # bf16 where the hardware has it; float32 on CPU so small test models are exact.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in _DTYPES:
        raise SpanlabError(f"unknown dtype {name!r}; use one of auto, float32, bfloat16, float16")
    return getattr(torch, _DTYPES[name])


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpanlabError(f"--device {name} asked for CUDA but no GPU is visible; use --device cpu")
    return name


def looks_local(name: str) -> bool:
    # Hub names are "org/name"; anything else with a slash, or a dot/tilde start, is a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise SpanlabError(f"cannot load a tokenizer from {name_or_path!r} ({str(e).splitlines()[0]}); "
                           "pass --tokenizer PATH to a directory with tokenizer files") from None
    if tok.pad_token is None:
        # Pad ids never reach the model unmasked, so any existing token will do.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


class HFBackend(Backend):
    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        model_obj: Any = None,
        tokenizer_obj: Any = None,
        cache_implementation: str | None = "auto",
        compile: bool = False,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        decode_graphs: str = "auto",
        fused: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # spanlab draws its own progress
        if not isinstance(prefill_chunk, int) or prefill_chunk < 0:
            raise SpanlabError(f"--prefill-chunk must be a whole number of tokens >= 0 (0 = off), got {prefill_chunk!r}")
        if decode_graphs not in ("auto", "on", "off", "eager"):
            raise SpanlabError(f"decode_graphs must be auto, on, off or eager, got {decode_graphs!r}")
        if fused not in ("auto", "on", "off"):
            raise SpanlabError(f"fused must be auto, on or off, got {fused!r}")

        variant = None
        if attn_implementation and attn_implementation.startswith("spanlab-variant:"):
            # `spanlab eval --attention sw|se...`: the fine-tuning attention over a KV cache
            # (spanlab.models.variant_attention); the model loads with its own implementation first.
            from spanlab.models import variant_attention

            variant = variant_attention.parse_spec(attn_implementation.split(":", 1)[1])
            attn_implementation = None
        if attn_implementation == "spanlab_sdpa":
            from spanlab.models.gqa_decode import register

            register()
        self.model_name = model
        # `builtin:NAME` loads from a local folder; the manifest keeps the name the user gave.
        self.model_path = model if model_obj is not None else resolve_builtin(model)
        tokenizer_path = resolve_builtin(tokenizer) if tokenizer else None
        model = self.model_path
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        if model_obj is None:
            from spanlab.models.native import register_all

            register_all()  # spanlab's own classes (e.g. converted mamba2attn folders) load without remote code
            if looks_local(model) and not Path(model).expanduser().exists():
                raise SpanlabError(f"model path {model!r} does not exist; pass a local directory or a hub name")
            try:
                config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as e:
                raise SpanlabError(f"cannot read a model config from {model!r} ({str(e).splitlines()[0]}); "
                                   "check the path, or --trust-remote-code for custom architectures") from None
            kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "trust_remote_code": trust_remote_code, **NO_HUB_KERNELS}
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            try:
                model_obj = AutoModelForCausalLM.from_pretrained(model, config=config, **kwargs)
            except ValueError as e:
                raise SpanlabError(f"cannot load {model!r} as a causal LM: {str(e).splitlines()[0]}") from None
            self.model = model_obj.to(self.device).eval()
        else:
            self.model = model_obj.to(device=self.device, dtype=self.torch_dtype).eval()
        current = getattr(self.model.config, "_attn_implementation", None)
        if attn_implementation is None and self.device.startswith("cuda") and current == "sdpa":
            # Same math as SDPA, without repeat_kv copies of the KV cache at every decode step.
            from spanlab.models.gqa_decode import register

            attn_implementation = register()
        if attn_implementation and current != attn_implementation:
            self.model.set_attn_implementation(attn_implementation)
        self.variant = None if variant is None else variant.describe()
        if variant is not None:
            variant_attention.install(self.model, variant)
        self.config = self.model.config
        self.tokenizer = tokenizer_obj if tokenizer_obj is not None else load_tokenizer(tokenizer_path or model, trust_remote_code)
        self.tokenizer_name = tokenizer or self.model_name
        vocab = getattr(self.config, "vocab_size", None)
        if vocab is not None and len(self.tokenizer) > vocab:
            raise SpanlabError(
                f"tokenizer {self.tokenizer_name!r} has {len(self.tokenizer)} tokens but the model's vocabulary has {vocab}; "
                "they do not belong together: pass the model's own tokenizer with --tokenizer")
        from spanlab.models.arch import profile_for

        self.arch = profile_for(self.model)
        self.ssd_scan = self._install_ssd()
        self.decode_kernels = self._install_decode_kernels()
        # Remote code is unverified: batch 1 is the only setting known to be exact for it.
        self.padding = "none" if (not self.arch.left_padding or trust_remote_code or variant is not None) else "left"
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = getattr(self.config, "eos_token_id", None)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._torch = torch
        # "static" preallocates the KV cache (no per-step concatenation); `compile` lets
        # transformers compile the decode step for it (CUDA graphs), worth it for long runs only.
        if cache_implementation == "auto":
            cache_implementation = "static" if (self.device.startswith("cuda") and self.arch.static_cache) else None
        if variant is not None:  # the rules read absolute positions off a growing (dynamic) cache
            cache_implementation = None
        self.cache_implementation = cache_implementation
        self.compile = compile
        self.prefill = plan_prefill(self.model, prefill_chunk, trust_remote_code=trust_remote_code)
        note(self.prefill)
        self.graphs = None
        self.decode_graphs = self._install_graphs(decode_graphs)
        self.fused = self._install_fused(fused)
        # After the graphs' choice: inside decode graphs the gated norm's kernel serves decode steps too.
        self.prefill_kernels = self._install_prefill_kernels()

    def _install_fused(self, mode: str) -> list[str]:
        """Llama-family RMSNorm/SwiGLU/rotary as fused Triton kernels on CUDA (spanlab.models.fused)."""
        from spanlab.models import fused

        cuda = self.device.startswith("cuda")
        if mode == "off" or (mode == "auto" and not (cuda and fused.enabled())):
            return []
        if not cuda or not triton_support.available():
            if mode == "on":
                raise SpanlabError("fused kernels need CUDA and triton")
            return []
        # Inside CUDA graphs decode steps use them too (no launch cost there); launched from Python they are slower.
        return fused.install(self.model, decode=self.decode_graphs == "on")

    def _install_graphs(self, mode: str) -> str:
        """Decode steps as CUDA graphs over spanlab's static caches (spanlab.models.decode_graph):
        "auto" where the model has a static cache and the spanlab_sdpa attention on CUDA; "eager"
        is the same caches without capture. A model with `enable_decode_graphs` (spanlab's RWKV-6,
        whose state is no transformers cache) captures its own steps."""
        from spanlab.models import decode_graph
        from spanlab.models.gqa_decode import NAME

        cuda = self.device.startswith("cuda")
        native = getattr(self.model, "enable_decode_graphs", None)
        if native is not None:  # spanlab's own recurrent models (RWKV-6) graph their state steps themselves
            if mode == "auto":
                mode = "on" if (cuda and decode_graph.enabled() and not self.compile) else "off"
            if mode == "on" and not cuda:
                raise SpanlabError("decode graphs: CUDA graphs need a CUDA device")
            if mode != "off":
                native(graphs=mode == "on")
            return mode
        if mode == "auto":
            # Attention models need spanlab_sdpa's graph-safe decode attention; Mamba2-family models
            # (recurrent decode kernels) graph with whatever their few attention layers run.
            attn_ok = getattr(self.config, "_attn_implementation", None) == NAME or bool(self.arch.decode_kernels)
            ok = (cuda and self.arch.cuda_graphs and self.cache_implementation == "static" and decode_graph.enabled()
                  and attn_ok and not self.compile and decode_graph.supported(self.model) is None)
            mode = "on" if ok else "off"
        if mode == "off":
            return "off"
        why = decode_graph.supported(self.model)
        if mode == "on" and not cuda:
            why = why or "CUDA graphs need a CUDA device"
        if self.cache_implementation != "static":
            why = why or "decode graphs run over a static cache (cache_implementation='static')"
        if why is not None:
            raise SpanlabError(f"decode graphs: {why}")
        self.graphs = decode_graph.DecodeGraphs(self.model, graphs=mode == "on")
        return mode

    def _install_ssd(self) -> str | None:
        """Mamba2-family layers: spanlab's linear-memory SSD scan in place of transformers' torch
        fallback (same results; see spanlab.models.ssd), unless kernels `ssd=off`. Returns which scan
        the model's prefill uses, for the manifest."""
        from spanlab.models import ssd

        if not self.arch.ssd_scan:
            return None
        module = type(self.model).__module__
        if not ssd.enabled():
            ssd.uninstall()
            return "transformers"
        # A module that keeps its global (a mamba-ssm kernel is installed) is not ours to replace.
        if module not in ssd.install():
            return "transformers"
        return "spanlab+triton" if self._fused_ssd() else "spanlab"

    def _fused_ssd(self) -> bool:
        """Whether evaluation calls take the fused Triton scan (spanlab.models.ssd_triton): a CUDA
        half-precision model, Triton importable, the kernel choice `ssd=auto`, heads the compiled
        kernels take (`ssd_triton.head_supported`)."""
        import torch

        from spanlab import kernels
        from spanlab.models import ssd_triton

        p = next(self.model.parameters(), None)
        # The mixers' head size: heads of 32 channels or fewer take the torch scan on CUDA.
        heads = {int(m.head_dim) for m in self.model.modules()
                 if hasattr(m, "ssm_state_size") and isinstance(getattr(m, "head_dim", None), int)}
        return (p is not None and p.is_cuda and p.dtype in (torch.bfloat16, torch.float16) and ssd_triton.available()
                and kernels.current().ssd == "auto" and kernels.current().ssd_matmul != "float32"
                and all(ssd_triton.head_supported(h) for h in heads))

    def _install_decode_kernels(self) -> str | None:
        """Mamba2-family decode steps: spanlab's Triton conv/SSM-state kernels in place of
        transformers' torch fallbacks (spanlab.models.mamba2_kernels; CUDA tensors only, a real
        mamba-ssm / causal-conv1d kernel is kept), unless the kernel choice mamba2_decode=torch. Returns which
        decode path the model's steps take, for the manifest."""
        from spanlab.models import mamba2_kernels

        if not self.arch.decode_kernels:
            return None
        if not mamba2_kernels.enabled():
            mamba2_kernels.uninstall()
            return "transformers"
        module = type(self.model).__module__
        done = mamba2_kernels.install()
        # spanlab's own classes (Mamba2-Attn) run a mixer from the listed transformers module(s).
        listed = [module] if module in self.arch.decode_kernels else list(self.arch.decode_kernels)
        if not all(m in done for m in listed):  # a real kernel (mamba-ssm / causal-conv1d) stays
            return "transformers"
        usable = self.device.startswith("cuda") and triton_support.available()
        return "spanlab-triton" if usable else "transformers (CPU)"

    def _install_prefill_kernels(self) -> list[str] | None:
        """Mamba2-family prefill glue: spanlab's Triton causal conv1d (+ SiLU, padding mask, conv-state
        write) and gated RMSNorm in place of transformers' torch code (spanlab.models.mamba2_prefill_kernels;
        CUDA only, a real causal-conv1d kernel is kept), unless the kernel choice mamba2_prefill=torch.
        Returns what the model's prefill runs through them ("conv1d", "gated_norm"), for the manifest;
        None for other families, [] where none run (CPU, switched off). A family with kernels of its own
        (`arch.prefill_kernels`: RecurrentGemma's RG-LRU scan, spanlab.models.rglru_scan) installs those."""
        from spanlab.models import mamba2_prefill_kernels as mpk

        if self.arch.prefill_kernels is not None:  # another family's own (RecurrentGemma's RG-LRU scan)
            import importlib

            return importlib.import_module(self.arch.prefill_kernels).install(self.model)
        if not self.arch.decode_kernels:
            return None
        if not mpk.enabled():
            mpk.uninstall()
            return []
        if not self.device.startswith("cuda") or not triton_support.available():
            return []
        return mpk.install(self.model, decode=self.decode_graphs == "on")

    # -- identity -----------------------------------------------------------------------------
    @property
    def max_length(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_class": type(self.model).__name__,
            "model_type": getattr(self.config, "model_type", None),
            "model_hash": model_dir_hash(Path(self.model_path).expanduser()) if Path(self.model_path).expanduser().is_dir() else None,
            "revision": getattr(self.config, "_commit_hash", None),
            "tokenizer": self.tokenizer_name,
            "tokenizer_hash": tokenizer_hash(self.tokenizer),
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "parameters": n_params,
            "max_position_embeddings": self.max_length,
            "padding": self.padding,
            "attn_implementation": getattr(self.config, "_attn_implementation", None),
            "cache_implementation": self.cache_implementation,
            **({"attention_variant": self.variant} if self.variant else {}),
            "prefill": self.prefill.describe(),
            "ssd_scan": self.ssd_scan,
            "decode_kernels": self.decode_kernels,
            "prefill_kernels": self.prefill_kernels,
            "decode_graphs": self.decode_graphs,
            "decode_loop": "spanlab" if (self.graphs is not None and _loop_choice() == "auto") else "generate",
            "fused": self.fused,
        }

    # -- generation ---------------------------------------------------------------------------
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[Generation]:
        oom = False
        try:
            return self._generate(prompts, max_new_tokens, stop)
        except self._torch.cuda.OutOfMemoryError:
            oom = True  # handled below: inside `except` the traceback would pin the failed batch's tensors
        if oom:
            if self.graphs is not None:
                self.graphs.release()  # its cache may be what no longer fits
            self._torch.cuda.empty_cache()
            if len(prompts) == 1:
                raise SpanlabError(
                    f"out of GPU memory on one prompt of {self.count_tokens(prompts)[0]} tokens; "
                    "use shorter --lengths, --dtype bfloat16, or a larger GPU")
            # Back off by halves: the batcher's guess was too big for this length.
            half = len(prompts) // 2
            return self.generate(prompts[:half], max_new_tokens, stop) + self.generate(prompts[half:], max_new_tokens, stop)
        raise AssertionError("unreachable")

    def _generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str]) -> list[Generation]:
        torch = self._torch
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
        if len(prompts) > 1 and (self.padding == "none" or (self.padding == "equal" and not bool(enc["attention_mask"].all()))):
            raise ValueError(f"{type(self.model).__name__} is not batched exactly ({self.padding!r}); the batcher must respect it")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        gc, extra = self.generation_setup(enc["input_ids"].shape, max_new_tokens, min_new_tokens=0, stop=stop)
        width = enc["input_ids"].shape[1]
        # spanlab's greedy loop takes over after generate's first decode step (which captures or
        # replays the static step): generate then stops at 2 new tokens.
        loop = max_new_tokens > 2 and not stop and self._greedy_loop_ok(gc, width)
        if loop:
            gc.max_new_tokens = 2
            steps_before = self.graphs.steps
        with torch.inference_mode():
            extra.update({k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")})
            out = chunked_generate(self.model, self.prefill, enc["input_ids"], enc["attention_mask"], gc,
                                   tokenizer=self.tokenizer if stop else None, **extra)
            if loop and self.graphs.steps > steps_before:
                pad = self.tokenizer.pad_token_id
                pad = pad if pad is not None else min(self.eos_ids, default=0)
                out = self.graphs.continue_greedy(out, width, max_new_tokens, sorted(self.eos_ids), pad)
        new = out[:, width:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, plen in zip(new, prompt_lens):
            n = len(row)
            for i, t in enumerate(row):
                if t in self.eos_ids:
                    n = i + 1
                    break
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            results.append(Generation(text=cut_at_stop(text, stop), prompt_tokens=int(plen), new_tokens=n))
        return results

    def _greedy_loop_ok(self, gc: Any, width: int) -> bool:
        """Whether spanlab's greedy loop (DecodeGraphs.continue_greedy) gives generate's tokens for
        this config: decode steps on spanlab's static caches, the `decode_loop` choice left on auto,
        and no logits processor in what generate would build (the checkpoint's generation config
        can add some: repetition penalty, suppressed tokens, ...). Asked of transformers itself; any
        failure to ask means generate keeps every step."""
        from spanlab import kernels

        if self.graphs is None or kernels.current().decode_loop != "auto":
            return False
        try:
            merged, _ = self.model._prepare_generation_config(gc)
            processors = self.model._get_logits_processor(generation_config=merged, input_ids_seq_length=width,
                                                          device=self.device)
        except Exception:  # noqa: BLE001 - a transformers without these helpers: generate's loop
            return False
        return len(processors) == 0 and not merged.do_sample and (merged.num_beams or 1) == 1

    def generation_setup(self, shape: Sequence[int], max_new_tokens: int, *, min_new_tokens: int = 0,
                         stop: Sequence[str] = (), eos: bool = True) -> tuple[Any, dict[str, Any]]:
        """The GenerationConfig and extra `generate` arguments for a (batch, width) prompt tensor: greedy,
        the backend's cache, and spanlab's static cache when decode steps run as graphs."""
        from transformers import GenerationConfig

        # A fresh config: the checkpoint's own generation defaults (sampling, penalties, max_length)
        # must not leak into a greedy benchmark.
        gc = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            eos_token_id=(sorted(self.eos_ids) or None) if eos else None, pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(stop) or None, cache_implementation=self.cache_implementation,
            disable_compile=not self.compile,
        )
        extra: dict[str, Any] = {}
        if self.graphs is not None:
            gc.cache_implementation = None  # generate refuses a cache implementation next to a given cache
            extra[self.graphs.cache_key] = self.graphs.cache_for(int(shape[0]), int(shape[1]) + max_new_tokens)
        return gc, extra

    def loglikelihood(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        torch = self._torch
        scores = []
        with torch.inference_mode():
            for ctx, cont in zip(contexts, continuations):
                ctx_ids = self.tokenizer(ctx)["input_ids"]
                full = self.tokenizer(ctx + cont)["input_ids"]
                if full[: len(ctx_ids)] != ctx_ids or len(full) == len(ctx_ids):
                    # Tokens merged across the boundary: score the continuation tokenised alone.
                    full = ctx_ids + self.tokenizer(cont, add_special_tokens=False)["input_ids"]
                ids = torch.tensor([full], device=self.device)
                logp = torch.log_softmax(self.model(ids).logits[0, :-1].float(), dim=-1)
                tgt = ids[0, 1:]
                lp = logp.gather(-1, tgt[:, None])[:, 0][len(ctx_ids) - 1:]
                scores.append(float(lp.sum()))
        return scores

    def prompt_logprobs(self, text: str) -> tuple[list[str], list[float | None], list[int]]:
        """Each prompt token, its log-probability given the tokens before it, and its character
        offset (what an OpenAI `echo=True, logprobs=0` answer carries)."""
        torch = self._torch
        enc = self.tokenizer(text, return_offsets_mapping=True)
        ids = enc["input_ids"]
        offsets = [a for a, _ in enc["offset_mapping"]]
        with torch.inference_mode():
            x = torch.tensor([ids], device=self.device)
            logp = torch.log_softmax(self.model(x).logits[0, :-1].float(), dim=-1)
            lps = logp.gather(-1, x[0, 1:, None])[:, 0].tolist()
        return self.tokenizer.convert_ids_to_tokens(ids), [None, *lps], offsets

    def close(self) -> None:
        if self.graphs is not None:
            self.graphs.close()
            self.graphs = None
        if hasattr(self.model, "disable_decode_graphs"):
            self.model.disable_decode_graphs()
        if self.fused:
            from spanlab.models import fused

            fused.uninstall(self.model)
        if self.prefill_kernels:
            import importlib

            importlib.import_module(self.arch.prefill_kernels or "spanlab.models.mamba2_prefill_kernels").uninstall_model(self.model)
        del self.model
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
