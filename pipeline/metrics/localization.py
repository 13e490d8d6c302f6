"""Dataset-level localization scores over correctly classified cases, summed so DDP gives the single-process result."""

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from pipeline.metrics.functional import (
    LOCALIZATION_SCORES,
    check_threshold,
    check_tolerance,
    localization_scores,
)

REPORTED_SCORES = (*LOCALIZATION_SCORES, "pointing_game", "mass_in_box")


class LocalizationMetrics(Metric):
    """Mean localization scores of explanation maps over correctly classified cases, overall or by class.

    The protocol is docs/method.md's (step 6: misclassified cases are counted, not scored).

    The scores: pixel accuracy, IoU, Dice, precision, recall (thresholded heatmap), the pointing-game hit rate and
    ``mass_in_box``, the threshold-free share of positive relevance inside the ground truth (in mask mode the share
    inside the masks, reported under the same name so box and mask runs log the same keys).

    Only correctly classified cases count toward the means (a misclassified case's map explains another class);
    they are counted as ``skipped``. ``compute()`` returns the seven means plus the counts ``cases`` and
    ``skipped``; when no case was used it returns the counts only, so a logger never sees NaN or a made-up zero.

    With ``num_classes``, every update also needs the class of each case, and ``compute()`` adds
    ``per_class_cases`` (C,) int64 and one ``per_class_<score>`` (C,) float64 per score: a class without cases
    gets 0.0 there, never NaN, so read the means together with ``per_class_cases``. With no case at all only the
    counts (``per_class_cases`` included) come back.

    Each update upsamples and normalizes its maps once for all seven scores (`functional.localization_scores`).

    Args:
        image_size: (H, W) the ground-truth boxes are expressed at; maps are upsampled to it. Box mode needs it
            here or in `update` (no default: a wrong size gives wrong geometry); mask mode takes the masks' size.
        threshold: normalized heatmap pixels strictly above it are hot.
        pointing_tolerance: pixels of slack for the pointing game (Zhang et al. 2016 use 15).
        num_classes: also accumulate per-class means over this many classes; None: overall means only.
        validate_args: check every update's shapes, classes and flags; False is the fast path for callers that
            build the inputs themselves (`pipeline.scoring`).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = LocalizationMetrics(image_size=(8, 8), num_classes=3)
        >>> maps = torch.zeros(2, 8, 8)
        >>> maps[:, 2:5, 2:5] = 1.0
        >>> boxes = [torch.tensor([[2, 2, 5, 5]]), torch.tensor([[0, 0, 1, 1]])]
        >>> metric.update(maps, boxes, correct=torch.tensor([True, False]), classes=torch.tensor([2, 0]))
        >>> result = metric.compute()
        >>> result["iou"].item(), result["pointing_game"].item(), result["cases"].item(), result["skipped"].item()
        (1.0, 1.0, 1, 1)
        >>> result["mass_in_box"].item(), result["per_class_cases"].tolist(), result["per_class_iou"].tolist()
        (1.0, [0, 0, 1], [0.0, 0.0, 1.0])
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    score_sums: Tensor  # (scores,) float64 sums over used cases; the states below are torchmetrics sums too
    cases: Tensor
    skipped: Tensor
    class_score_sums: Tensor  # (C, scores), with num_classes only
    class_cases: Tensor  # (C,)

    def __init__(
        self,
        image_size: Sequence[int] | None = None,
        threshold: float = 0.5,
        pointing_tolerance: int = 0,
        num_classes: int | None = None,
        validate_args: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        self.image_size = None if image_size is None else tuple(image_size)
        self.validate_args = validate_args
        self.threshold = check_threshold(threshold)
        self.pointing_tolerance = check_tolerance(pointing_tolerance, "pointing_tolerance")
        self.num_classes = num_classes
        self.add_state("score_sums", torch.zeros(len(REPORTED_SCORES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("cases", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("skipped", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        if num_classes is not None:
            class_sums = torch.zeros(num_classes, len(REPORTED_SCORES), dtype=torch.float64)  # (C, scores)
            self.add_state("class_score_sums", class_sums, dist_reduce_fx="sum")
            self.add_state("class_cases", torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self,
        maps: Tensor,
        boxes: Sequence[Tensor] | None,
        correct: Tensor,
        image_size: Sequence[int] | None = None,
        masks: Tensor | None = None,
        classes: Tensor | None = None,
    ) -> None:
        """Add a batch of cases.

        Args:
            maps: (B, gh, gw) raw explanation maps (or maps already at the image size).
            boxes: one (n_i, 4) xyxy ground-truth tensor per case at the image size; None in mask mode.
            correct: (B,) bool, whether the case's predicted class equals its label; only these count.
            image_size: (H, W) of this batch's boxes, if not the constructor's.
            masks: (B, H, W) ground-truth masks instead of boxes (mask mode): the thresholded heatmap itself is
                compared with them, pixel by pixel, and the relevance mass is measured inside them.
            classes: (B,) integer class of each case; required with ``num_classes``, refused without it.
        """
        if self.validate_args:
            if not isinstance(correct, Tensor) or correct.dtype != torch.bool or correct.shape != (len(maps),):
                got = (tuple(correct.shape), correct.dtype) if isinstance(correct, Tensor) else type(correct).__name__
                raise ValueError(f"correct must be a ({len(maps)},) bool tensor, one flag per map, got {got}")
            self._check_classes(classes, len(maps))
        scores = localization_scores(
            maps,
            boxes,
            masks,
            image_size=image_size or self.image_size,
            threshold=self.threshold,
            tolerance=self.pointing_tolerance,
            validate_args=self.validate_args,
        )
        per_case = torch.stack([scores[name] for name in REPORTED_SCORES], dim=1)  # (B, 7)
        used = correct.to(per_case.device)
        used_scores = per_case[used].double().to(self.score_sums.device)  # (U, 7)
        self.score_sums += used_scores.sum(dim=0)
        self.cases += used.sum().to(self.cases.device)
        self.skipped += (~used).sum().to(self.skipped.device)
        if self.num_classes is not None:
            used_classes = classes.to(used.device)[used].long().to(self.class_cases.device)  # (U,)
            self.class_score_sums.index_add_(0, used_classes, used_scores)
            self.class_cases += torch.bincount(used_classes, minlength=self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        """The means over used cases (float64) and the counts; counts only when no case was used."""
        counts = {"cases": self.cases, "skipped": self.skipped}
        if self.num_classes is not None:
            counts["per_class_cases"] = self.class_cases
        if self.cases == 0:
            return counts
        means = self.score_sums / self.cases
        result = {**dict(zip(REPORTED_SCORES, means.unbind(), strict=True)), **counts}
        if self.num_classes is not None:
            class_cases = self.class_cases[:, None]  # (C, 1)
            # a class without cases gets 0.0, not 0 / 0: the consumer skips it through per_class_cases
            class_means = torch.where(class_cases > 0, self.class_score_sums / class_cases.clamp(min=1), 0.0)
            result.update({f"per_class_{name}": class_means[:, i] for i, name in enumerate(REPORTED_SCORES)})
        return result

    def _check_classes(self, classes: Tensor | None, batch: int) -> None:
        """Per-class sums need a valid class for every case, and only make sense when asked for."""
        if self.num_classes is None:
            if classes is not None:
                raise ValueError("classes given, but this metric was built without num_classes")
            return
        if not isinstance(classes, Tensor) or classes.shape != (batch,) or classes.is_floating_point():
            got = (tuple(classes.shape), classes.dtype) if isinstance(classes, Tensor) else type(classes).__name__
            raise ValueError(f"classes must be a ({batch},) integer tensor, one class per map, got {got}")
        if batch and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(
                f"classes must be in [0, {self.num_classes - 1}], got values from {classes.min()} to {classes.max()}"
            )
