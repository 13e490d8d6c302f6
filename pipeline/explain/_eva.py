"""timm's Eva (EVA-02, DINOv3, Perception Encoder, RoPE-ViT): rotary position embedding inside attention."""

from __future__ import annotations

from typing import cast

import torch
from timm.layers import AttentionRope, apply_rot_embed_cat
from timm.models.eva import Eva, EvaAttention, EvaBlock, EvaBlockPostNorm
from torch import nn

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._family import AttendFn, Family, Heads, split_qkv
from pipeline.explain._sharded import plain_type


class EvaFamily(Family):
    """Eva blocks (pre- or post-norm, gamma LayerScale, SwiGLU/GluMlp) whose attention rotates q and k with RoPE."""

    model_type = Eva
    block_differences = "rotary position embedding of the queries and keys inside the attention"

    def check(self) -> None:
        for index, block in enumerate(self.blocks):
            if plain_type(block) not in (EvaBlock, EvaBlockPostNorm) or type(block.attn) not in (
                EvaAttention,
                AttentionRope,
            ):
                raise UnsupportedModelError(
                    f"Block {index} is {plain_type(block).__name__} with {type(block.attn).__name__}; the explainers "
                    "support Eva's EvaBlock / EvaBlockPostNorm with EvaAttention or AttentionRope."
                )

    @property
    def readout_first_row(self) -> int:
        return 0 if self.readout_kind == "map" else super().readout_first_row  # Eva's probe reads prefix tokens too

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens and the rotary embedding for this input size (per block when the model mixes RoPE by depth)."""
        model = self.model
        tokens, rope = model._pos_embed(model.patch_embed(images))
        return model.norm_pre(tokens), rope

    def heads(self, index: int, attn_input: torch.Tensor, positions: torch.Tensor | None) -> Heads:
        attn = cast(nn.Module, self.blocks[index].attn)
        q, k, v = split_qkv(attn, attn_input)
        rope = positions[index] if positions is not None and self.model.rope_mixed else positions
        if rope is not None:  # prefix tokens are not rotated
            prefix, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
            q = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :prefix], apply_rot_embed_cat(k[:, :, prefix:], rope, half=half)], dim=2).type_as(v)
        groups = attn.num_heads // k.shape[1]  # grouped-query attention: each key/value head serves `groups` heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return Heads(q, k, v, cast(float, attn.scale))

    def run_block(self, index: int, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        block = self.blocks[index]
        if isinstance(block, EvaBlockPostNorm):  # attention reads the residual stream itself
            x = x + block.drop_path1(block.norm1(attend(x)))
            return x + block.drop_path2(block.norm2(block.mlp(x)))
        attn_out = attend(block.norm1(x))
        x = x + block.drop_path1(attn_out if block.gamma_1 is None else block.gamma_1 * attn_out)
        mlp_out = block.mlp(block.norm2(x))
        return x + block.drop_path2(mlp_out if block.gamma_2 is None else block.gamma_2 * mlp_out)
