"""Explainers for timm Vision Transformers: raw (B, gh, gw) patch maps for a target class.

from pipeline.explain import AGCAM
maps = AGCAM(model)(images)                 # predicted class
maps = AGCAM(model)(images, target=labels)  # (B,) -> (B, gh, gw); (B, K) -> (B, K, gh, gw)

Supported: timm VisionTransformer (vit_*, deit_*, SigLIP, GAP and register variants), Eva (EVA-02, DINOv3,
Perception Encoder, RoPE-ViT) and Beit, with the model's own readout (class token, average pooling or an
attention-pool probe). `pipeline/explain/_family.py` is the seam to timm.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._registry import check_explainable
from pipeline.explain.agcam import AGCAM
from pipeline.explain.base import Explainer
from pipeline.explain.grad_rollout import GradientRollout
from pipeline.explain.lrp import TransformerAttribution
from pipeline.explain.rollout import AttentionRollout

METHODS: dict[str, type[Explainer]] = {
    "agcam": AGCAM,
    "rollout": AttentionRollout,
    "lrp": TransformerAttribution,
    "grad_rollout": GradientRollout,
}


def check_methods(methods: Sequence[str], name: str = "methods") -> list[str]:
    """`methods` as a list: the one check of explanation method names, with `name` (the option) in its error."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        problem = f"Unknown explanation method(s) {unknown}" if unknown else "No explanation method"
        raise ValueError(f"{name}: {problem}; choose from {sorted(METHODS)}")
    return methods


def build_explainer(method: str, model: nn.Module) -> Explainer:
    """The explainer registered under `method` (one of METHODS) for `model`."""
    check_methods([method], name="method")
    return METHODS[method](model)


__all__ = [
    "AGCAM",
    "METHODS",
    "AttentionRollout",
    "Explainer",
    "GradientRollout",
    "TransformerAttribution",
    "UnsupportedModelError",
    "build_explainer",
    "check_methods",
    "check_explainable",
]
