"""Mamba2 + attention hybrids (Bamba, Zamba2, Falcon-H1, NemotronH, GraniteMoeHybrid; the zoo's
`hybrid`) and Jamba (Mamba v1 + attention). Their attention layers take spanlab variants and
HyLoRA trains their SSM convs; the Mamba2 ones run spanlab's SSD scan."""

from spanlab.models.arch.base import ArchProfile, CheckpointLayout, ZooShape

_GENERATE = ("generate", "past_key_values", "past_key_values")
_MODULES = (
    "transformers.models.bamba.modeling_bamba",
    "transformers.models.zamba2.modeling_zamba2",
    "transformers.models.falcon_h1.modeling_falcon_h1",
    "transformers.models.nemotron_h.modeling_nemotron_h",
    "transformers.models.granitemoehybrid.modeling_granitemoehybrid",
)


def _converts(c: CheckpointLayout) -> bool:
    # Bamba takes every mamba_ssm checkpoint the other targets do not: attention among Mamba2
    # layers, partial rotary, Mamba2 + MLP (a block without an MLP gets a zero one).
    pure_mamba2 = c.attention_layers == 0 and not c.mlp
    transformer = c.attention_layers == c.layers and c.mlp and c.full_rotary
    return not (pure_mamba2 or transformer or c.own_attention)

MAMBA2_HYBRID = ArchProfile(
    "mamba2_hybrid",
    display="Mamba2-Hybrid",
    description="Mamba2 layers with interleaved attention layers",
    model_types=frozenset({"bamba", "zamba2", "falcon_h1", "nemotron_h", "granitemoehybrid"}),
    classes=frozenset({"BambaForCausalLM", "Zamba2ForCausalLM", "FalconH1ForCausalLM", "NemotronHForCausalLM",
                       "GraniteMoeHybridForCausalLM"}),
    # transformers' own prefill_chunk_size slices ids, mask and positions as one-shot generate sees them.
    chunked_prefill={"BambaForCausalLM": _GENERATE, "Zamba2ForCausalLM": _GENERATE, "FalconH1ForCausalLM": _GENERATE},
    # Fixed-shape recurrent states updated in place: decode steps replay as CUDA graphs (decode_graph).
    static_cache=True,
    cuda_graphs=True,
    ssd_scan=True,
    ssd_modules=_MODULES,
    decode_kernels=_MODULES,
    hylora_groups=("lora", "embeddings", "norms", "ssm_conv"),
    zoo="hybrid",
    zoo_aliases=("bamba", "mamba2-hybrid", "mamba2hybrid"),
    zoo_builder="spanlab.zoo.architectures:mamba2_hybrid",
    zoo_shapes={"tiny": ZooShape(5, {"intermediate_size": 384}), "small": ZooShape(8, {"intermediate_size": 1536}),
                "base": ZooShape(12)},
    conversion_target="bamba",
    converts=_converts,
)

JAMBA = ArchProfile(
    "jamba",
    display="Jamba",
    description="Mamba (v1) layers with interleaved attention and MoE layers",
    model_types=frozenset({"jamba"}),
    classes=frozenset({"JambaForCausalLM"}),
    prefill_not_exact={"JambaForCausalLM": "its selective scan starts every multi-token forward from a zero SSM "
                                           "state, so a chunked prompt would not give the same answer"},
    hylora_groups=("lora", "embeddings", "norms", "ssm_conv"),
)
