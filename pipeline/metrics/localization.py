"""Dataset-level localization scores over correctly classified cases, summed so DDP gives the single-process result."""

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from pipeline.metrics.functional import (
    LOCALIZATION_SCORES,
    box_localization,
    mask_localization,
    mask_pointing_game,
    pointing_game,
)

REPORTED_SCORES = (*LOCALIZATION_SCORES, "pointing_game")


class LocalizationMetrics(Metric):
    """Mean pixel accuracy, IoU, Dice, precision, recall and pointing-game hit rate of explanation maps (SPEC step 6).

    Only correctly classified cases count toward the means (a misclassified case's map explains another class);
    they are counted as ``skipped``. ``compute()`` returns the six means plus the counts ``cases`` and ``skipped``;
    when no case was used it returns the counts only, so a logger never sees NaN or a made-up zero.

    Args:
        image_size: (H, W) the ground-truth boxes are expressed at; maps are upsampled to it.
        threshold: normalized heatmap pixels strictly above it are hot.
        pointing_tolerance: pixels of slack for the pointing game (Zhang et al. 2016 use 15).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = LocalizationMetrics(image_size=(8, 8))
        >>> maps = torch.zeros(2, 8, 8)
        >>> maps[:, 2:5, 2:5] = 1.0
        >>> boxes = [torch.tensor([[2, 2, 5, 5]]), torch.tensor([[0, 0, 1, 1]])]
        >>> metric.update(maps, boxes, correct=torch.tensor([True, False]))
        >>> result = metric.compute()
        >>> result["iou"].item(), result["pointing_game"].item(), result["cases"].item(), result["skipped"].item()
        (1.0, 1.0, 1, 1)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        image_size: tuple[int, int] = (224, 224),
        threshold: float = 0.5,
        pointing_tolerance: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = tuple(image_size)
        self.threshold = threshold
        self.pointing_tolerance = pointing_tolerance
        self.add_state("score_sums", torch.zeros(len(REPORTED_SCORES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("cases", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("skipped", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self,
        maps: Tensor,
        boxes: Sequence[Tensor] | None,
        correct: Tensor,
        image_size: tuple[int, int] | None = None,
        masks: Tensor | None = None,
    ) -> None:
        """Add a batch of cases.

        Args:
            maps: (B, gh, gw) raw explanation maps (or maps already at the image size).
            boxes: one (n_i, 4) xyxy ground-truth tensor per case at the image size; None in mask mode.
            correct: (B,) bool, whether the case's predicted class equals its label; only these count.
            image_size: (H, W) of this batch's boxes, if not the constructor's.
            masks: (B, H, W) ground-truth masks instead of boxes (mask mode): the thresholded heatmap itself is
                compared with them, pixel by pixel.
        """
        if not isinstance(correct, Tensor) or correct.dtype != torch.bool or correct.shape != (len(maps),):
            got = (tuple(correct.shape), correct.dtype) if isinstance(correct, Tensor) else type(correct).__name__
            raise ValueError(f"correct must be a ({len(maps)},) bool tensor, one flag per map, got {got}")
        if (boxes is None) == (masks is None):
            raise ValueError("give exactly one of boxes (box mode) or masks (mask mode)")
        if masks is None:
            image_size = image_size or self.image_size
            scores = box_localization(maps, boxes, image_size, self.threshold)
            hits = pointing_game(maps, boxes, image_size, self.pointing_tolerance)
        else:
            scores = mask_localization(maps, masks, self.threshold)
            hits = mask_pointing_game(maps, masks, self.pointing_tolerance)
        per_case = torch.stack([*(scores[name] for name in LOCALIZATION_SCORES), hits.float()], dim=1)  # (B, 6)
        used = correct.to(per_case.device)
        self.score_sums += per_case[used].double().sum(dim=0).to(self.score_sums.device)
        self.cases += used.sum().to(self.cases.device)
        self.skipped += (~used).sum().to(self.skipped.device)

    def compute(self) -> dict[str, Tensor]:
        """The means over used cases (float64) and the counts; counts only when no case was used."""
        counts = {"cases": self.cases, "skipped": self.skipped}
        if self.cases == 0:
            return counts
        means = self.score_sums / self.cases
        return {**dict(zip(REPORTED_SCORES, means.unbind(), strict=True)), **counts}
