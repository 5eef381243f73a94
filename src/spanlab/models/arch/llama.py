"""Llama-family Transformers (Llama, Mistral, Qwen2/3, Gemma, Phi-3, OLMo, Granite; GLM:
the zoo's Transformer++ with RoPE on half of each head): attention
through transformers' registry, RoPE, a static KV cache and CUDA-graph decode on CUDA."""

from spanlab.models.arch.base import ArchProfile, CheckpointLayout, ZooShape


def _converts(c: CheckpointLayout) -> bool:
    # Transformer++ checkpoints: attention and an MLP in every block, rotary over the whole head.
    return c.attention_layers == c.layers and c.mlp and c.full_rotary and not c.own_attention


LLAMA = ArchProfile(
    "llama",
    display="Transformer++",
    description="RoPE + SwiGLU + RMSNorm decoder-only Transformers",
    model_types=frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo", "olmo2", "granite", "glm"}),
    classes=frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GlmForCausalLM"}),
    # Pure attention: SDPA prefill memory is already linear in the prompt, so one shot is fastest.
    static_cache=True,
    cuda_graphs=True,
    hylora_groups=("lora", "embeddings", "norms"),
    zoo="transformer",
    zoo_aliases=("llama", "transformer++", "transformerpp"),
    zoo_builder="spanlab.zoo.architectures:llama",
    zoo_shapes={"tiny": ZooShape(5), "small": ZooShape(10), "base": ZooShape(14)},
    conversion_target="llama",
    converts=_converts,
)
