"""Class atlas: per class, the mean normalized heatmap of the correctly classified images. A shortcut at a fixed
spot shows as a hot spot where no object is; the objects themselves, placed anywhere, average out to a blur."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from pipeline.metrics.functional import normalize_heatmaps


class ClassAtlas(Metric):
    """Summed min-max normalized maps and image counts per class (DDP-summed); `compute()` gives the means.

    Args:
        num_classes: number of classes.
        grid: (gh, gw) of the maps (the model's patch grid).
    """

    full_state_update = False
    sums: Tensor
    images: Tensor

    def __init__(self, num_classes: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.add_state("sums", default=torch.zeros(num_classes, *self.grid, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, maps: Tensor, classes: Tensor, correct: Tensor) -> None:
        """Add the (N, gh, gw) raw maps of the `correct` (N,) cases to the sums of their `classes` (N,)."""
        if tuple(maps.shape[-2:]) != self.grid:
            raise ValueError(f"atlas maps must be on the {self.grid} grid, got {tuple(maps.shape[-2:])}")
        maps, classes = maps[correct], classes[correct].long()
        heatmaps = normalize_heatmaps(maps, self.grid).to(self.sums.dtype)  # already on the grid: only normalized
        self.sums.index_add_(0, classes, heatmaps)
        self.images += torch.bincount(classes, minlength=len(self.images))

    def compute(self) -> dict[str, Tensor]:
        """{"mean": (C, gh, gw) float32 mean heatmap (zeros for a class without images), "images": (C,)}."""
        mean = self.sums / self.images.clamp_min(1)[:, None, None]
        return {"mean": mean.float(), "images": self.images}
