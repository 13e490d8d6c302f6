"""RunSummary: what a finished run produced, printed and written as summary.json in the run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from pipeline.data.inventory import SplitInventory, split_inventory
from pipeline.explained import VALIDATION_KEY
from pipeline.files import write_text
from pipeline.lightning.run import checkpoint_paths, run_folder, wandb_logger
from pipeline.lightning.wandb_offline import WriteFailures, continue_steps

WANDB_ID_KEY = "wandb_run_id"


def last_validation(trainer: pl.Trainer) -> dict[str, Any]:
    """What the latest validation measured and on what data, so an explained checkpoint can carry it.

    Returns:
        epoch, global_step, metrics (every finite `val/` scalar by its logged name), dataset (source name, root,
        split, image count) and input (the InputConfig fed to the model, as a dict; None before setup).
    """
    metrics = {
        name: float(value)
        for name, value in sorted(trainer.callback_metrics.items())
        if name.startswith("val/") and not math.isnan(float(value))
    }
    datamodule = trainer.datamodule
    source = getattr(datamodule, "source", None)
    val_set = getattr(datamodule, "datasets", {}).get("val")
    input_config = getattr(datamodule, "input_config", None)
    return {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "metrics": metrics,
        "dataset": {
            "name": type(source).__name__ if source is not None else None,
            "root": str(source.root) if hasattr(source, "root") else None,
            "split": "val",
            "images": len(val_set) if val_set is not None else None,
        },
        "input": None if input_config is None else input_config.to_dict(),
    }


def data_inventory(trainer: pl.Trainer) -> dict[str, SplitInventory]:
    """What each split the run uses holds (images, with boxes, per class), counted from the data module's index."""
    datamodule = trainer.datamodule
    source = getattr(datamodule, "source", None)
    if source is None:
        return {}
    return {split: split_inventory(source, split) for split in getattr(datamodule, "datasets", {})}


def per_class_results(trainer: pl.Trainer) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{stage: {method: {class: {cases, scores}}}} of the latest epoch, from callbacks that keep it."""
    found: dict[str, dict] = {}
    for callback in trainer.callbacks:
        found.update(getattr(callback, "per_class", {}))
    return found


class RunSummary(pl.Callback):
    """At the end of fit: epochs, final metrics by name, per-class localization, what each split held (a split
    without boxes says localization was not scored), checkpoint and W&B paths. At fit start the same split counts
    go to the terminal and the W&B run summary. Every checkpoint also gets the W&B run id (so `--ckpt_path` resumes
    the same W&B run) and its last validation (for `agcam export`)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        inventory = data_inventory(trainer)
        for counts in inventory.values():
            if counts.with_boxes == 0:
                rank_zero_warn(counts.localization_note())
        logger = wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero and inventory:
            logger.experiment.summary.update(
                {f"data/{split}/{key}": value for split, counts in inventory.items() for key, value in _counts(counts)}
            )

    validated_at: dict[str, int] | None = None  # epoch and step of the latest validation (the metrics reported)

    def __init__(self) -> None:
        self.wandb_failures = WriteFailures()

    @rank_zero_only
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = wandb_logger(trainer)
        if stage == "fit" and logger is not None:
            run = logger.experiment
            continue_steps(run, Path(run.dir).parent.parent)  # a resumed run id: after its earlier offline rows
            self.wandb_failures.attach()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_at = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        logger = wandb_logger(trainer)
        if logger is not None:
            checkpoint[WANDB_ID_KEY] = logger.version
        checkpoint[VALIDATION_KEY] = last_validation(trainer)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = self.collect(trainer)
        summary["metrics_from"] = self.validated_at
        exported = [cb.exported for cb in trainer.callbacks if getattr(cb, "exported", None) is not None]
        summary["explained_checkpoint"] = exported[0] if exported else None
        path = write_text(run_folder(trainer) / "summary.json", json.dumps(summary, indent=2))
        print(format_summary(summary, path))  # the end-of-run summary of `agcam fit`, for the terminal
        self.wandb_failures.raise_if_any()

    @staticmethod
    def collect(trainer: pl.Trainer) -> dict[str, Any]:
        metrics = {
            name: value.item() if isinstance(value, torch.Tensor) else value
            for name, value in sorted(trainer.callback_metrics.items())
        }
        best, last = checkpoint_paths(trainer)
        logger = wandb_logger(trainer)
        datamodule = trainer.datamodule
        return {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": {name: value for name, value in metrics.items() if not math.isnan(value)},
            "best_checkpoint": best,
            "last_checkpoint": last,
            "run_folder": str(run_folder(trainer)),
            "wandb_run_dir": str(Path(logger.experiment.dir).parent) if logger is not None else None,
            "skipped_samples": getattr(datamodule, "skipped_samples", 0),
            "skipped_annotations": len(getattr(getattr(datamodule, "source", None), "skipped", [])),
            "clipped_boxes": len(getattr(getattr(datamodule, "source", None), "clipped", [])),
            "data": {split: dict(_counts(counts)) for split, counts in data_inventory(trainer).items()},
            "per_class": per_class_results(trainer),
        }


def format_summary(summary: dict[str, Any], path: Path) -> str:
    """A short end-of-run report for the terminal."""
    lines = [f"Run finished after {summary['epochs']} epochs ({summary['global_step']} steps)."]
    for name, value in summary["metrics"].items():
        if name.startswith(("val/", "test/")):
            lines.append(f"  {name:<32} {value:.4f}")
    lines.extend(f"  {counts['note']}" for counts in summary.get("data", {}).values())
    if summary.get("metrics_from"):
        where = summary["metrics_from"]
        lines.insert(1, f"  metrics of the last validation (epoch {where['epoch']}, step {where['global_step']}):")
    lines.append(f"  best checkpoint: {summary['best_checkpoint']}")
    lines.append(f"  last checkpoint: {summary['last_checkpoint']}")
    if summary["wandb_run_dir"]:
        lines.append(f"  W&B offline run: {summary['wandb_run_dir']}  (upload later with `wandb sync`)")
    if summary["skipped_samples"] or summary["skipped_annotations"] or summary["clipped_boxes"]:
        lines.append(
            f"  bad input: {summary['skipped_samples']} unreadable images skipped, "
            f"{summary['skipped_annotations']} samples/boxes dropped while indexing, "
            f"{summary['clipped_boxes']} boxes clipped"
        )
    if summary.get("explained_checkpoint"):
        exported = summary["explained_checkpoint"]
        lines.append(
            f"  explained checkpoint: {exported['path']} (the {exported['kind']} checkpoint: epoch "
            f"{exported['epoch']}, step {exported['global_step']})"
        )
    lines.append(f"  summary: {path}")
    return "\n".join(lines)


def _counts(counts: SplitInventory) -> list[tuple[str, Any]]:
    """(key, value) of a split's counts for summary.json and W&B: images, with_boxes, unboxed, note."""
    return [
        ("images", counts.images),
        ("with_boxes", counts.with_boxes),
        ("unboxed", counts.unboxed),
        ("note", counts.localization_note()),
    ]
