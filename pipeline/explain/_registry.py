"""Which `Family` runs a model, and why the architectures without one are refused."""

from __future__ import annotations

from torch import nn

from pipeline.explain._beit import BeitFamily
from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._eva import EvaFamily
from pipeline.explain._family import Family
from pipeline.explain._sharded import plain_type, refuse_wrapper, unwrapped
from pipeline.explain._vit import ViTFamily

FAMILIES: tuple[type[Family], ...] = (ViTFamily, EvaFamily, BeitFamily)

# Class name -> why the methods (one softmax attention row per token over all patches) do not apply.
REFUSED = {
    "SwinTransformer": "Swin has no global attention between tokens: each block attends inside local (shifted) "
    "windows and the stages merge patches, so no token attends over all patches.",
    "SwinTransformerV2": "Swin V2 has no global attention between tokens: each block attends inside local "
    "(shifted) windows and the stages merge patches, so no token attends over all patches.",
    "SwinTransformerV2Cr": "Swin V2 has no global attention between tokens: each block attends inside local "
    "(shifted) windows and the stages merge patches, so no token attends over all patches.",
    "Xcit": "XCiT's cross-covariance attention attends between feature channels, not between tokens (its attention "
    "matrix is channels x channels); only its last class-attention layers see the patches.",
    "Cait": "CaiT's talking-heads attention mixes the heads after the softmax, so no head's attention is softmax(S), "
    "and its class token only appears in the final class-attention blocks.",
}


def family_of(model: nn.Module) -> Family:
    """The family that runs `model` (inside wrappers that keep its parameters whole); a clear error for anything else.

    Its `model` is the unwrapped model.
    """
    model = unwrapped(model)
    name = plain_type(model).__name__
    if name in REFUSED:
        raise UnsupportedModelError(f"{name} cannot be explained: {REFUSED[name]}")
    for index, block in enumerate(getattr(model, "blocks", ())):
        refuse_wrapper(block, f"{name} block {index}")
    for family in FAMILIES:
        if isinstance(model, family.model_type):
            return family(model)
    supported = ", ".join(family.model_type.__name__ for family in FAMILIES)
    raise UnsupportedModelError(
        f"Explainers need a timm VisionTransformer, Eva or Beit ({supported}: vit_*, deit_*, eva*, beit*), got "
        f"{name}. CNNs and other architectures have no self-attention over patch tokens to explain."
    )


def check_explainable(model: nn.Module) -> None:
    """Raise a clear error unless AG-CAM, rollout and gradient rollout can explain `model`."""
    family_of(model)
