"""LocalizationCallback: explain validation images while the model trains, score where it looks, log it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import nn

from pipeline.data.selection import class_round_robin
from pipeline.explained import EXPLAINER_KEY
from pipeline.files import write_text
from pipeline.inputs import InputConfig
from pipeline.lightning.panel import HeatmapPanel
from pipeline.lightning.run import run_folder, wandb_logger
from pipeline.metrics import RELIANCE_SCORES, ClassAtlas
from pipeline.render import render_atlas, save_png
from pipeline.scoring import (
    LocalizationScorer,
    RelianceScorer,
    ScoringOptions,
    class_rows,
)


class LocalizationCallback(pl.Callback):
    """Every validation epoch: explain the labelled class(es), measure localization, log numbers and heatmaps.

    A thin adapter over `pipeline.scoring.LocalizationScorer` (the loop `agcam evaluate` runs too). Metrics are
    logged as `val/loc/<method>/<metric>` (pixel_accuracy, iou, dice, precision, recall, pointing_game, cases,
    skipped, unboxed, mass_in_box) and, with ABPC on, `val/abpc/<method>/{abpc,count}`, synchronized across DDP
    processes; per class (shortcuts are often per class) as a W&B table `val/loc/<method>/per_class` each epoch,
    or with another logger as rows of `<stage>_per_class.csv` in the run folder, and in summary.json.
    Only correctly classified cases are scored; `skipped` counts the others. The explainers run on the plain timm
    model (`pl_module.model`) with autograd re-enabled inside Lightning's inference mode, through
    `torch.autograd.grad` only: parameter gradients, optimizer state and DDP gradient buckets are never touched.
    The same runs on `test` as `test/loc/...`. On the batches it explains, the module's validation forward also
    records what AG-CAM and rollout need (`ViTClassifier.evaluation_forward`), so they replay from it instead of
    running the model again; that forward is the explainers' own (float32 under bf16-mixed too).

    Args:
        methods: explainers to run side by side: "agcam" (default), "rollout", "lrp", "grad_rollout".
        threshold: heatmap threshold of the box protocol.
        max_batches: explain at most this many validation batches per epoch (None: all); warns when that leaves
            part of the split out. On class-ordered data the first batches hold the first classes: prefer max_images.
        max_images: explain a fixed subset of this many validation images (None: all), chosen once by a seeded
            class round-robin (`pipeline.data.selection`): every class as evenly as the split allows, the same
            images every epoch, each explained by exactly one process under DDP.
        selection_seed: the seed of that choice and of the panel's.
        every_n_epochs: explain on every n-th validation epoch only; other epochs cost nothing.
        panel_size: validation images rendered as heatmap overlays each epoch (0 turns the panel off), taken in
            the same class round-robin (so several classes show), the same images every epoch.
        abpc_images: images per process per epoch also scored for faithfulness (ABPC; single-label only).
        abpc_steps: perturbation steps of ABPC.
        use_masks: score against ground-truth masks (when the data has them) instead of boxes.
        pointing_tolerance: pixels of slack for the pointing game.
        reliance: also measure object reliance (`pipeline.metrics.reliance`): accuracy with the labelled objects
            erased (`val/reliance/acc_object_erased`) and with everything else erased
            (`val/reliance/acc_context_erased`), beside `acc`, `chance` and `images` of the same images; two extra
            forwards per image, on the batches the callback explains; single-label data with boxes (or masks).
        atlas: also draw the class atlas (`pipeline.metrics.ClassAtlas`) each epoch: per class, the mean normalized
            AG-CAM heatmap of the correctly classified images, one tile per class, as the W&B image
            `<stage>/atlas/agcam` and a PNG `atlas/<stage>-epoch<NNN>.png` in the run folder. Needs "agcam" in
            `methods`.
    """

    def __init__(
        self,
        *,
        methods: list[str] | None = None,
        threshold: float = 0.5,
        max_batches: int | None = None,
        max_images: int | None = None,
        selection_seed: int = 0,
        every_n_epochs: int = 1,
        panel_size: int = 8,
        abpc_images: int = 0,
        abpc_steps: int = 11,
        use_masks: bool = False,
        pointing_tolerance: int = 0,
        reliance: bool = False,
        atlas: bool = False,
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
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 (or None for every image), got {max_images}")
        if max_images is not None and max_batches is not None:
            raise ValueError("give max_images or max_batches, not both")
        self.max_batches = max_batches
        self.max_images = max_images
        self.selection_seed = selection_seed
        self.selected: dict[str, set[str] | None] = {}  # split -> image ids to explain (None: all)
        self.per_class: dict[str, dict[str, dict[str, dict[str, float]]]] = {}  # stage -> method -> class -> scores
        self.every_n_epochs = every_n_epochs
        self.panel = HeatmapPanel(panel_size, self.threshold)
        self.active = False
        self.reliance = reliance
        self.reliance_scorer: RelianceScorer | None = None
        if atlas and "agcam" not in self.methods:
            raise ValueError(f"atlas: true draws AG-CAM maps: add 'agcam' to methods (got {self.methods})")
        self.atlas = atlas
        self.class_atlas: ClassAtlas | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        multi_label = bool(getattr(pl_module.hparams, "multi_label", False))
        if multi_label and isinstance(trainer.strategy, ModelParallelStrategy):
            raise ValueError(
                "the LocalizationCallback is not available for multi-label data under ModelParallelStrategy (FSDP2): "
                "images carry different numbers of classes, so processes would run different numbers of backward "
                "passes, each gathering parameters from all of them; use DDP (configs/ddp.yaml) for multi-label data"
            )
        self.scorer = LocalizationScorer(cast(nn.Module, pl_module.model), self.options, multi_label=multi_label).to(
            pl_module.device
        )  # metrics held by a callback are not moved by Lightning
        if self.reliance:
            if multi_label:
                raise ValueError("reliance: true is for single-label data (one labelled class per image); set it false")
            scorer = RelianceScorer(
                cast(nn.Module, pl_module.model), pl_module.hparams.num_classes, use_masks=self.use_masks
            )
            self.reliance_scorer = scorer.to(pl_module.device)
        if self.atlas:
            grid = tuple(cast(Any, pl_module.model).patch_embed.grid_size)
            self.class_atlas = ClassAtlas(pl_module.hparams.num_classes, grid).to(pl_module.device)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[EXPLAINER_KEY] = {"methods": list(self.methods), "threshold": self.threshold}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == "fit"
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        self.active = not trainer.sanity_checking and (due or not fitting)
        self._start_epoch(trainer, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.active = True
        self._start_epoch(trainer, "test")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        """Wholly explained batches: the evaluation step's forward records what the explainers need (no second
        forward). A batch explained in part is explained by the explainers' own forward over its selected images."""
        explained = self._explained_images(batch, batch_idx)
        if explained and all(explained) and self.scorer.can_record and hasattr(pl_module, "evaluation_forward"):
            pl_module.evaluation_forward = self.scorer.forward

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if hasattr(pl_module, "evaluation_forward"):
            pl_module.evaluation_forward = None
        keep = self._explained_images(batch, batch_idx)
        if all(keep):
            self._explain_batch(pl_module, outputs, batch)
        elif any(keep):
            self._explain_batch(pl_module, *_subset(batch, outputs, keep))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:
            self._finish_epoch(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_epoch(trainer, pl_module, "test")

    def _explained_images(self, batch: dict, batch_idx: int) -> list[bool]:
        """Which images of the batch this epoch explains (none when inactive or past max_batches)."""
        if not self.active or (self.max_batches is not None and batch_idx >= self.max_batches):
            return [False] * len(batch["image_id"])
        selected = self.selected.get(self.split)
        return [selected is None or image_id in selected for image_id in batch["image_id"]]

    def _start_epoch(self, trainer: pl.Trainer, split: str) -> None:
        self.split = split
        if split not in self.selected:
            self._choose(trainer, split)
        self.panel.reset()
        self.scorer.reset()
        if self.reliance_scorer is not None:
            self.reliance_scorer.reset()
        if self.class_atlas is not None:
            self.class_atlas.reset()

    def _choose(self, trainer: pl.Trainer, split: str) -> None:
        """Once per split: the images to explain (max_images) and the panel's, by a seeded class round-robin."""
        datamodule = trainer.datamodule
        raw = getattr(getattr(datamodule, "datasets", {}).get(split), "raw", None)
        if raw is None or not hasattr(raw, "id_and_class"):
            if self.max_images is not None:
                raise ValueError(f"max_images needs a data module whose {split} dataset tells image ids and classes")
            self.selected[split] = None  # explain everything; the panel takes the first images
            return
        if self.max_images is not None and isinstance(trainer.strategy, ModelParallelStrategy):
            raise ValueError(
                "max_images is not available under ModelParallelStrategy (FSDP2): every process must explain the same "
                "number of batches, since each explainer step gathers parameters from all of them"
            )
        entries = [raw.id_and_class(index) for index in range(len(raw))]
        order = class_round_robin([label for _, label in entries], self.selection_seed)
        chosen = order if self.max_images is None else order[: self.max_images]
        self.selected[split] = None if self.max_images is None else {entries[index][0] for index in chosen}
        seen_here = set(datamodule.eval_indices(split)) if hasattr(datamodule, "eval_indices") else None
        self.panel.choose([entries[i][0] for i in chosen if seen_here is None or i in seen_here])

    def _explain_batch(self, pl_module: pl.LightningModule, outputs: Any, batch: dict) -> None:
        images = batch["image"]
        logits = outputs["logits"] if isinstance(outputs, dict) and "logits" in outputs else pl_module(images)
        cases, maps = self.scorer.update(images, logits, batch)
        if self.reliance_scorer is not None:
            self.reliance_scorer.update(images, logits, batch)
        if self.class_atlas is not None:
            valid = cases.valid
            self.class_atlas.update(maps["agcam"][valid], cases.targets[valid], cases.correct[valid])
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
        if self.max_batches is not None and stage == "val" and trainer.num_val_batches:
            total = trainer.num_val_batches[0]
            if total > self.max_batches:
                rank_zero_warn(
                    f"LocalizationCallback: max_batches={self.max_batches} explains {self.max_batches} of {total} "
                    "validation batches; on class-ordered data that leaves whole classes out (max_images does not)"
                )
        # already synchronized by compute(); sync_dist averages identical values and keeps DDP logging quiet
        pl_module.log_dict(logged, sync_dist=True)
        hparams = pl_module.hparams
        class_names = getattr(hparams, "class_names", None) or [str(i) for i in range(hparams.num_classes)]
        input_config = getattr(trainer.datamodule, "input_config", None) or pl_module.input_config
        self.panel.log(trainer, stage, class_names, cast(InputConfig, input_config))
        self.per_class[stage] = {method: class_rows(values, class_names) for method, values in results.items()}
        log_class_tables(trainer, stage, results, class_names)
        if trainer.loggers and wandb_logger(trainer) is None:  # e.g. CSVLogger: a CSV beside its metrics.csv
            folder = run_folder(trainer)  # on every process: it may broadcast under DDP
            write_class_rows(trainer, folder / f"{stage}_per_class.csv", self.per_class[stage])
        if self.reliance_scorer is not None:
            self._log_reliance(trainer, pl_module, stage, class_names)
        if self.class_atlas is not None:
            atlas = self.class_atlas.compute()  # synchronizes: on every process
            self.class_atlas.reset()
            log_atlas(trainer, stage, atlas, class_names)

    def _log_reliance(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, class_names: list[str]
    ) -> None:
        """`<stage>/reliance/<score>` (synchronized sums) and a per-class W&B table; nothing for an empty epoch."""
        values = self.reliance_scorer.compute()  # synchronizes: on every process
        self.reliance_scorer.reset()
        if values["images"] == 0:
            return
        scalars = {f"{stage}/reliance/{name}": value.float() for name, value in values.items() if value.ndim == 0}
        pl_module.log_dict(scalars, sync_dist=True)
        rows = class_rows(values, class_names, count="images", scores=RELIANCE_SCORES)
        self.per_class.setdefault(stage, {})["reliance"] = rows  # summary.json's per_class, beside the methods
        log_reliance_table(trainer, stage, rows)


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


@rank_zero_only
def write_class_rows(trainer: pl.Trainer, path: Path, per_method: dict[str, dict[str, dict[str, float]]]) -> None:
    """Append this epoch's per-class rows to the CSV file `path` (rewritten atomically)."""
    rows = [
        {"epoch": trainer.current_epoch, "step": trainer.global_step, "method": method, "class": name, **scores}
        for method, classes in per_method.items()
        for name, scores in classes.items()
    ]
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.read_text() if path.is_file() else ""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    if not previous:
        writer.writeheader()
    writer.writerows(rows)
    write_text(path, previous + text.getvalue())


def _subset(batch: dict, outputs: Any, keep: list[bool]) -> tuple[Any, dict]:
    """(outputs, batch) of the images where `keep` is True: a batch of their own, and their rows of the logits."""
    rows = torch.tensor(keep, device=batch["image"].device)
    subset = {
        key: value[rows] if isinstance(value, torch.Tensor) else [item for item, k in zip(value, keep) if k]
        for key, value in batch.items()
        if isinstance(value, torch.Tensor | list)
    }
    if isinstance(outputs, dict) and "logits" in outputs:
        outputs = {"logits": outputs["logits"][rows]}
    return outputs, subset


@rank_zero_only
def log_reliance_table(trainer: pl.Trainer, stage: str, rows: dict[str, dict[str, float]]) -> None:
    """The per-class object reliance as one W&B table (`<stage>/reliance/per_class`)."""
    logger = wandb_logger(trainer)
    if logger is None or not rows:
        return
    columns = ["class", *next(iter(rows.values()))]
    data = [[name, *row.values()] for name, row in rows.items()]
    logger.log_table(f"{stage}/reliance/per_class", columns=columns, data=data, step=trainer.global_step)


@rank_zero_only
def log_atlas(trainer: pl.Trainer, stage: str, atlas: dict[str, torch.Tensor], class_names: list[str]) -> Path | None:
    """Draw the class atlas; a PNG under the run folder and, with W&B, the image `<stage>/atlas/agcam`."""
    if not atlas["images"].any():
        return None
    picture = render_atlas(atlas["mean"], atlas["images"], class_names)
    path = save_png(picture, run_folder(trainer) / "atlas" / f"{stage}-epoch{trainer.current_epoch:03d}.png")
    logger = wandb_logger(trainer)
    if logger is not None:
        logger.log_image(f"{stage}/atlas/agcam", [picture], step=trainer.global_step, caption=["mean AG-CAM per class"])
    return path
