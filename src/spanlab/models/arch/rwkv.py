"""RWKV: transformers' RWKV-4 and spanlab's native RWKV-6 (spanlab.models.rwkv6; the other model
types run batch 1 too): no attention, an attention mask it ignores (so batch 1), chunked prefill
through its `state`."""

from spanlab.models.arch.base import ArchProfile, ZooShape

RWKV = ArchProfile(
    "rwkv",
    display="RWKV",
    description="RWKV linear-attention recurrences",
    model_types=frozenset({"rwkv", "rwkv5", "rwkv6", "rwkv7"}),
    classes=frozenset({"RwkvForCausalLM", "Rwkv6ForCausalLM"}),
    patchable=False,
    left_padding=False,  # the mask is ignored and batched state decoding differs from batch 1
    chunked_prefill={"RwkvForCausalLM": ("state", "state", "state"), "Rwkv6ForCausalLM": ("state", "state", "state")},
    hylora_groups=("embeddings", "norms"),
    zoo="rwkv",
    zoo_aliases=("rwkv4",),
    zoo_builder="spanlab.zoo.architectures:rwkv",
    zoo_shapes={"tiny": ZooShape(5, {"intermediate_size": 704}), "small": ZooShape(10, {"intermediate_size": 1792}),
                "base": ZooShape(14, {"intermediate_size": 2688})},
    fused_kernels=False,  # LayerNorms and a channel mix: no Llama-formula module to find
)
