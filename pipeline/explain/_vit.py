"""timm's VisionTransformer (vit_*, deit_* incl. distilled, SigLIP, registers, GAP/MAP heads) as a `Family`."""

from __future__ import annotations

from typing import cast

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._family import AttendFn, Family, Heads, split_qkv
from pipeline.explain._sharded import plain_type


class ViTFamily(Family):
    """Pre-norm `Block`s with the standard `Attention` (optional q/k norm, scale norm, gate, LayerScale)."""

    model_type = VisionTransformer

    def check(self) -> None:
        for index, block in enumerate(self.blocks):
            attn = getattr(block, "attn", None)
            if plain_type(block) is not Block or type(attn) is not Attention:
                raise UnsupportedModelError(
                    f"Block {index} is {plain_type(block).__name__} with {type(attn).__name__}; the explainers "
                    "support timm's standard pre-norm Block with its standard Attention in a VisionTransformer."
                )

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        model = self.model
        tokens = model._pos_embed(model.patch_embed(images))
        return model.norm_pre(model.patch_drop(tokens)), None

    def heads(self, index: int, attn_input: torch.Tensor, positions: None) -> Heads:
        attn = cast(nn.Module, self.blocks[index].attn)
        return Heads(*split_qkv(attn, attn_input), cast(float, attn.scale))

    def run_block(self, index: int, x: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        block = self.blocks[index]
        x = x + block.drop_path1(block.ls1(attend(block.norm1(x))))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
