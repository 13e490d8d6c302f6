"""Where a run writes and what it logs to: the run folder, its checkpoints, its W&B logger."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger


def run_folder(trainer: pl.Trainer) -> Path:
    """Where a run's checkpoints live; summary.json, config.yaml, heatmap panels and model.agcam go beside them.

    Before the checkpoint callback has resolved its folder (at setup), the folder it will resolve: Lightning's
    `<save_dir>/<name>/<version>` of the first logger.
    """
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        return Path(checkpoint.dirpath).parent
    if trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version
    return Path(trainer.default_root_dir)


def checkpoint_paths(trainer: pl.Trainer) -> tuple[str | None, str | None]:
    """(best, last): the monitored checkpoint's best file, and the newest file any checkpoint callback wrote.

    Lightning 2.6 rewrites a monitored callback's `last.ckpt` only in epochs that improve the metric, so the
    configs save `last.ckpt` with a second, monitor-free callback; the newest file is the last state either way.
    """
    callbacks = trainer.checkpoint_callbacks
    best = next((cb.best_model_path for cb in callbacks if cb.monitor and cb.best_model_path), None)
    written = [
        path for cb in callbacks for path in (cb.best_model_path, cb.last_model_path) if path and Path(path).exists()
    ]  # a file, or a folder of shards (ModelParallelStrategy)
    last = max(written, key=lambda path: Path(path).stat().st_mtime_ns) if written else None
    return best, last


def wandb_logger(trainer: pl.Trainer) -> WandbLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)
