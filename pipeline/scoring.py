"""Score where a model looks, batch by batch: cases -> explainers -> localization and faithfulness metrics.

The one loop that the training callback (`pipeline.lightning.LocalizationCallback`) and `agcam evaluate` share, so
the two give the same numbers for the same model and data. No Lightning here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torchmetrics import SumMetric

from pipeline.explain import Explainer, build_explainer, check_methods
from pipeline.explain.base import RecordedBatch, ReplayingExplainer, record_batch
from pipeline.metrics import (
    ABPC,
    REPORTED_SCORES,
    LocalizationMetrics,
    ObjectReliance,
    check_threshold,
    check_tolerance,
    class_regions,
    erased_copies,
)


@dataclass(frozen=True, kw_only=True)
class ScoringOptions:
    """What the scorer measures; every option is checked here, once, with the option's name in the error.

    Args:
        methods: explainers to run side by side, keys of `pipeline.explain.METHODS`.
        threshold: heatmap threshold of the box protocol.
        use_masks: score against the batches' ground-truth masks instead of boxes.
        pointing_tolerance: pixels of slack for the pointing game.
        abpc_images: images per `reset()` also scored for faithfulness (ABPC, single-label only); None: every image.
        abpc_steps: perturbation steps of ABPC.
    """

    methods: Sequence[str] = field(default=("agcam",))
    threshold: float = 0.5
    use_masks: bool = False
    pointing_tolerance: int = 0
    abpc_images: int | None = 0
    abpc_steps: int = 11

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(check_methods(self.methods)))
        object.__setattr__(self, "threshold", check_threshold(self.threshold))
        check_tolerance(self.pointing_tolerance, "pointing_tolerance")
        if self.abpc_images is not None and self.abpc_images < 0:
            raise ValueError(f"abpc_images must be >= 0 (or None for every image), got {self.abpc_images}")
        if self.abpc_steps < 2:
            raise ValueError(f"abpc_steps must be >= 2, got {self.abpc_steps}")


@dataclass
class Cases:
    """What to explain in a batch: K target classes per image (padded), which are real, which were predicted."""

    targets: torch.Tensor  # (B, K) class per case
    valid: torch.Tensor  # (B, K) a real case with at least one ground-truth box
    correct: torch.Tensor  # (B, K) the model predicted the case's class
    boxes: list[list[torch.Tensor]]  # [b][k] -> (n, 4) boxes of that class
    unboxed: int  # real cases without any box of their class (not scored)

    @property
    def scored_boxes(self) -> list[torch.Tensor]:
        """The boxes of the valid cases, in the order of `maps[valid]`."""
        return [boxes for row, keep in zip(self.boxes, self.valid.tolist()) for boxes, k in zip(row, keep) if k]


def build_cases(batch: dict, logits: torch.Tensor, multi_label: bool) -> Cases:
    """Single-label: one case per image, its label. Multi-label: one case per (image, present class).

    A multi-label case is correct when the model gives its class a sigmoid above 0.5 (docs/method.md).
    """
    if not multi_label:
        targets = batch["target"].long()[:, None]
        correct = (logits.argmax(dim=-1) == batch["target"])[:, None]
        boxes = [[image_boxes] for image_boxes in batch["boxes"]]
    else:
        present = batch["target"] > 0.5  # (B, C)
        width = max(1, int(present.sum(dim=1).max()))
        # present classes first (stable sort keeps class order), padded with absent ones that `valid` masks out
        targets = present.int().sort(dim=1, descending=True, stable=True).indices[:, :width]
        correct = logits.gather(1, targets) > 0  # sigmoid > 0.5
        boxes = [
            [image_boxes[labels == cls] for cls in image_targets.tolist()]
            for image_boxes, labels, image_targets in zip(batch["boxes"], batch["box_labels"], targets)
        ]
    real = batch["target"].gather(1, targets) > 0.5 if multi_label else torch.ones_like(targets, dtype=torch.bool)
    has_boxes = torch.tensor([[len(b) > 0 for b in row] for row in boxes], device=targets.device)
    return Cases(targets, real & has_boxes, correct, boxes, int((real & ~has_boxes).sum()))


def case_masks(batch: dict, cases: Cases) -> torch.Tensor:
    """(cases, H, W) ground-truth masks: the pixels of the objects whose boxes belong to each valid case's class."""
    if "mask" not in batch:
        raise ValueError("use_masks is on but the batches carry no 'mask': enable masks in the data source")
    image_of_case = cases.valid.nonzero()[:, 0]  # (cases,) in the order of `targets[valid]`
    if not len(image_of_case):
        return batch["mask"].new_zeros((0, *batch["mask"].shape[-2:]), dtype=torch.bool)
    labels = [batch["box_labels"][image] for image in image_of_case.tolist()]
    return class_regions(cases.targets[cases.valid], labels, masks=batch["mask"][image_of_case])


class LocalizationScorer:
    """Explain every case of each batch with each method and accumulate its localization (and ABPC) metrics.

    Only correctly classified cases are scored (a misclassified case's map explains another class); the metrics
    count the others as `skipped`, and real cases without a box of their class as `unboxed`. The states are
    torchmetrics sums: `compute()` under DDP gives the single-process numbers.

    Args:
        model: the timm ViT to explain (the explainers leave it as they found it).
        options: what to measure (methods, threshold, masks, pointing tolerance, ABPC).
        multi_label: one case per (image, present class) instead of one per image.
    """

    def __init__(self, model: nn.Module, options: ScoringOptions | None = None, *, multi_label: bool = False) -> None:
        options = options or ScoringOptions()
        if options.abpc_images != 0 and multi_label:
            raise ValueError(
                "ABPC scores a softmax class probability: it does not apply to multi-label data (set abpc_images to 0)"
            )
        self.model = model
        self.options = options
        self.methods = list(options.methods)
        self.multi_label = multi_label
        self.use_masks = options.use_masks
        self.abpc_images = options.abpc_images
        self.explainers: dict[str, Explainer] = {method: build_explainer(method, model) for method in self.methods}
        self.localization = {
            method: LocalizationMetrics(
                threshold=options.threshold,
                pointing_tolerance=options.pointing_tolerance,
                num_classes=cast(int, model.num_classes),
                validate_args=False,  # maps, cases and classes are made here, checked by construction
            )
            for method in self.methods
        }
        self.faithfulness = {method: ABPC(steps=options.abpc_steps) for method in self.methods}
        self.unboxed = SumMetric()
        self.recorded: RecordedBatch | None = None  # of the last `forward`, until `update` explains it
        self.reset()

    @property
    def metrics(self) -> list:
        return [*self.localization.values(), *self.faithfulness.values(), self.unboxed]

    def to(self, device: torch.device | str) -> LocalizationScorer:
        for metric in self.metrics:
            metric.to(device)
        return self

    def reset(self) -> None:
        """Forget everything accumulated; the ABPC budget starts again."""
        for metric in self.metrics:
            metric.reset()
        self.abpc_budget = self.abpc_images

    @property
    def can_record(self) -> bool:
        """Whether `forward` saves a forward pass: some method explains from the prediction's own forward."""
        return any(isinstance(explainer, ReplayingExplainer) for explainer in self.explainers.values())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits for `images` (B, C), from a forward that also records what the methods need.

        The next `update` of these same images explains from that record (AG-CAM, rollout) instead of running
        the model again. The forward is the explainers' (eval mode, float32, no autocast), as in a plain call.
        """
        self.recorded = record_batch(list(self.explainers.values()), images)
        return self.recorded.logits

    def update(self, images: torch.Tensor, logits: torch.Tensor, batch: dict) -> tuple[Cases, dict[str, torch.Tensor]]:
        """Explain and score one batch.

        Args:
            images: (B, C, H, W) the model inputs (the tensor given to `forward`: explained from its record).
            logits: (B, classes) the model's logits for them (they decide which cases are correct).
            batch: the batch's annotations (target, boxes, box_labels; mask in mask mode) on the images' device.

        Returns:
            The cases, and per method the (B, K, gh, gw) raw maps of every case.
        """
        cases = build_cases(batch, logits, self.multi_label)
        self.unboxed.update(cases.unboxed)
        valid = cases.valid
        masks = case_masks(batch, cases) if self.use_masks else None
        abpc_count = len(images) if self.abpc_budget is None else min(self.abpc_budget, len(images))
        all_maps = {}
        recorded, self.recorded = self.recorded, None  # a record serves one update: replaying consumes it
        for method, explainer in self.explainers.items():
            maps = explainer(images, cases.targets, recorded)  # (B, K, gh, gw)
            self.localization[method].update(
                maps[valid],
                None if self.use_masks else cases.scored_boxes,
                cases.correct[valid],
                image_size=tuple(images.shape[-2:]),
                masks=masks,
                classes=cases.targets[valid],
            )
            if abpc_count:
                self.faithfulness[method].update(
                    self.model, images[:abpc_count], maps[:abpc_count, 0], cases.targets[:abpc_count, 0]
                )
            all_maps[method] = maps
        if self.abpc_budget is not None:
            self.abpc_budget -= abpc_count
        return cases, all_maps

    def compute(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per method: the localization means and counts (`unboxed` included), per-class values (`per_class_*`,
        (C,) tensors) and, with ABPC on, `abpc/...` values.

        Synchronizes across processes under DDP: call it on every process.
        """
        unboxed = self.unboxed.compute()
        results = {}
        for method in self.methods:
            values = {**self.localization[method].compute(), "unboxed": unboxed}
            if self.abpc_images != 0:
                faithfulness = self.faithfulness[method].compute()
                values.update({f"abpc/{name}": value for name, value in faithfulness.items()})
            results[method] = values
        return results


def class_rows(
    measured: dict[str, torch.Tensor],
    class_names: Sequence[str],
    *,
    count: str = "cases",
    scores: Sequence[str] = REPORTED_SCORES,
) -> dict[str, dict[str, float]]:
    """{class name: {count, score: mean}} for the classes with a non-zero `per_class_<count>`, from a scorer's
    per_class_* values: localization (cases, REPORTED_SCORES) or reliance (images, RELIANCE_SCORES)."""
    counted = measured.get(f"per_class_{count}")
    if counted is None:
        return {}
    return {
        class_names[index]: {
            count: int(counted[index]),
            **{name: measured[f"per_class_{name}"][index].item() for name in scores},
        }
        for index in counted.nonzero()[:, 0].tolist()
    }


class RelianceScorer:
    """Object reliance of each batch (`pipeline.metrics.reliance`): two extra forwards per image with a region,
    the object erased and the context erased, batched as one forward. Single-label only.

    Args:
        model: the timm classifier (called under no_grad on the erased images).
        num_classes: classes of the head.
        use_masks: the objects are the batches' masks instead of their boxes.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, use_masks: bool = False) -> None:
        self.model = model
        self.use_masks = use_masks
        self.metric = ObjectReliance(num_classes)

    def to(self, device: torch.device | str) -> RelianceScorer:
        self.metric.to(device)
        return self

    def reset(self) -> None:
        self.metric.reset()

    def update(self, images: torch.Tensor, logits: torch.Tensor, batch: dict) -> None:
        """Count one batch; `logits` are the model's on the unchanged images (no third forward).

        The erased forward runs even when no image of the batch has a box (an empty batch): every process then
        calls the model once per batch, as FSDP2's parameter gathering needs.
        """
        boxed, object_erased, context_erased = erased_copies(images, batch, self.use_masks)
        with torch.no_grad():
            object_logits, context_logits = self.model(torch.cat([object_erased, context_erased])).tensor_split(2)
        labels = batch["target"].long()[boxed]
        self.metric.update(labels, logits[boxed], object_logits, context_logits, unboxed=int((~boxed).sum()))

    def compute(self) -> dict[str, torch.Tensor]:
        """Overall and per-class accuracies (`pipeline.metrics.ObjectReliance`); synchronizes under DDP."""
        values = self.metric.compute()
        if values["images"] == 0 and values["unboxed"] > 0:
            raise ValueError(
                f"reliance: none of {int(values['unboxed'])} images has a labelled box or mask to erase; give the "
                "data boxes (or masks with use_masks) or turn reliance off"
            )
        return values
