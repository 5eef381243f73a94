"""RecurrentGemma (Griffin): RG-LRU recurrent blocks and local multi-query attention. Its
attention goes through transformers' registry; its prefill chunks once spanlab makes the recurrent
blocks carry their convolution state (models/prefill_recurrent_gemma.py), and its RG-LRU
recurrence runs as a chunked Triton scan on CUDA (models/rglru_scan.py)."""

from spanlab.models.arch.base import ArchProfile, ZooShape

RECURRENT_GEMMA = ArchProfile(
    "recurrent_gemma",
    display="Griffin",
    description="RG-LRU recurrent blocks with local attention",
    model_types=frozenset({"recurrent_gemma"}),
    classes=frozenset({"RecurrentGemmaForCausalLM"}),
    chunked_prefill={"RecurrentGemmaForCausalLM": ("generate", "past_key_values", "past_key_values")},
    prefill_installers={"RecurrentGemmaForCausalLM": "spanlab.models.prefill_recurrent_gemma"},
    # transformers steps its RG-LRU token by token in Python; spanlab's chunked scan replaces that loop.
    prefill_kernels="spanlab.models.rglru_scan",
    # The recurrent block's temporal conv_1d plays the SSM conv's part: HyLoRA trains it.
    conv_markers=("RecurrentBlock",),
    hylora_groups=("lora", "embeddings", "norms", "ssm_conv"),
    zoo="griffin",
    zoo_aliases=("recurrentgemma", "recurrent_gemma"),
    zoo_builder="spanlab.zoo.architectures:griffin",
    zoo_shapes={"tiny": ZooShape(5), "small": ZooShape(10), "base": ZooShape(14)},
)
