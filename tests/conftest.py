"""Shared fixtures: tiny timm ViTs and the reference data; W&B always offline."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def close_wandb_run():
    """A W&B run left open would be reused by the next WandbLogger in this process."""
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()


@pytest.fixture(scope="session")
def reference() -> dict:
    """The official-code reference arrays (see tests/data/README.md)."""
    with np.load(DATA_DIR / "public_config.npz", allow_pickle=False) as npz:
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
