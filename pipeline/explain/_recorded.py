"""A forward pass that keeps every block's intermediate tensors in the autograd graph.

The gradient-based baselines (Chefer et al.'s LRP attribution and gradient-weighted rollout) need the
plain, undetached gradient of a class logit with respect to each block's attention, and LRP also
needs the inputs of every linear layer and residual addition. Recording them here once keeps both
methods short and lets K target classes share one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer

from pipeline.explain._vit import attention_scores, embed, merge_heads, split_heads


@dataclass
class BlockRecord:
    """One block's forward, named after the tensors of x -> x + attn(norm1(x)) -> mid + mlp(norm2(mid))."""

    block_input: torch.Tensor  # (B, T, D)
    normed1: torch.Tensor  # (B, T, D), input of qkv
    q: torch.Tensor  # (B, H, T, d)
    k: torch.Tensor
    v: torch.Tensor
    attn_probs: torch.Tensor  # (B, H, T, T), post-softmax
    merged_heads: torch.Tensor  # (B, T, H*d), input of proj
    attn_branch: torch.Tensor  # (B, T, D), added to block_input
    mid: torch.Tensor  # (B, T, D) = block_input + attn_branch
    normed2: torch.Tensor  # (B, T, D), input of fc1
    hidden: torch.Tensor  # (B, T, hidden), input of fc2
    mlp_branch: torch.Tensor  # (B, T, D), added to mid


@dataclass
class RecordedForward:
    blocks: list[BlockRecord]
    final_tokens: torch.Tensor  # (B, T, D), after the final norm
    logits: torch.Tensor  # (B, C)


def check_recordable(model: VisionTransformer) -> None:
    """The recorded forward spells out timm's plain Mlp; anything else gets a clear error."""
    for index, block in enumerate(model.blocks):
        if type(block.mlp) is not Mlp:
            raise ValueError(
                f"Block {index} uses {type(block.mlp).__name__}; this method supports timm's standard Mlp only."
            )


def record_forward(model: VisionTransformer, images: torch.Tensor) -> RecordedForward:
    """Run the model with grad enabled, keeping every block's tensors (see BlockRecord)."""
    records = []
    x = embed(model, images)
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        normed1 = block.norm1(x)
        q, k, v = split_heads(attn, normed1)
        attn_probs = attention_scores(attn, q, k).softmax(dim=-1)
        merged_heads = merge_heads(attn, attn_probs @ v, normed1)
        attn_branch = block.drop_path1(block.ls1(attn.proj_drop(attn.proj(merged_heads))))
        mid = x + attn_branch
        normed2 = block.norm2(mid)
        hidden = mlp.norm(mlp.drop1(mlp.act(mlp.fc1(normed2))))
        mlp_branch = block.drop_path2(block.ls2(mlp.drop2(mlp.fc2(hidden))))
        records.append(
            BlockRecord(x, normed1, q, k, v, attn_probs, merged_heads, attn_branch, mid, normed2, hidden, mlp_branch)
        )
        x = mid + mlp_branch
    final_tokens = model.norm(x)
    logits = model.forward_head(final_tokens)
    return RecordedForward(records, final_tokens, logits)


def gradients_per_target(
    logits: torch.Tensor, targets: torch.Tensor, tensors: list[torch.Tensor]
) -> list[torch.Tensor]:
    """d logit[b, targets[b, k]] / d tensor for each of `tensors`, as (B, K, *tensor.shape[1:]).

    One backward per target column (K is small: the classes present in an image); never touches `.grad`.
    """
    per_target = []
    for column in range(targets.shape[1]):
        selected = logits.gather(1, targets[:, column : column + 1]).sum()
        per_target.append(torch.autograd.grad(selected, tensors, retain_graph=column + 1 < targets.shape[1]))
    return [torch.stack(grads, dim=1) for grads in zip(*per_target)]


def residual_rollout(weighted_attentions: list[torch.Tensor]) -> torch.Tensor:
    """R = I, then R = R + A_bar R for each block's (B, K, T, T) weights from first to last (Chefer et al.)."""
    first = weighted_attentions[0]
    tokens = first.shape[-1]
    rollout = torch.eye(tokens, device=first.device, dtype=first.dtype).expand_as(first)
    for weighted in weighted_attentions:
        rollout = rollout + weighted @ rollout
    return rollout
