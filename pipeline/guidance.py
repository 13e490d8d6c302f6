"""Guided training: make the model answer from the labelled objects, not from what surrounds them.

"Right for the right reasons" (Ross et al. 2017). Three losses, added to the classification loss with a weight:

- "context_swap" (default): a counterfactual. Each image's labelled region is pasted onto the context of the next
  image in the batch (that image's pixels only where neither image has an object, so no object of another class
  and no infill is left), and the loss is the cross-entropy of those images with the pasted object's label. A
  shortcut outside the boxes (a marker, a tinted border, a watermark) then points to another image's class, so
  reading it no longer pays; nothing about the shortcut is assumed. One extra forward and backward of the guided
  images; the training never sees the mean-colour infill that object reliance (`pipeline.metrics.reliance`)
  measures with, so the monitor stays independent of the lever.
- "input_gradients": Ross et al.'s own choice, the share of the squared gradient of the log-probabilities (summed
  over classes and channels) that lies outside the label's boxes, at pixel resolution. It costs a double backward
  through the whole model.
- "agcam": the same share of a differentiable AG-CAM (the readout replay with `create_graph=True`), on the patch
  grid. It sees the class token's attention rows only, so a model can learn to pass a shortcut through
  patch-to-patch attention instead (measured in scripts/shortcut_study.py).

The shares are sum(M * (1 - coverage)) / sum(M) per image, in [0, 1]. Images without a box of their class are
trained as usual and counted, never guessed at.

The weight can be a number or "auto" (`AutoWeight`): a controller that watches what the model does, not its
explanation. Every step it measures the training batch's accuracy with the labelled objects erased (one extra
forward, no gradient; `pipeline.metrics.reliance`) and raises the weight while that accuracy stays above chance
(the model answers from something outside the objects), lowering it slowly once it is at chance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.explain import AGCAM
from pipeline.metrics import class_regions, erased_copies, object_regions

AUTO = "auto"
METHODS = ("context_swap", "input_gradients", "agcam")
MASKS_OPTION = "guidance_annotations 'masks'"  # named when the batches carry no masks


@dataclass
class Guidance:
    """Settings of explanation-guided training (`ViTClassifier(guidance=...)`).

    Args:
        weight: factor of the guidance loss added to the classification loss (0 turns it off), or "auto" (the
            rule of `AutoWeight`).
        method: the loss: "context_swap" (default: the counterfactual; removes both shortcuts of
            scripts/shortcut_study.py under "auto"), "input_gradients" or "agcam" (see the module docstring).
        annotations: where the allowed region comes from: the boxes of the labelled class, or its object masks.
    """

    weight: float | str = 0.0
    method: Literal["context_swap", "input_gradients", "agcam"] = "context_swap"
    annotations: Literal["boxes", "masks"] = "boxes"

    def __post_init__(self) -> None:
        if self.weight != AUTO and (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, (int, float))
            or not math.isfinite(self.weight)
            or self.weight < 0
        ):
            raise ValueError(f"guidance_weight must be a number >= 0 or '{AUTO}', got {self.weight!r}")
        if self.method not in METHODS:
            raise ValueError(f"guidance_method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.annotations not in ("boxes", "masks"):
            raise ValueError(f"guidance_annotations must be 'boxes' or 'masks', got {self.annotations!r}")


@dataclass
class AutoWeight:
    """The guidance weight of `guidance_weight: auto`, one multiplicative step per training batch.

    weight <- clip(weight * exp(rate * (excess - tolerance)), low, high), with excess = the batch's accuracy with
    its labelled objects erased minus chance (the share of the batch's most frequent label: the best constant
    answer). While the model stays right without its objects the weight doubles about every step (excess near 1);
    at chance it decays by exp(-rate * tolerance) per step (halves in ~14 steps), so a shortcut the model picks up
    again is met at once. Nothing in it depends on the shortcut: its constants are in units of accuracy and steps.

    Bounds [1, 100]. At 1 the counterfactual images of "context_swap" count as much as the originals; a floor of
    0.1 left the marker partly read (object-erased val accuracy 0.38 against 0.21 with the floor at 1, chance about
    0.17; scripts/shortcut_study.py at 2000 images, 3 epochs). At 100 the guidance term is all the training sees.

    Args:
        start: the weight of the first step.
        low, high: the bounds.
        rate: log-weight change per unit of excess accuracy per step.
        tolerance: excess accuracy treated as noise (a batch of 64 at chance 1/6 has a standard error of 0.05).
    """

    start: float = 1.0
    low: float = 1.0
    high: float = 100.0
    rate: float = 1.0
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        self.value = self.start

    def step(self, erased_accuracy: float, chance: float) -> float:
        """Update with one batch's object-erased accuracy and chance level; the new weight."""
        excess = erased_accuracy - chance
        self.value = min(self.high, max(self.low, self.value * math.exp(self.rate * (excess - self.tolerance))))
        return self.value


def object_erased_counts(
    model: nn.Module, images: torch.Tensor, batch: dict, annotations: Literal["boxes", "masks"], num_classes: int
) -> torch.Tensor:
    """(2 + C,) counts of the batch's images with a labelled object: right answers with the objects erased, images,
    and images per class (so that sums over processes give the same rule as one process). No gradient."""
    boxed, object_erased, _ = erased_copies(images, batch, annotations == "masks", option=MASKS_OPTION)
    labels = batch["target"].long()[boxed]
    per_class = torch.bincount(labels, minlength=num_classes)
    if not len(labels):
        return torch.cat([labels.new_zeros(2), per_class])
    with torch.no_grad():
        right = (model(object_erased).argmax(dim=-1) == labels).sum()
    return torch.cat([torch.stack([right, labels.new_tensor(len(labels))]), per_class])


def swap_contexts(images: torch.Tensor, regions: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images, each on the context of the next one (cyclically): that image's pixels only where
    neither has an object, so its objects give no other class and no infill is needed.

    Args:
        images: the images.
        regions: (B, H, W) bool, each image's labelled region (kept).
        objects: (B, H, W) bool, each image's objects of any class (not taken from it as context).
    """
    context, context_objects = images.roll(-1, dims=0), objects.roll(-1, dims=0)
    return torch.where((regions | context_objects)[:, None], images, context)


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
    """The guidance loss over the batch's guided images, differentiable in the model's weights.

    Args:
        model: the timm ViT being trained.
        images: (B, C, H, W) the training inputs.
        batch: with `target` (B,) labels and `boxes` / `box_labels` (or `mask`) at input resolution.
        guidance: the settings.

    Returns:
        (loss, guided images, unguided images); the loss is 0 (with a graph) when no image has a region.
        "context_swap" gives a cross-entropy, the other methods a share in [0, 1].
    """
    labels = batch["target"].long()
    size = (images.shape[-2], images.shape[-1])
    use_masks = guidance.annotations == "masks"
    if use_masks:
        if "mask" not in batch:
            raise ValueError(f"{MASKS_OPTION} needs masks in the batches: enable masks in the data source")
        regions = class_regions(labels, batch["box_labels"], masks=batch["mask"])
    else:
        regions = class_regions(labels, batch["box_labels"], boxes=batch["boxes"], image_size=size)
    regions = regions.to(images.device)
    guided = regions.flatten(1).any(dim=1)  # (B,) images with a region of their class
    count = int(guided.sum())
    if count == 0:
        return images.new_zeros(()), 0, len(images)
    if guidance.method == "context_swap":
        objects = object_regions(batch, size, use_masks, option=MASKS_OPTION)
        swapped = swap_contexts(images[guided], regions[guided], objects.to(images.device)[guided])
        return F.cross_entropy(model(swapped).float(), labels[guided]), count, len(images) - count
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
