"""Pieces the gradient-based baselines share: plain attention gradients per target class, and residual rollout.

Chefer et al.'s LRP attribution and gradient-weighted rollout need the plain, undetached gradient of a class
logit with respect to each block's post-softmax attention. Recording the attention in the autograd graph once
lets K target classes share one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.explain._family import Family, ReadOut


@dataclass
class RecordedAttention:
    attn_probs: list[torch.Tensor]  # per block (B, H, T, T), post-softmax, in the autograd graph
    readout: ReadOut  # logits (B, C) in the graph, readout weights (B, T)


def record_attention(family: Family, images: torch.Tensor) -> RecordedAttention:
    """Run the model with grad enabled and explicit attention, keeping every block's attention probabilities."""
    attn_probs = []
    tokens, positions = family.embed(images)

    def attend_and_record(index: int, x: torch.Tensor) -> torch.Tensor:
        heads = family.heads(index, x, positions)
        attn_probs.append(heads.scores().softmax(dim=-1))
        return family.attention_output(index, attn_probs[-1] @ heads.v, x)

    tokens = family.run_blocks(tokens, attend_and_record)
    return RecordedAttention(attn_probs, family.read_out(tokens))


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
