"""A tiny random explained checkpoint for fast tests: 4 shape classes, 32 px, like tests/configs/tiny.yaml."""

from pathlib import Path

import timm
import torch

from pipeline.explained import ExplainedCard, save_explained
from pipeline.inputs import InputConfig

TINY_KWARGS = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
CLASS_NAMES = ["circle", "square", "triangle", "star"]


def tiny_vit() -> torch.nn.Module:
    """The seeded random timm ViT the file holds."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, **TINY_KWARGS).eval()


def tiny_explained_file(path: Path) -> Path:
    """`tiny_vit()` written as an explained checkpoint at `path`."""
    card = ExplainedCard(
        "vit_tiny_patch16_224",
        4,
        InputConfig((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        CLASS_NAMES,
        model_kwargs=TINY_KWARGS,
    )
    return save_explained(path, tiny_vit(), card)
