"""timm's Beit (BEiT, BEiT v2): learned relative position bias added to the attention scores."""

from __future__ import annotations

from typing import cast

import torch
from timm.models.beit import Attention, Beit, Block
from torch import nn

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._family import AttendFn, Family, Heads, split_qkv
from pipeline.explain._sharded import plain_type


class BeitFamily(Family):
    """Beit blocks (gamma LayerScale) whose scores carry a per-block and/or shared relative position bias."""

    model_type = Beit
    block_differences = "a relative position bias on the attention scores (when configured), gamma LayerScale"
    readouts = ("token", "avg")

    def check(self) -> None:
        for index, block in enumerate(self.blocks):
            if plain_type(block) is not Block or type(block.attn) is not Attention:
                raise UnsupportedModelError(
                    f"Block {index} is {plain_type(block).__name__} with {type(block.attn).__name__}; the explainers "
                    "support Beit's own Block and Attention."
                )

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens and the bias shared by all blocks (None unless the model uses a shared relative position bias)."""
        model = self.model
        patches = model.patch_embed(images)
        tokens = torch.cat((model.cls_token.expand(patches.shape[0], -1, -1), patches), dim=1)
        if model.pos_embed is not None:
            tokens = tokens + model.pos_embed
        shared_bias = model.rel_pos_bias() if model.rel_pos_bias is not None else None  # (H, T, T)
        return model.pos_drop(tokens), shared_bias

    def heads(self, index: int, attn_input: torch.Tensor, positions: torch.Tensor | None) -> Heads:
        attn = cast(nn.Module, self.blocks[index].attn)
        bias = attn._get_rel_pos_bias() if attn.relative_position_bias_table is not None else None  # (1, H, T, T)
        if positions is not None:
            bias = positions.unsqueeze(0) if bias is None else bias + positions
        return Heads(*split_qkv(attn, attn_input), cast(float, attn.scale), bias)

    def run_block(self, index: int, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        block = self.blocks[index]
        if block.gamma_1 is None:
            x = x + block.drop_path1(attend(block.norm1(x)))
            return x + block.drop_path2(block.mlp(block.norm2(x)))
        x = x + block.drop_path1(block.gamma_1 * attend(block.norm1(x)))
        return x + block.drop_path2(block.gamma_2 * block.mlp(block.norm2(x)))
