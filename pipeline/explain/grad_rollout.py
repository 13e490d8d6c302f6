"""Gradient-weighted attention rollout (Chefer, Gur & Wolf, "Generic Attention-model Explainability", ICCV 2021).

The LRP-free cousin of TransformerAttribution: per block A_bar = mean over heads of (dy_c/dA * A) clamped
at 0, rolled out as R = R + A_bar R from the first block to the last; the map is R[0, patches], or for
pooled readouts the rows of R mixed with the readout's weights (see `AttentionRollout`).
"""

from __future__ import annotations

import torch

from pipeline.explain._family import resolve_targets
from pipeline.explain._recorded import gradients_per_target, record_attention, residual_rollout
from pipeline.explain.base import Explainer, read_rows


class GradientRollout(Explainer):
    """Gradient-weighted attention rollout; one forward and K backward passes for K target classes."""

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        with torch.enable_grad():
            recorded = record_attention(self.family, images)
            attentions, readout = recorded.attn_probs, recorded.readout
            targets = resolve_targets(readout.logits.detach(), target)  # (B, K)
            attn_grads = gradients_per_target(readout.logits, targets, attentions)
        with torch.no_grad():
            weighted = [
                (grads * probs.unsqueeze(1)).clamp(min=0).mean(dim=2) for grads, probs in zip(attn_grads, attentions)
            ]
            rollout = residual_rollout(weighted)  # (B, K, T, T)
        return read_rows(rollout, readout.weights, self.family.num_prefix_tokens)
