"""Attention Rollout (Abnar & Zuidema, 2020): class-agnostic flow of attention through the blocks."""

from __future__ import annotations

from typing import Literal

import torch

from pipeline.explain._family import Heads, ReadOut
from pipeline.explain._forward import ForwardRecorder
from pipeline.explain.base import ReplayingExplainer, num_targets, read_rows

HeadFusion = Literal["mean", "max", "min"]
FUSE_HEADS = {  # (B, H, T, T) -> (B, T, T)
    "mean": lambda probs: probs.mean(dim=1),
    "max": lambda probs: probs.amax(dim=1),
    "min": lambda probs: probs.amin(dim=1),
}


class AttentionRollout(ReplayingExplainer):
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

    def recorder(self) -> ForwardRecorder:
        return FusedAttentionRecorder(self.head_fusion)

    def _replay(self, recorder: ForwardRecorder, target: torch.Tensor | None) -> torch.Tensor:
        assert isinstance(recorder, FusedAttentionRecorder)
        fused_attentions = recorder.fused_attentions
        with torch.no_grad():
            tokens = fused_attentions[0].shape[-1]
            identity = torch.eye(tokens, device=fused_attentions[0].device, dtype=fused_attentions[0].dtype)
            rollout = identity.expand_as(fused_attentions[0])
            for fused in fused_attentions:
                flow = (self._discard_smallest(fused) + identity) / 2
                rollout = (flow / flow.sum(dim=-1, keepdim=True)) @ rollout
            patch_map = read_rows(rollout, recorder.weights, self.family.num_prefix_tokens)  # (B, P)
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


class FusedAttentionRecorder(ForwardRecorder):
    """Each block's attention probabilities with the heads fused (B, T, T), and the readout's weights (B, T).

    Alone it runs the attention from the probabilities it computed anyway; sharing a forward, it takes the one the
    first recorder (or the model) runs.
    """

    def __init__(self, head_fusion: HeadFusion) -> None:
        self.head_fusion = head_fusion
        self.fused_attentions: list[torch.Tensor] = []

    def attend(self, index: int, heads: Heads, attn_input: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            probs = heads.scores().softmax(dim=-1)  # (B, H, T, T)
            self.fused_attentions.append(FUSE_HEADS[self.head_fusion](probs))
            return probs @ heads.v

    def read(self, tokens: torch.Tensor, readout: ReadOut) -> None:
        self.weights = readout.weights
