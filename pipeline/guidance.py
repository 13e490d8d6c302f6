"""Explanation-guided training: a loss on the explanation's relevance that falls outside the labelled objects.

"Right for the right reasons" (Ross et al. 2017). Per image, the loss is the share of the explanation of the label
that lies outside the label's boxes (or masks): sum(M * (1 - coverage)) / sum(M), in [0, 1]. Two explanations:

- "agcam": a differentiable AG-CAM (the readout replay with `create_graph=True`, so the loss reaches the weights
  through the attention scores and the attention gradient), on the patch grid; coverage is the fraction of each
  patch inside the region. It sees the class token's attention rows only, so a model can learn to pass a shortcut
  through patch-to-patch attention instead (measured in scripts/shortcut_study.py).
- "input_gradients": Ross et al.'s own choice, the squared gradient of the log-probabilities (summed over classes)
  with respect to the input pixels, summed over channels, at pixel resolution. It sees every path from a pixel to
  the decision; it costs a double backward through the whole model.

Images without a box of their class are trained as usual and counted, never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.explain import AGCAM
from pipeline.metrics import class_regions


@dataclass
class Guidance:
    """Settings of explanation-guided training (`ViTClassifier(guidance=...)`).

    Args:
        weight: factor of the guidance loss added to the classification loss (0 turns it off).
        method: the explanation that is guided: "input_gradients" (default: it removes a shortcut the model would
            otherwise take, see scripts/shortcut_study.py) or "agcam" (the differentiable AG-CAM map).
        annotations: where the allowed region comes from: the boxes of the labelled class, or its object masks.
    """

    weight: float = 0.0
    method: Literal["agcam", "input_gradients"] = "input_gradients"
    annotations: Literal["boxes", "masks"] = "boxes"

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"guidance.weight must be >= 0, got {self.weight}")
        if self.method not in ("agcam", "input_gradients"):
            raise ValueError(f"guidance.method must be 'agcam' or 'input_gradients', got {self.method!r}")
        if self.annotations not in ("boxes", "masks"):
            raise ValueError(f"guidance.annotations must be 'boxes' or 'masks', got {self.annotations!r}")


def patch_coverage(regions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool regions -> (B, gh, gw) fraction of each patch inside them (area average)."""
    return F.adaptive_avg_pool2d(regions.float()[:, None], grid)[:, 0]


def outside_share(maps: torch.Tensor, coverage: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B,) share of each map's relevance outside the covered patches; maps are non-negative (B, gh, gw)."""
    total = maps.flatten(1).sum(dim=1)
    outside = (maps * (1 - coverage)).flatten(1).sum(dim=1)
    return outside / total.clamp_min(eps)


def guidance_loss(
    model: nn.Module, images: torch.Tensor, batch: dict, guidance: Guidance
) -> tuple[torch.Tensor, int, int]:
    """The mean outside-share over the batch's guided images, differentiable in the model's weights.

    Args:
        model: the timm ViT being trained.
        images: (B, C, H, W) the training inputs.
        batch: with `target` (B,) labels and `boxes` / `box_labels` (or `mask`) at input resolution.
        guidance: the settings.

    Returns:
        (loss, guided images, unguided images); the loss is 0 (with a graph) when no image has a region.
    """
    labels = batch["target"].long()
    if guidance.annotations == "masks":
        if "mask" not in batch:
            raise ValueError(
                "guidance.annotations is 'masks' but the batches carry no 'mask': enable masks in the data"
            )
        regions = class_regions(labels, batch["box_labels"], masks=batch["mask"])
    else:
        image_size = tuple(images.shape[-2:])
        regions = class_regions(labels, batch["box_labels"], boxes=batch["boxes"], image_size=image_size)
    regions = regions.to(images.device)
    guided = regions.flatten(1).any(dim=1)  # (B,) images with a region of their class
    count = int(guided.sum())
    if count == 0:
        return images.new_zeros(()), 0, len(images)
    if guidance.method == "agcam":
        maps = AGCAM(model).differentiable_maps(images[guided], labels[guided])  # (G, gh, gw), graph to the weights
        coverage = patch_coverage(regions[guided], (maps.shape[-2], maps.shape[-1]))
    else:
        maps = input_gradient_maps(model, images[guided])  # (G, H, W)
        coverage = regions[guided].float()
    return outside_share(maps, coverage).mean(), count, len(images) - count


def input_gradient_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) squared input gradients of the summed log-probabilities, summed over channels (Ross et al. 2017).

    Computed with create_graph=True, so a loss on them trains the weights; parameter `.grad` is not touched.
    """
    images = images.detach().requires_grad_()
    with explicit_attention(model):  # fused attention kernels have no double backward
        log_probs = model(images).float().log_softmax(dim=-1)
        (grads,) = torch.autograd.grad(log_probs.sum(), images, create_graph=True)
    return grads.pow(2).sum(dim=1)


@contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """timm's attention modules computed as softmax(QK^T)V inside; each module's own fused flag restored on exit."""
    flags: dict[Any, Any] = {m: m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}  # timm's own
    try:
        for module in flags:
            module.fused_attn = False
        yield
    finally:
        for module, fused in flags.items():
            module.fused_attn = fused
