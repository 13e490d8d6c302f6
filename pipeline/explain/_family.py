"""The seam between the explainers and timm: what a method needs from one model family, in one place.

The explainers do not hook or patch the model. They run its own sub-modules (patch embedding, norms, qkv and
output projections, MLPs, readout head) in a forward written out by a `Family`, so each method can keep the
attention quantities it needs. Nothing is registered on the model and nothing has to be restored.

A family says four things: how images become tokens (`embed`), what a block's attention computes for given
inputs (`heads`: queries and keys after their norms and rotary embedding, values, and the additive bias, so
that S = q k^T * scale + bias exactly as the model computes it), how a block runs with an attention of our
choosing in place of its own (`run_block`), and where the prediction is read from (`read_out`). Adding a family
is one short file (see `_eva.py`) and one line in `_registry.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from timm.layers import AttentionPoolLatent
from torch import nn

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._sharded import ParameterGather

AttendFn = Callable[[torch.Tensor], torch.Tensor]  # attention input (B, N, D) -> attention module output (B, N, D)
BlockAttendFn = Callable[[int, torch.Tensor], torch.Tensor]  # (block index, attention input) -> attention output
ProbeAttendFn = Callable[["Heads"], torch.Tensor]  # the probe's heads -> its context (B, H, 1, d)

POOLED_READOUTS = ("avg", "max", "avgmax", "map")


@dataclass
class Heads:
    """One attention layer's inputs to softmax(S) V, split into heads."""

    q: torch.Tensor  # (B, H, N, d) after q-norm and rotary embedding
    k: torch.Tensor  # (B, H, T, d) after k-norm and rotary embedding
    v: torch.Tensor  # (B, H, T, d)
    scale: float
    bias: torch.Tensor | None = None  # (1, H, N, T): relative position bias added to the scores

    def scores(
        self, rows: slice = slice(None), scale_queries: bool = False, columns: slice = slice(None)
    ) -> torch.Tensor:
        """Pre-softmax scores S = (Q K^T) * d^-0.5 + bias of the query `rows` and key `columns`: (B, H, R, C).

        By default the product is scaled, as in the authors' reference code; `scale_queries` scales Q first, as
        timm does, which saves one pass over the (R, C) scores.
        """
        queries, keys = self.q[:, :, rows], self.k[:, :, columns].transpose(-2, -1)
        scores = (queries * self.scale) @ keys if scale_queries else (queries @ keys) * self.scale
        return scores if self.bias is None else scores + self.bias[:, :, rows, columns]

    def context(self, fused: bool, dropout_p: float = 0.0) -> torch.Tensor:
        """softmax(S) V: (B, H, N, d), with PyTorch's fused kernel when the model's module uses it."""
        if fused:
            return F.scaled_dot_product_attention(self.q, self.k, self.v, attn_mask=self.bias, dropout_p=dropout_p)
        probs = self.scores().softmax(dim=-1)
        return (F.dropout(probs, dropout_p) if dropout_p else probs) @ self.v


@dataclass
class ReadOut:
    """The prediction read from the last block's tokens, and how much each token contributed to it."""

    logits: torch.Tensor  # (B, C)
    weights: torch.Tensor  # (B, T): each token's share of the pooled features (one-hot for token readout)


def split_qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of `x` (B, N, D), each (B, heads, N, head_dim), after the optional q/k norms.

    Covers timm's fused qkv linear (with its own bias, or BEiT/EVA's separate q/v biases and zero k bias) and
    separate q/k/v projections (grouped-query attention keeps fewer key/value heads here).
    """
    batch, tokens, _ = x.shape
    if getattr(attn, "qkv", None) is not None:
        q_bias = getattr(attn, "q_bias", None)
        if q_bias is None:
            qkv = attn.qkv(x)
        else:
            k_bias, v_bias = cast(torch.Tensor, attn.k_bias), cast(torch.Tensor, attn.v_bias)
            bias = torch.cat((q_bias, k_bias, v_bias))
            weight = cast(torch.Tensor, attn.qkv.weight)
            qkv = attn.qkv(x) + bias if attn.qkv_bias_separate else F.linear(x, weight, bias)
        qkv = qkv.reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
    else:
        kv_heads = getattr(attn, "num_kv_heads", attn.num_heads)
        q = attn.q_proj(x).reshape(batch, tokens, attn.num_heads, -1).transpose(1, 2)
        k = attn.k_proj(x).reshape(batch, tokens, kv_heads, -1).transpose(1, 2)
        v = attn.v_proj(x).reshape(batch, tokens, kv_heads, -1).transpose(1, 2)
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    return (q if q_norm is None else q_norm(q)), (k if k_norm is None else k_norm(k)), v


class Family(ABC):
    """How the explainers run one timm model family with an attention of their choosing.

    Subclasses implement `embed`, `heads` and `run_block`, and `check` what they do not support; the readout
    (class token, average, max, attention-pool probe) is shared and follows the model's own `global_pool`.
    """

    model_type: ClassVar[type[nn.Module]]  # the timm model class this family runs
    readouts: ClassVar[tuple[str, ...]] = ("token", *POOLED_READOUTS)
    # How this family's blocks differ from timm's ViT Block, in words ("" for none): refusals quote it.
    block_differences: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.gather = ParameterGather(model, self.blocks)  # FSDP2: whole parameters one block at a time
        self.check()
        self.check_readout()

    # ---- what a family implements -------------------------------------------------------------------------

    @abstractmethod
    def check(self) -> None:
        """Raise UnsupportedModelError naming the block or option this family's forward does not reproduce."""

    @abstractmethod
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Tokens entering the first block (B, T, D), prefix tokens first, and the positions `heads` needs."""

    @abstractmethod
    def heads(self, index: int, attn_input: torch.Tensor, positions: Any) -> Heads:
        """Block `index`'s attention of `attn_input` (B, T, D), with rotary embedding and bias as the model applies."""

    @abstractmethod
    def run_block(self, index: int, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        """Block `index` on `x` (B, N, D), with `attend(attn_input)` standing in for its attention module."""

    # ---- shared ---------------------------------------------------------------------------------------------

    def run_blocks(self, tokens: torch.Tensor, attend: BlockAttendFn) -> torch.Tensor:
        """Every block in turn on `tokens` (B, N, D), with `attend(index, attn_input)` as block `index`'s attention.

        Under FSDP2 each block's parameters are whole only for its own step (see `_sharded.py`); the root's after.
        """
        for index in range(len(self.blocks)):
            self.gather.switch(self.gather.owner(index))
            tokens = self.run_block(index, tokens, partial(attend, index))
        self.gather.switch(self.gather.root)
        return tokens

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return cast(Sequence[nn.Module], self.model.blocks)  # a ModuleList

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens before the patches."""
        return cast(int, self.model.num_prefix_tokens)

    @property
    def has_class_token(self) -> bool:
        return getattr(self.model, "cls_token", None) is not None

    @property
    def readout_kind(self) -> str:
        """The readout: "token" (the class token), or pooled: "avg", "max", "avgmax", "map" (attention-pool probe)."""
        return cast(str, self.model.global_pool)

    @property
    def readout_first_row(self) -> int:
        """First token the readout reads (the probe's too): pooling skips prefix tokens unless the model says not to."""
        if self.readout_kind == "token":
            return 0
        return 0 if getattr(self.model, "pool_include_prefix", False) else self.num_prefix_tokens

    @property
    def readout_rows(self) -> slice:
        """The tokens whose final state the prediction reads: the class token, or those pooled."""
        return slice(0, 1) if self.readout_kind == "token" else slice(self.readout_first_row, None)

    def fused(self, index: int) -> bool:
        """Whether block `index` uses PyTorch's fused attention kernel (left as the model has it)."""
        return bool(getattr(self.blocks[index].attn, "fused_attn", False))

    def attention_dropout(self, index: int) -> float:
        """Block `index`'s attention dropout probability as its module would apply it now (0 in eval mode)."""
        attn = self.blocks[index].attn
        return cast(float, attn.attn_drop.p) if attn.training else 0.0

    def attention_output(self, index: int, context: torch.Tensor, attn_input: torch.Tensor) -> torch.Tensor:
        """Block `index`'s attention output for `context` (B, H, N, d): merge heads, scale-norm, gate, project.

        `attn_input` (B, N, D) is the attention's input for those N tokens (timm's optional output gate reads it).
        """
        attn = self.blocks[index].attn
        merged = context.transpose(1, 2).flatten(2)  # (B, N, H * d)
        norm, gate = getattr(attn, "norm", None), getattr(attn, "gate", None)
        merged = merged if norm is None else norm(merged)
        merged = merged if gate is None else merged * gate(attn_input).sigmoid()
        return attn.proj_drop(attn.proj(merged))

    def check_readout(self) -> None:
        """Raise UnsupportedModelError unless the model's `global_pool` is one whose readout `read_out` reproduces."""
        kind, name = self.readout_kind, type(self.model).__name__
        if kind not in self.readouts:
            raise UnsupportedModelError(
                f"{name} has global_pool={kind!r}; the explainers follow the model's readout and support "
                f"global_pool in {self.readouts} (with '' the model outputs one vector per token, no single "
                "prediction to explain)."
            )
        probe = getattr(self.model, "attn_pool", None)
        if kind == "map" and (not isinstance(probe, AttentionPoolLatent) or probe.latent_len != 1):
            raise UnsupportedModelError(
                f"{name} pools with {type(probe).__name__}; the 'map' readout is supported for timm's "
                "AttentionPoolLatent with one latent query."
            )
        if kind != "map" and probe is not None:
            raise UnsupportedModelError(
                f"{name} has an attention pool ({type(probe).__name__}) with global_pool={kind!r}."
            )

    def readout_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The part of the last block's tokens (B, T, D) the readout needs: prefix tokens alone for token readout."""
        return tokens[:, : self.num_prefix_tokens] if self.readout_kind == "token" else tokens

    def read_out(self, tokens: torch.Tensor, probe_attend: ProbeAttendFn | None = None) -> ReadOut:
        """Logits from the last block's tokens (B, T, D), the final norm included, and each token's share of them.

        For token readout `tokens` may hold the prefix tokens only (see `readout_tokens`). For the 'map' readout,
        `probe_attend(heads)` may stand in for the probe's softmax(S) V (to record or replace its attention).
        """
        model, kind = self.model, self.readout_kind
        batch, count, _ = tokens.shape
        weights = tokens.new_zeros(batch, count)
        if kind == "token":
            weights[:, 0] = 1.0
            return ReadOut(model.forward_head(model.norm(tokens[:, : self.num_prefix_tokens])), weights)
        normed = model.norm(tokens)
        first = self.readout_first_row
        if kind == "map":
            pooled, probe_probs = self._probe(normed[:, first:], probe_attend)
            weights[:, first:] = probe_probs.detach().mean(dim=1)[:, 0]  # (B, N), mean over heads
            return ReadOut(model.head(model.head_drop(model.fc_norm(pooled))), weights)
        with torch.no_grad():
            pooled_tokens = normed[:, first:]
            weights[:, first:] = 1.0 / pooled_tokens.shape[1]
            if kind in ("max", "avgmax"):  # max takes each channel from one token: its share is its fraction
                argmax = pooled_tokens.argmax(dim=1)  # (B, D)
                maxed = F.one_hot(argmax, pooled_tokens.shape[1]).to(weights.dtype).mean(dim=1)  # (B, N)
                weights[:, first:] = maxed if kind == "max" else (weights[:, first:] + maxed) / 2
        return ReadOut(model.forward_head(normed), weights)

    def _probe(self, x: torch.Tensor, attend: ProbeAttendFn | None) -> tuple[torch.Tensor, torch.Tensor]:
        """timm's AttentionPoolLatent on `x` (B, N, D): pooled features (B, D) and its attention (B, H, 1, N)."""
        probe = cast(AttentionPoolLatent, self.model.attn_pool)
        batch, tokens, channels = x.shape
        if probe.pos_embed is not None:
            x = x + probe.pos_embed.unsqueeze(0).to(x.dtype)
        q = probe.q(probe.latent.expand(batch, -1, -1)).reshape(batch, 1, probe.num_heads, probe.head_dim)
        kv = probe.kv(x).reshape(batch, tokens, 2, probe.num_heads, probe.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        heads = Heads(probe.q_norm(q.transpose(1, 2)), probe.k_norm(k), v, probe.scale)
        probs = heads.scores().softmax(dim=-1)  # (B, H, 1, N)
        context = probs @ v if attend is None else attend(heads)
        pooled = probe.proj_drop(probe.proj(context.transpose(1, 2).reshape(batch, 1, channels)))
        if probe.mlp is not None:
            pooled = pooled + probe.mlp(probe.norm(pooled))
        return (pooled[:, 0] if probe.pool == "token" else pooled.mean(dim=1)), probs


def check_images(model: nn.Module, images: torch.Tensor) -> None:
    """Raise a clear error for an input the model cannot take."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    channels = model.patch_embed.proj.in_channels
    if images.shape[1] != channels:
        raise ValueError(f"images have {images.shape[1]} channels, the model expects {channels}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a normalized float tensor, got dtype {images.dtype}")


def patch_grid(model: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """The (rows, columns) of patch tokens the model makes from `images` (non-square and dynamic sizes included)."""
    return tuple(model.patch_embed.dynamic_feat_size(tuple(images.shape[-2:])))


def resolve_targets(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Targets as (B, K) class indices: the predicted class when `target` is None."""
    batch, num_classes = logits.shape
    if target is None:
        return logits.argmax(dim=-1, keepdim=True)
    target = torch.as_tensor(target, device=logits.device)
    if target.dtype not in (torch.int64, torch.int32) or target.ndim not in (1, 2) or target.shape[0] != batch:
        raise ValueError(
            f"target must be an integer tensor of shape ({batch},) or ({batch}, K), "
            f"got {tuple(target.shape)} {target.dtype}"
        )
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target classes must lie in [0, {num_classes - 1}], got {target.tolist()}")
    return target.long().reshape(batch, -1)
