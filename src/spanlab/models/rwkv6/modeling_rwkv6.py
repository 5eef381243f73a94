"""RWKV-6 "Finch" as a native transformers model, with the key layout of RWKV/rwkv-6-world-*
(the hub's remote code: `rwkv.embeddings`, `rwkv.blocks.{i}.{pre_ln,ln1,ln2,attention,feed_forward}`,
`rwkv.ln_out`, `head`; mixing vectors (1, 1, C), time_decay (1, 1, A), time_faaaa (heads, head_size)).

Block: x = pre_ln(x) (first block only); x += TimeMix(ln1(x)); x += ChannelMix(ln2(x)).

TimeMix (per token t, x_{-1} from the state): data-dependent token shift
    xx = x_{t-1} - x_t;  m_* = (tanh((x_t + xx·maa_x) W1) W2)_*;  x_* = x_t + xx·(maa_* + m_*)
r, k, v = receptance/key/value(x_r, x_k, x_v); g = silu(gate(x_g));
decay_t = time_decay + tanh(x_w Wd1) Wd2, w_t = exp(-exp(decay_t)); bonus u = time_faaaa;
WKV recurrence (see `wkv.py`), GroupNorm per head (ln_x), times g, output projection.
ChannelMix: k = relu(key(x_k))², out = sigmoid(receptance(x_r)) · value(k).

State, carried between forwards (`state=`, as transformers' RWKV-4): [attention shift (B, C, L),
WKV (B, H, N, N, L) float32, feed-forward shift (B, C, L)], L = layer. A multi-token forward that
is given a state continues from it, so a prompt can be prefilled in chunks at constant memory
(spanlab.models.prefill "state" mode). The reference implementation's fp16 rescaling of every
`rescale_every` blocks is not applied: it divides the residual stream and every later
contribution by the same power of two, which the following LayerNorms undo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from spanlab.models.rwkv6.configuration_rwkv6 import Rwkv6Config
from spanlab.models.rwkv6.wkv import wkv


def _shift(x: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """x_{t-1} for every t of (B, T, C); `last` is the previous forward's final token (zeros at start)."""
    first = torch.zeros_like(x[:, :1]) if last is None else last[:, None].to(x.dtype)
    return torch.cat([first, x[:, :-1]], dim=1)


class Rwkv6SelfAttention(nn.Module):
    def __init__(self, config: Rwkv6Config, layer_id: int) -> None:
        super().__init__()
        self.config = config
        self.layer_id = layer_id
        C, A, H = config.hidden_size, config.attention_hidden_size, config.num_heads
        self.num_heads, self.head_size = H, config.head_size
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.zeros(1, 1, C)))
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, config.time_mix_extra_dim * 5))
        self.time_maa_w2 = nn.Parameter(torch.zeros(5, config.time_mix_extra_dim, C))
        self.time_decay = nn.Parameter(torch.zeros(1, 1, A))
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, config.time_decay_extra_dim))
        self.time_decay_w2 = nn.Parameter(torch.zeros(config.time_decay_extra_dim, A))
        self.time_faaaa = nn.Parameter(torch.zeros(H, config.head_size))
        self.receptance = nn.Linear(C, A, bias=False)
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.gate = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)
        self.ln_x = nn.GroupNorm(H, A, eps=1e-5 * config.head_size_divisor**2)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        last = state[0][:, :, self.layer_id] if state is not None else None
        xx = _shift(x, last) - x
        mix = torch.tanh((x + xx * self.time_maa_x) @ self.time_maa_w1).view(B * T, 5, -1).transpose(0, 1)
        mw, mk, mv, mr, mg = torch.bmm(mix, self.time_maa_w2).view(5, B, T, -1).unbind(0)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        decay = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        logw = -torch.exp(decay.float())

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.num_heads, self.head_size).transpose(1, 2)

        S0 = state[1][..., self.layer_id] if state is not None else None
        out, S = wkv(heads(r), heads(k), heads(v), heads(logw), self.time_faaaa, S0,
                     impl=self.config.wkv_impl, chunk=self.config.wkv_chunk)
        if state is not None:
            state[0][:, :, self.layer_id] = x[:, -1]
            state[1][..., self.layer_id] = S
        out = out.transpose(1, 2).reshape(B * T, -1)
        out = F.group_norm(out, self.num_heads, self.ln_x.weight.float(), self.ln_x.bias.float(), self.ln_x.eps)
        return self.output(out.view(B, T, -1).to(x.dtype) * g)


class Rwkv6FeedForward(nn.Module):
    def __init__(self, config: Rwkv6Config, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        C = config.hidden_size
        self.time_maa_k = nn.Parameter(torch.zeros(1, 1, C))
        self.time_maa_r = nn.Parameter(torch.zeros(1, 1, C))
        self.key = nn.Linear(C, config.intermediate_size, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(config.intermediate_size, C, bias=False)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor] | None) -> torch.Tensor:
        last = state[2][:, :, self.layer_id] if state is not None else None
        xx = _shift(x, last) - x
        if state is not None:
            state[2][:, :, self.layer_id] = x[:, -1]
        k = torch.relu(self.key(x + xx * self.time_maa_k)).square()
        return torch.sigmoid(self.receptance(x + xx * self.time_maa_r)) * self.value(k)


class Rwkv6Block(nn.Module):
    def __init__(self, config: Rwkv6Config, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.pre_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.ln1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.ln2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attention = Rwkv6SelfAttention(config, layer_id)
        self.feed_forward = Rwkv6FeedForward(config, layer_id)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor] | None) -> torch.Tensor:
        if self.layer_id == 0:
            x = self.pre_ln(x)
        x = x + self.attention(self.ln1(x), state)
        return x + self.feed_forward(self.ln2(x), state)


@dataclass
class Rwkv6Output(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    state: list[torch.Tensor] | None = None


@dataclass
class Rwkv6CausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state: list[torch.Tensor] | None = None


class Rwkv6PreTrainedModel(PreTrainedModel):
    config: Rwkv6Config
    config_class = Rwkv6Config
    base_model_prefix = "rwkv"
    _no_split_modules = ["Rwkv6Block"]
    supports_gradient_checkpointing = False
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The reference's schedule (RWKV-LM v6): decays spread over channels, mixing ratios by depth.
        cfg = self.config
        if isinstance(module, Rwkv6SelfAttention):
            L, C, A = cfg.num_hidden_layers, cfg.hidden_size, cfg.attention_hidden_size
            r01 = module.layer_id / max(L - 1, 1)
            r10 = 1.0 - module.layer_id / L
            ddd = (torch.arange(C, dtype=torch.float32) / C)[None, None]
            for name, p in (("x", r10), ("w", r10), ("k", r10), ("r", 0.5 * r10), ("g", 0.5 * r10)):
                getattr(module, f"time_maa_{name}").copy_(1.0 - ddd.pow(p))
            module.time_maa_v.copy_(1.0 - (ddd.pow(r10) + 0.3 * r01))
            h = torch.arange(A, dtype=torch.float32)
            module.time_decay.copy_((-6.0 + 5.0 * (h / max(A - 1, 1)) ** (0.7 + 1.3 * r01)).view_as(module.time_decay))
            faaaa = (1.0 - h / max(A - 1, 1)) * r01 + 0.1 * ((h + 1) % 3 - 1)
            module.time_faaaa.copy_(faaaa.view_as(module.time_faaaa))
            for p in (module.time_maa_w1, module.time_maa_w2, module.time_decay_w1, module.time_decay_w2):
                p.uniform_(-1e-2, 1e-2)
            for lin in (module.receptance, module.key, module.value, module.gate, module.output):
                lin.weight.normal_(0.0, cfg.initializer_range)
            module.ln_x.weight.fill_(1.0)
            module.ln_x.bias.zero_()
        elif isinstance(module, Rwkv6FeedForward):
            r10 = 1.0 - module.layer_id / cfg.num_hidden_layers
            ddd = (torch.arange(cfg.hidden_size, dtype=torch.float32) / cfg.hidden_size)[None, None]
            module.time_maa_k.copy_(1.0 - ddd.pow(r10))
            module.time_maa_r.copy_(1.0 - ddd.pow(r10))
            for lin in (module.key, module.receptance, module.value):
                lin.weight.normal_(0.0, cfg.initializer_range)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, cfg.initializer_range)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, cfg.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class Rwkv6Model(Rwkv6PreTrainedModel):
    def __init__(self, config: Rwkv6Config) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Rwkv6Block(config, i) for i in range(config.num_hidden_layers))
        self.ln_out = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings = value

    def empty_state(self, batch: int, device: Any, dtype: torch.dtype) -> list[torch.Tensor]:
        c = self.config
        L, C, H, N = c.num_hidden_layers, c.hidden_size, c.num_heads, c.head_size
        return [torch.zeros(batch, C, L, device=device, dtype=dtype),
                torch.zeros(batch, H, N, N, L, device=device, dtype=torch.float32),
                torch.zeros(batch, C, L, device=device, dtype=dtype)]

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, state: list[torch.Tensor] | None = None,
                use_cache: bool | None = None, **kwargs: Any) -> Rwkv6Output:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        # RWKV reads no mask: padding would flow through the recurrence, so spanlab runs it at batch 1.
        del attention_mask
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if state is None and use_cache:
            state = self.empty_state(x.shape[0], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, state)
        return Rwkv6Output(last_hidden_state=self.ln_out(x), state=state if use_cache else None)


class Rwkv6ForCausalLM(Rwkv6PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"head.weight": "rwkv.embeddings.weight"}

    def __init__(self, config: Rwkv6Config) -> None:
        super().__init__(config)
        self.rwkv = Rwkv6Model(config)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.rwkv.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.rwkv.embeddings = value

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.head = value

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, state: list[torch.Tensor] | None = None,
                                      inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        # With a state, only the newest token is new to the model.
        if state is not None:
            return {"input_ids": input_ids[:, -1:], "state": state, "use_cache": True}
        if inputs_embeds is not None:
            return {"inputs_embeds": inputs_embeds, "state": None, "use_cache": True}
        return {"input_ids": input_ids, "state": None, "use_cache": True}

    def enable_decode_graphs(self, graphs: bool = True) -> None:
        """Run one-token decode steps over a state through static buffers, replayed as a CUDA graph
        (`graphs=False`: the same buffers, eager). spanlab.models.rwkv6.decode_graph."""
        from spanlab.models.rwkv6.decode_graph import Rwkv6DecodeGraphs

        self.disable_decode_graphs()
        self._spanlab_decode_graphs = Rwkv6DecodeGraphs(self, graphs=graphs)

    def disable_decode_graphs(self) -> None:
        g = self.__dict__.pop("_spanlab_decode_graphs", None)
        if g is not None:
            g.close()

    def _decode_logits(self, input_ids: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.rwkv(input_ids=input_ids, state=state, use_cache=True).last_hidden_state)

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, state: list[torch.Tensor] | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs: Any) -> Rwkv6CausalLMOutput:
        graphs = self.__dict__.get("_spanlab_decode_graphs")
        if (graphs is not None and state is not None and input_ids is not None and input_ids.shape[1] == 1
                and inputs_embeds is None and labels is None and use_cache is not False and not torch.is_grad_enabled()):
            logits, state = graphs.step(input_ids, state)
            return Rwkv6CausalLMOutput(logits=logits, state=state)
        out = self.rwkv(input_ids=input_ids, inputs_embeds=inputs_embeds, state=state, use_cache=use_cache)
        h = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.head(h[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return Rwkv6CausalLMOutput(loss=loss, logits=logits, state=out.state)


__all__ = ["Rwkv6ForCausalLM", "Rwkv6Model", "Rwkv6PreTrainedModel"]
