"""Llama-family Transformers (Llama, Mistral, Qwen2/3, Gemma, Phi-3, OLMo, Granite; GLM:
the zoo's Transformer++ with RoPE on half of each head): attention
through transformers' registry, RoPE, a static KV cache and CUDA-graph decode on CUDA."""

from spanlab.models.arch.base import ArchProfile

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
)
