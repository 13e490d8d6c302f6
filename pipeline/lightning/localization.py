"""LocalizationCallback: explain validation images while the model trains, score where it looks, log it."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from pipeline.explained import EXPLAINER_KEY
from pipeline.lightning.panel import HeatmapPanel
from pipeline.lightning.run import wandb_logger
from pipeline.scoring import LocalizationScorer, ScoringOptions, class_rows


class LocalizationCallback(pl.Callback):
    """Every validation epoch: explain the labelled class(es), measure localization, log numbers and heatmaps.

    A thin adapter over `pipeline.scoring.LocalizationScorer` (the loop `agcam evaluate` runs too). Metrics are
    logged as `val/loc/<method>/<metric>` (pixel_accuracy, iou, dice, precision, recall, pointing_game, cases,
    skipped, unboxed, mass_in_box) and, with ABPC on, `val/abpc/<method>/{abpc,count}`, synchronized across DDP
    processes; with a W&B logger also a per-class table `val/loc/<method>/per_class` each epoch (shortcuts are
    often per class).
    Only correctly classified cases are scored; `skipped` counts the others. The explainers run on the plain timm
    model (`pl_module.model`) with autograd re-enabled inside Lightning's inference mode, through
    `torch.autograd.grad` only: parameter gradients, optimizer state and DDP gradient buckets are never touched.
    The same runs on `test` as `test/loc/...`.

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
        *,
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
        self.options = ScoringOptions(
            methods=methods or ("agcam",),
            threshold=threshold,
            use_masks=use_masks,
            pointing_tolerance=pointing_tolerance,
            abpc_images=abpc_images,
            abpc_steps=abpc_steps,
        )  # checked here, when the config is read, not when fit starts
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.methods = list(self.options.methods)
        self.threshold = self.options.threshold
        self.use_masks = use_masks
        self.max_batches = max_batches
        self.every_n_epochs = every_n_epochs
        self.panel = HeatmapPanel(panel_size, self.threshold)
        self.active = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        multi_label = bool(getattr(pl_module.hparams, "multi_label", False))
        self.scorer = LocalizationScorer(pl_module.model, self.options, multi_label=multi_label).to(
            pl_module.device
        )  # metrics held by a callback are not moved by Lightning

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[EXPLAINER_KEY] = {"methods": list(self.methods), "threshold": self.threshold}

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
        self.scorer.reset()

    def _explain_batch(self, pl_module: pl.LightningModule, outputs: Any, batch: dict) -> None:
        images = batch["image"]
        logits = outputs["logits"] if isinstance(outputs, dict) and "logits" in outputs else pl_module(images)
        cases, maps = self.scorer.update(images, logits, batch)
        if not self.panel.full:
            preds = logits.argmax(dim=-1)
            first_boxes = [row[0] for row in cases.boxes]
            first_maps = {method: method_maps[:, 0] for method, method_maps in maps.items()}
            self.panel.add(images, batch["image_id"], cases.targets[:, 0], preds, first_boxes, first_maps)

    def _finish_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """compute() on every process (it synchronizes), log, reset; the panel on rank zero only."""
        logged = {}
        results = self.scorer.compute()
        for method, values in results.items():
            for name, value in values.items():
                group, _, metric = name.rpartition("/")
                prefix = f"{stage}/{group}/{method}" if group else f"{stage}/loc/{method}"
                if value.ndim == 0:
                    logged[f"{prefix}/{metric}"] = value.float()
        self.scorer.reset()
        # already synchronized by compute(); sync_dist averages identical values and keeps DDP logging quiet
        pl_module.log_dict(logged, sync_dist=True)
        hparams = pl_module.hparams
        class_names = getattr(hparams, "class_names", None) or [str(i) for i in range(hparams.num_classes)]
        input_config = getattr(trainer.datamodule, "input_config", None) or pl_module.input_config
        self.panel.log(trainer, stage, class_names, input_config)
        log_class_tables(trainer, stage, results, class_names)


@rank_zero_only
def log_class_tables(
    trainer: pl.Trainer, stage: str, results: dict[str, dict[str, torch.Tensor]], class_names: list[str]
) -> None:
    """One W&B table per method: a row per class that had scored cases, its case count and mean scores."""
    logger = wandb_logger(trainer)
    if logger is None:
        return
    for method, values in results.items():
        rows = class_rows(values, class_names)
        if rows:
            columns = ["class", *next(iter(rows.values()))]
            data = [[name, *row.values()] for name, row in rows.items()]
            logger.log_table(f"{stage}/loc/{method}/per_class", columns=columns, data=data, step=trainer.global_step)
