"""Mamba2-Attn (mamba_ssm's MambaLMHeadModel with MHA layers: state-spaces/mamba2attn-2.7b, and
Transformer++ converted with `--target mamba2attn`), as spanlab's native `M2AForCausalLM`
(spanlab.models.mamba2attn). Its attention takes q/k/v after a depthwise causal conv and partial
rotary, through transformers' registry, so spanlab variants patch in; HyLoRA trains both the
Mamba-2 conv and the attention conv; its Mamba-2 layers are BambaMixers, so spanlab's SSD scan and
decode kernels run, and its decode steps run over a static cache as CUDA graphs."""

from spanlab.models.arch.base import ArchProfile

MAMBA2ATTN = ArchProfile(
    "mamba2attn",
    display="Mamba2-Attn",
    description="Mamba2 layers with conv-QKV attention layers (mamba_ssm layout)",
    model_types=frozenset({"spanlab_mamba2attn"}),
    classes=frozenset({"M2AForCausalLM"}),
    conv_markers=("Mixer", "Mamba", "M2AAttention"),
    chunked_prefill={"M2AForCausalLM": ("generate", "past_key_values", "past_key_values")},
    # Fixed-shape caches updated in place (Mamba2 conv + SSM states; attention KV + pre-conv q/k/v
    # rows): decode steps replay as CUDA graphs (decode_graph), as for the Mamba2 hybrids.
    static_cache=True,
    cuda_graphs=True,
    ssd_scan=True,
    ssd_modules=("transformers.models.bamba.modeling_bamba",),
    decode_kernels=("transformers.models.bamba.modeling_bamba",),
    hylora_groups=("lora", "embeddings", "norms", "ssm_conv"),
    # Only this class has mamba_ssm's conv-QKV attention, MHA MLP branch, rotary-free heads and split biases.
    conversion_target="mamba2attn",
    converts=lambda c: c.own_attention,
)
