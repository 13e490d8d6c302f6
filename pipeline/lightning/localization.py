"""LocalizationCallback: explain validation images while the model trains, score where it looks, log it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics import SumMetric

from pipeline.explain import METHODS, build_explainer
from pipeline.metrics import ABPC, LocalizationMetrics
from pipeline.panel import HeatmapPanel


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
    """Single-label: one case per image, its label. Multi-label: one case per (image, present class) (SPEC.md)."""
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


class LocalizationCallback(pl.Callback):
    """Every validation epoch: explain the labelled class(es), measure localization, log numbers and heatmaps.

    Metrics are logged as `val/loc/<method>/<metric>` (pixel_accuracy, iou, dice, precision, recall,
    pointing_game, cases, skipped, unboxed) and, with ABPC on, `val/abpc/<method>/abpc`. They are synchronized
    across DDP processes. Only correctly classified cases are scored (SPEC.md step 6); `skipped` counts the others.
    The explainers run on the plain timm model (`pl_module.model`) with autograd re-enabled inside Lightning's
    inference mode, through `torch.autograd.grad` only: parameter gradients, optimizer state and DDP gradient
    buckets are never touched. The same runs on `test` as `test/loc/...`.

    Args:
        methods: explainers to run side by side: "agcam" (default), "rollout", "lrp", "grad_rollout".
        threshold: heatmap threshold of the box protocol.
        max_batches: explain at most this many validation batches per epoch (None: all).
        every_n_epochs: explain on every n-th validation epoch only; other epochs cost nothing.
        panel_size: validation images rendered as heatmap overlays each epoch (0 turns the panel off).
        abpc_images: images per process per epoch also scored for faithfulness (ABPC; single-label only).
        abpc_steps: perturbation steps of ABPC.
        use_masks: score against ground-truth masks (when the data has them) instead of boxes.
        pointing_tolerance: pixels of slack for the pointing game.
    """

    def __init__(
        self,
        methods: list[str] | None = None,
        threshold: float = 0.5,
        max_batches: int | None = None,
        every_n_epochs: int = 1,
        panel_size: int = 8,
        abpc_images: int = 0,
        abpc_steps: int = 11,
        use_masks: bool = False,
        pointing_tolerance: int = 0,
    ) -> None:
        self.methods = list(methods or ["agcam"])
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"Unknown explanation method(s) {unknown}; choose from {sorted(METHODS)}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.threshold = threshold
        self.max_batches = max_batches
        self.every_n_epochs = every_n_epochs
        self.abpc_images = abpc_images
        self.abpc_steps = abpc_steps
        self.use_masks = use_masks
        self.pointing_tolerance = pointing_tolerance
        self.panel = HeatmapPanel(panel_size, threshold)
        self.active = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.multi_label = bool(getattr(pl_module.hparams, "multi_label", False))
        if self.abpc_images and self.multi_label:
            raise ValueError("ABPC scores a softmax class probability: set abpc_images: 0 for multi-label data")
        self.explainers = {method: build_explainer(method, pl_module.model) for method in self.methods}
        self.localization = {
            method: LocalizationMetrics(threshold=self.threshold, pointing_tolerance=self.pointing_tolerance)
            for method in self.methods
        }
        self.faithfulness = {method: ABPC(steps=self.abpc_steps) for method in self.methods}
        self.unboxed = SumMetric()
        # metrics held by a callback are not moved by Lightning
        for metric in [*self.localization.values(), *self.faithfulness.values(), self.unboxed]:
            metric.to(pl_module.device)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == "fit"
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        self.active = not trainer.sanity_checking and (due or not fitting)
        self._start_epoch()

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.active = True
        self._start_epoch()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.active and (self.max_batches is None or batch_idx < self.max_batches):
            self._explain_batch(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:
            self._finish_epoch(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_epoch(trainer, pl_module, "test")

    def _start_epoch(self) -> None:
        self.panel.reset()
        self.abpc_budget = self.abpc_images

    def _explain_batch(self, pl_module: pl.LightningModule, outputs: Any, batch: dict) -> None:
        images = batch["image"]
        logits = outputs["logits"] if isinstance(outputs, dict) and "logits" in outputs else pl_module(images)
        cases = build_cases(batch, logits, self.multi_label)
        self.unboxed.update(cases.unboxed)
        valid = cases.valid
        case_masks = self._case_masks(batch, cases) if self.use_masks else None
        panel_maps = {}
        for method, explainer in self.explainers.items():
            maps = explainer(images, cases.targets)  # (B, K, gh, gw)
            self.localization[method].update(
                maps[valid],
                None if self.use_masks else cases.scored_boxes,
                cases.correct[valid],
                image_size=tuple(images.shape[-2:]),
                masks=case_masks,
            )
            panel_maps[method] = maps[:, 0]
            if self.abpc_budget > 0:
                take = min(self.abpc_budget, len(images))
                self.faithfulness[method].update(
                    pl_module.model, images[:take], maps[:take, 0], cases.targets[:take, 0]
                )
        self.abpc_budget -= min(self.abpc_budget, len(images))
        if not self.panel.full:
            preds = logits.argmax(dim=-1)
            first_boxes = [row[0] for row in cases.boxes]
            self.panel.add(images, batch["image_id"], cases.targets[:, 0], preds, first_boxes, panel_maps)

    def _case_masks(self, batch: dict, cases: Cases) -> torch.Tensor:
        """(cases, H, W) ground-truth masks: the pixels of the objects whose boxes belong to each case's class."""
        if "mask" not in batch:
            raise ValueError("use_masks is on but the batches carry no 'mask': enable masks in the data source")
        masks = []
        for mask, labels, image_targets, keep in zip(batch["mask"], batch["box_labels"], cases.targets, cases.valid):
            for cls, k in zip(image_targets.tolist(), keep.tolist()):
                if k:
                    object_ids = (labels == cls).nonzero()[:, 0] + 1  # mask value i + 1 is object i
                    masks.append(torch.isin(mask.long(), object_ids))
        return torch.stack(masks) if masks else batch["mask"].new_zeros((0, *batch["mask"].shape[-2:]), dtype=bool)

    def _finish_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """compute() on every process (it synchronizes), log, reset; the panel on rank zero only."""
        logged = {}
        unboxed = self.unboxed.compute()
        for method in self.methods:
            for name, value in self.localization[method].compute().items():
                logged[f"{stage}/loc/{method}/{name}"] = value
            logged[f"{stage}/loc/{method}/unboxed"] = unboxed
            if self.abpc_images:
                faithfulness = self.faithfulness[method].compute()
                logged[f"{stage}/abpc/{method}/count"] = faithfulness["count"]
                if "abpc" in faithfulness:
                    logged[f"{stage}/abpc/{method}/abpc"] = faithfulness["abpc"]
        for metric in [*self.localization.values(), *self.faithfulness.values(), self.unboxed]:
            metric.reset()
        # already synchronized by compute(); sync_dist averages identical values and keeps DDP logging quiet
        pl_module.log_dict({name: value.float() for name, value in logged.items()}, sync_dist=True)
        hparams = pl_module.hparams
        class_names = getattr(hparams, "class_names", None) or [str(i) for i in range(hparams.num_classes)]
        config = getattr(trainer.datamodule, "input_config", None)
        mean, std = config[1:] if config else (pl_module.data_config["mean"], pl_module.data_config["std"])
        self.panel.log(trainer, stage, class_names, mean, std)
