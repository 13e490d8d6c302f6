"""What the explainers need from a timm VisionTransformer, in one place.

The explainers do not hook or patch the model. They run its own sub-modules (patch embedding,
norms, qkv/proj linears, MLPs, head) in a forward written out here, so each method can keep the
attention quantities it needs. Nothing is registered on the model and nothing has to be restored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

AttentionFn = Callable[[Attention, torch.Tensor], torch.Tensor]


def check_explainable(model: nn.Module) -> None:
    """Raise a clear error unless `model` is a timm ViT whose prediction is read from a class token."""
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"Explainers need a timm VisionTransformer (vit_*, deit_*), got {type(model).__name__}. "
            "CNNs and other architectures have no self-attention to explain."
        )
    if model.cls_token is None:
        raise ValueError(
            f"{type(model).__name__} has no class token (class_token=False): AG-CAM, rollout and LRP explain the "
            "class token's attention row. Use a ViT built with class_token=True and global_pool='token'."
        )
    if model.attn_pool is not None or model.global_pool != "token":
        raise ValueError(
            f"The model pools its features with global_pool={model.global_pool!r}; the explainers need the "
            "prediction to be read from the class token (global_pool='token')."
        )
    for index, block in enumerate(model.blocks):
        if type(block) is not Block or type(block.attn) is not Attention:
            raise ValueError(
                f"Block {index} is {type(block).__name__} with {type(block.attn).__name__}; the explainers support "
                "timm's standard pre-norm Block with its standard Attention (vit_*, deit_* models)."
            )


def check_images(model: VisionTransformer, images: torch.Tensor) -> None:
    """Raise a clear error for an input the model cannot take."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    channels = model.patch_embed.proj.in_channels
    if images.shape[1] != channels:
        raise ValueError(f"images have {images.shape[1]} channels, the model expects {channels}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a normalized float tensor, got dtype {images.dtype}")


def patch_grid(model: VisionTransformer, images: torch.Tensor) -> tuple[int, int]:
    """The (rows, columns) of patch tokens the model makes from `images` (non-square inputs included)."""
    return tuple(model.patch_embed.dynamic_feat_size(tuple(images.shape[-2:])))


def embed(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Tokens entering the first block: (B, T, D), prefix tokens first."""
    tokens = model._pos_embed(model.patch_embed(images))
    return model.norm_pre(model.patch_drop(tokens))


def split_heads(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of `x`, each (B, heads, T, head_dim), after timm's optional q/k norms."""
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attention_scores(attn: Attention, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores S = (Q K^T) * d^-0.5, the product taken first as in the reference code."""
    return (q @ k.transpose(-2, -1)) * attn.scale


def merge_heads(attn: Attention, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Merge heads of `context` (B, heads, N, head_dim) into the input of timm's output projection.

    `x` is the attention input for those N tokens (timm's optional output gate reads it).
    """
    merged = attn.norm(context.transpose(1, 2).flatten(2))  # (B, N, heads * head_dim)
    gate = getattr(attn, "gate", None)
    return merged if gate is None else merged * gate(x).sigmoid()


def project_heads(attn: Attention, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The attention module's output for `context` (B, heads, N, head_dim): merge heads, then project."""
    return attn.proj_drop(attn.proj(merge_heads(attn, context, x)))


def fused_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """timm's own attention output for `x`, with whichever kernel the module is set to use."""
    q, k, v = split_heads(attn, x)
    if attn.fused_attn:
        context = F.scaled_dot_product_attention(q, k, v)
    else:
        context = attention_scores(attn, q, k).softmax(dim=-1) @ v
    return project_heads(attn, context, x)


def run_block(block: Block, x: torch.Tensor, attend: AttentionFn) -> torch.Tensor:
    """timm's pre-norm Block on `x`, with `attend(attn_module, normed_x)` standing in for its attention."""
    x = x + block.drop_path1(block.ls1(attend(block.attn, block.norm1(x))))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def logits_from_prefix(model: VisionTransformer, prefix_tokens: torch.Tensor) -> torch.Tensor:
    """Logits from the last block's prefix tokens (B, num_prefix_tokens, D): final norm, then the head.

    With token pooling the head reads only prefix tokens (the class token, plus the distillation token
    for distilled DeiT), so the patch tokens need not be carried.
    """
    return model.forward_head(model.norm(prefix_tokens))


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
