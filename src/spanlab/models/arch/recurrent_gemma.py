"""RecurrentGemma (Griffin): RG-LRU recurrent blocks and local multi-query attention. Its
attention goes through transformers' registry; its prefill must stay one shot."""

from spanlab.models.arch.base import ArchProfile

RECURRENT_GEMMA = ArchProfile(
    "recurrent_gemma",
    display="Griffin",
    description="RG-LRU recurrent blocks with local attention",
    model_types=frozenset({"recurrent_gemma"}),
    classes=frozenset({"RecurrentGemmaForCausalLM"}),
    prefill_not_exact={"RecurrentGemmaForCausalLM": "its recurrent blocks restart their convolution state on every "
                                                    "multi-token forward, so a chunked prompt would not give the same "
                                                    "answer"},
    # Its conv_1d sits in the recurrent block, not an SSM mixer: HyLoRA has no conv group here.
    hylora_groups=("lora", "embeddings", "norms"),
    zoo="griffin",
    zoo_aliases=("recurrentgemma", "recurrent_gemma"),
    zoo_builder="spanlab.zoo.architectures:griffin",
)
