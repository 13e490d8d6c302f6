"""Gradient-weighted attention rollout (Chefer, Gur & Wolf, "Generic Attention-model Explainability", ICCV 2021).

The LRP-free cousin of TransformerAttribution: per block A_bar = mean over heads of (dy_c/dA * A) clamped
at 0, rolled out as R = R + A_bar R from the first block to the last; the map is R[0, patches].
"""

from __future__ import annotations

import torch

from pipeline.explain._recorded import check_recordable, gradients_per_target, record_forward, residual_rollout
from pipeline.explain._vit import resolve_targets
from pipeline.explain.base import Explainer


class GradientRollout(Explainer):
    """Gradient-weighted attention rollout; one forward and K backward passes for K target classes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        check_recordable(model)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        with torch.enable_grad():
            recorded = record_forward(self.model, images)
            attentions = [record.attn_probs for record in recorded.blocks]
            targets = resolve_targets(recorded.logits.detach(), target)  # (B, K)
            attn_grads = gradients_per_target(recorded.logits, targets, attentions)
        with torch.no_grad():
            weighted = [
                (grads * probs.unsqueeze(1)).clamp(min=0).mean(dim=2) for grads, probs in zip(attn_grads, attentions)
            ]
            rollout = residual_rollout(weighted)  # (B, K, T, T)
        return rollout[:, :, 0, self.model.num_prefix_tokens :]
