"""RunSummary: what a finished run produced, printed and written as summary.json in the run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

WANDB_ID_KEY = "wandb_run_id"


def run_folder(trainer: pl.Trainer) -> Path:
    """Where a run's checkpoints live; summary.json and heatmap panels go beside them."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        return Path(checkpoint.dirpath).parent
    return Path(trainer.log_dir or trainer.default_root_dir)


def wandb_logger(trainer: pl.Trainer) -> WandbLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


class RunSummary(pl.Callback):
    """At the end of fit: epochs, final metrics by name, checkpoint and W&B paths (and the W&B run id in
    every checkpoint, so `--ckpt_path` resumes the same W&B run)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        logger = wandb_logger(trainer)
        if logger is not None:
            checkpoint[WANDB_ID_KEY] = logger.version

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = self.collect(trainer)
        path = run_folder(trainer) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))
        print(format_summary(summary, path))

    @staticmethod
    def collect(trainer: pl.Trainer) -> dict[str, Any]:
        metrics = {
            name: value.item() if isinstance(value, torch.Tensor) else value
            for name, value in sorted(trainer.callback_metrics.items())
        }
        checkpoint = trainer.checkpoint_callback
        logger = wandb_logger(trainer)
        datamodule = trainer.datamodule
        return {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": {name: value for name, value in metrics.items() if not math.isnan(value)},
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
            "run_folder": str(run_folder(trainer)),
            "wandb_run_dir": str(Path(logger.experiment.dir).parent) if logger is not None else None,
            "skipped_samples": getattr(datamodule, "skipped_samples", 0),
        }


def format_summary(summary: dict[str, Any], path: Path) -> str:
    """A short end-of-run report for the terminal."""
    lines = [f"Run finished after {summary['epochs']} epochs ({summary['global_step']} steps)."]
    for name, value in summary["metrics"].items():
        if name.startswith(("val/", "test/")):
            lines.append(f"  {name:<32} {value:.4f}")
    lines.append(f"  best checkpoint: {summary['best_checkpoint']}")
    lines.append(f"  last checkpoint: {summary['last_checkpoint']}")
    if summary["wandb_run_dir"]:
        lines.append(f"  W&B offline run: {summary['wandb_run_dir']}  (upload later with `wandb sync`)")
    if summary["skipped_samples"]:
        lines.append(f"  skipped unreadable samples: {summary['skipped_samples']}")
    lines.append(f"  summary: {path}")
    return "\n".join(lines)
