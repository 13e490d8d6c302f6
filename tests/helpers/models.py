"""Tiny timm ViTs for fast tests, and the reference ViT of tests/data/public_config.npz with its weights."""

import json
from pathlib import Path

import numpy as np
import timm
import torch

DATA_DIR = Path(__file__).parents[1] / "data"


def load_npz(name: str) -> dict:
    """Every array of a reference file in tests/data (see its README), loaded without pickle."""
    with np.load(DATA_DIR / name, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def build_reference_model(reference: dict, fused_attn: bool = False) -> torch.nn.Module:
    """The reference ViT (dim 192, depth 4, 3 heads, 10 classes) with the reference weights, in eval mode."""
    kwargs = json.loads(str(reference["timm_constructor_json"]))
    model = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
    state = {k[len("weights/") :]: torch.from_numpy(v) for k, v in reference.items() if k.startswith("weights/")}
    model.load_state_dict(state, strict=True)
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    return model


def tiny_vit(**overrides) -> torch.nn.Module:
    """A tiny random ViT (32 px, patch 8, dim 64, depth 2) for fast tests; kwargs override the constructor."""
    kwargs = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
