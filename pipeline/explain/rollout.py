"""Attention Rollout (Abnar & Zuidema, 2020): class-agnostic flow of attention through the blocks."""

from __future__ import annotations

from typing import Literal

import torch

from pipeline.explain.base import Explainer, num_targets, read_rows

HeadFusion = Literal["mean", "max", "min"]
FUSE_HEADS = {  # (B, H, T, T) -> (B, T, T)
    "mean": lambda probs: probs.mean(dim=1),
    "max": lambda probs: probs.amax(dim=1),
    "min": lambda probs: probs.amin(dim=1),
}


class AttentionRollout(Explainer):
    """R = A_hat_L ... A_hat_1 with A_hat = rownorm((fuse_heads(A) + I) / 2), read at the readout's rows.

    The map is R[0, patches] for class-token models; for pooled readouts the rows of R are mixed with the
    readout's own weights (uniform over the averaged tokens, the attention-pool probe's attention for 'map').

    Args:
        model: a timm ViT, Eva or Beit.
        head_fusion: how the heads of a block are combined: "mean", "max" or "min".
        discard_ratio: fraction of each fused attention matrix's smallest entries set to zero
            (never the class-token column) before adding the identity.
    """

    def __init__(self, model: torch.nn.Module, head_fusion: HeadFusion = "mean", discard_ratio: float = 0.0) -> None:
        super().__init__(model)
        if head_fusion not in FUSE_HEADS:
            raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        family = self.family
        fused_attentions = []  # per block (B, T, T)

        with torch.no_grad():
            tokens, positions = family.embed(images)

            def attend_and_record(index: int, x: torch.Tensor) -> torch.Tensor:
                heads = family.heads(index, x, positions)
                probs = heads.scores().softmax(dim=-1)  # (B, H, T, T)
                fused_attentions.append(FUSE_HEADS[self.head_fusion](probs))
                return family.attention_output(index, probs @ heads.v, x)

            tokens = family.run_blocks(tokens, attend_and_record)
            weights = family.read_out(tokens).weights  # (B, T)
            identity = torch.eye(tokens.shape[1], device=tokens.device, dtype=tokens.dtype)
            rollout = identity.expand_as(fused_attentions[0])
            for fused in fused_attentions:
                flow = (self._discard_smallest(fused) + identity) / 2
                rollout = (flow / flow.sum(dim=-1, keepdim=True)) @ rollout
            patch_map = read_rows(rollout, weights, family.num_prefix_tokens)  # (B, P)
        return patch_map.unsqueeze(1).expand(-1, num_targets(target), -1)

    def _discard_smallest(self, fused: torch.Tensor) -> torch.Tensor:
        """Zero the `discard_ratio` smallest entries of each (T, T) matrix, sparing the class-token column."""
        count = int(fused[0].numel() * self.discard_ratio)
        if count == 0:
            return fused
        candidates = fused.clone()
        if self.family.has_class_token:
            candidates[:, :, 0] = float("inf")  # the class-token column is never discarded
        smallest = candidates.flatten(1).topk(count, dim=-1, largest=False).indices
        return fused.flatten(1).scatter(1, smallest, 0.0).view_as(fused)
