"""Pure SSMs: Mamba2 (SSD mixers, spanlab's scan, chunked prefill through its cache_params) and
Mamba (v1, selective scan; batched decoding is not exact, so batch 1). No attention to patch."""

from spanlab.models.arch.base import ArchProfile, ZooShape

MAMBA2 = ArchProfile(
    "mamba2",
    display="Mamba2",
    description="Mamba2 (SSD) stacks",
    model_types=frozenset({"mamba2"}),
    classes=frozenset({"Mamba2ForCausalLM"}),
    patchable=False,
    chunked_prefill={"Mamba2ForCausalLM": ("state", "cache_params", "cache_params")},
    # Fixed-shape recurrent states updated in place: decode steps replay as CUDA graphs (decode_graph).
    static_cache=True,
    cuda_graphs=True,
    ssd_scan=True,
    ssd_modules=("transformers.models.mamba2.modeling_mamba2",),
    decode_kernels=("transformers.models.mamba2.modeling_mamba2",),
    hylora_groups=("embeddings", "norms", "ssm_conv"),
    zoo="mamba2",
    zoo_builder="spanlab.zoo.architectures:mamba2",
    zoo_shapes={"tiny": ZooShape(8, {"state_size": 128}), "small": ZooShape(19), "base": ZooShape(26)},
    fused_kernels=False,
    conversion_target="mamba2",
    converts=lambda c: c.attention_layers == 0 and not c.mlp,  # Mamba2 blocks only: the same parameter layout
)

MAMBA = ArchProfile(
    "mamba",
    display="Mamba",
    description="Mamba (v1) selective-scan stacks",
    model_types=frozenset({"mamba"}),
    classes=frozenset({"MambaForCausalLM"}),
    patchable=False,
    left_padding=False,  # batched state decoding in transformers does not reproduce batch 1
    fused_kernels=False,
    hylora_groups=("embeddings", "norms", "ssm_conv"),
)
