"""Object reliance: does the decision need the labelled object? Accuracy with the object erased, and with the
context erased. An explainer-independent signal: a model that stays right with its object erased reads something
else (a marker, a watermark, the background).

Infill: the erased pixels become 0 in the model's normalized input space, which is the normalization mean colour
(the dataset's average pixel). A constant carries no information from either region: a blur would leak the
object's colour (a class cue in the shapes data and in many real datasets) and its rough shape, and a noise fill is
a texture no training image holds, which can flip a prediction on its own. The region is the union of the image's
labelled boxes, or its object masks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from pipeline.metrics.functional import boxes_to_mask

RELIANCE_SCORES = ("acc", "acc_object_erased", "acc_context_erased")


def erase(images: Tensor, regions: Tensor) -> tuple[Tensor, Tensor]:
    """(object erased, context erased) copies of normalized (B, C, H, W) images; `regions` (B, H, W) bool objects.

    Erased pixels are set to 0, the normalization mean (see the module docstring for why).
    """
    if regions.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"regions must be (B, H, W) = {(images.shape[0], *images.shape[-2:])}, got {regions.shape}")
    inside = regions[:, None].to(images.dtype)
    return images * (1 - inside), images * inside


def object_regions(
    batch: dict, image_size: tuple[int, int], use_masks: bool = False, *, option: str = "reliance with use_masks"
) -> Tensor:
    """(B, H, W) bool: each image's labelled objects, the union of its boxes or (`use_masks`) its object masks.

    Args:
        batch: with `boxes` [(n_i, 4) xyxy at `image_size`], or `mask` (B, H, W) object ids (0: background).
        image_size: (H, W) of the images.
        use_masks: take the masks instead of the boxes.
        option: the setting that asked for masks, named when the batches carry none.
    """
    if use_masks:
        if "mask" not in batch:
            raise ValueError(f"{option} needs masks in the batches: enable masks in the data source")
        return batch["mask"] > 0
    return boxes_to_mask(batch["boxes"], image_size)


def erased_copies(
    images: Tensor, batch: dict, use_masks: bool = False, *, option: str = "reliance with use_masks"
) -> tuple[Tensor, Tensor, Tensor]:
    """The images that have a labelled object, erased both ways.

    Args:
        images: (B, C, H, W) normalized images of `batch`.
        batch, use_masks, option: as for `object_regions`.

    Returns:
        (boxed (B,) bool: the images with an object, their (N, C, H, W) object-erased and context-erased copies).
    """
    regions = object_regions(batch, (images.shape[-2], images.shape[-1]), use_masks, option=option)
    regions = regions.to(images.device)
    boxed = regions.flatten(1).any(dim=1)
    object_erased, context_erased = erase(images[boxed], regions[boxed])
    return boxed, object_erased, context_erased


def reliance_counts(
    labels: Tensor, logits: Tensor, logits_object_erased: Tensor, logits_context_erased: Tensor, num_classes: int
) -> dict[str, Tensor]:
    """Per true class: images, and right answers on the original, object-erased and context-erased images.

    Returns:
        {"images": (C,), "acc": (C,), "acc_object_erased": (C,), "acc_context_erased": (C,)} integer counts.
    """
    counts = {"images": torch.bincount(labels, minlength=num_classes)}
    for name, class_logits in zip(RELIANCE_SCORES, (logits, logits_object_erased, logits_context_erased)):
        right = class_logits.argmax(dim=-1) == labels
        counts[name] = torch.bincount(labels[right], minlength=num_classes)
    return counts


def reliance_scores(counts: dict[str, Tensor]) -> dict[str, Tensor]:
    """Accuracies from summed counts, and `chance`: the accuracy of always answering the most frequent class.

    NaN for a score without images (never a silent 0).
    """
    images = counts["images"].sum().float()
    scores = {name: counts[name].sum().float() / images for name in RELIANCE_SCORES}
    scores["chance"] = counts["images"].max().float() / images
    scores["images"] = images
    return scores


class ObjectReliance(Metric):
    """Summed per-class counts of `reliance_counts` (DDP-summed); `compute()` gives overall and per-class values.

    Args:
        num_classes: number of classes.
    """

    full_state_update = False
    images: Tensor
    acc: Tensor
    acc_object_erased: Tensor
    acc_context_erased: Tensor
    unboxed: Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        for name in ("images", *RELIANCE_SCORES):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("unboxed", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        labels: Tensor,
        logits: Tensor,
        logits_object_erased: Tensor,
        logits_context_erased: Tensor,
        unboxed: int = 0,
    ) -> None:
        """Count one batch of images that had a region; `unboxed` images without one are only counted."""
        counts = reliance_counts(labels, logits, logits_object_erased, logits_context_erased, self.num_classes)
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)
        self.unboxed += unboxed

    def compute(self) -> dict[str, Tensor]:
        """Overall accuracies, chance, images and unboxed; per-class `per_class_<score>` (C,) and `per_class_images`."""
        counts = {name: getattr(self, name) for name in ("images", *RELIANCE_SCORES)}
        values = {**reliance_scores(counts), "unboxed": self.unboxed.float()}
        per_class_images = counts["images"].float()
        values["per_class_images"] = per_class_images
        for name in RELIANCE_SCORES:
            values[f"per_class_{name}"] = counts[name].float() / per_class_images  # NaN for classes without images
        return values
