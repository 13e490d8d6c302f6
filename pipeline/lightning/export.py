"""ExportExplained: the run's checkpoint as an explained checkpoint at the end of fit, and a W&B model artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from pipeline.explained import export_checkpoint, read_card
from pipeline.lightning.run import checkpoint_paths, run_folder, wandb_logger
from pipeline.lightning.wandb_offline import stage_in_run_folder


def log_wandb_artifact(run: Any, path: str | Path, aliases: list[str] | None = None, staged: Path | None = None) -> Any:
    """Log an explained checkpoint to a W&B run as a `model` artifact whose metadata is the card (offline too).

    Args:
        run: the wandb run (`WandbLogger.experiment`).
        path: the explained checkpoint.
        aliases: artifact aliases, e.g. ["latest", "best"].
        staged: a copy of `path` nothing will change before `wandb sync` (`stage_in_run_folder`): W&B uploads it
            from there instead of copying the file into its staging folder in the user's home.

    Returns:
        The logged wandb.Artifact.
    """
    import wandb  # only runs that log to W&B need it

    card = read_card(path)
    artifact = wandb.Artifact(
        f"explained-{run.id}",
        type="model",
        description=f"{card['timm_model']} explained checkpoint ({len(card['class_names'])} classes)",
        metadata=card,
    )
    if staged is None:
        artifact.add_file(str(path), name=Path(path).name)
    else:
        artifact.add_file(str(staged), name=Path(path).name, policy="immutable")
    return run.log_artifact(artifact, aliases=aliases or ["latest"])


def consolidate_checkpoint(folder: Path, out: Path) -> Path:
    """A sharded Lightning checkpoint (ModelParallelStrategy's default: a folder of torch.distributed.checkpoint
    shards plus meta.pt) as one checkpoint file with the full weights, read by this one process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(folder, out)
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    checkpoint.update(torch.load(folder / "meta.pt", map_location="cpu", weights_only=True))
    torch.save(checkpoint, out)
    return out


class ExportExplained(pl.Callback):
    """At the end of fit: the run's best (or last) checkpoint as an explained checkpoint in the run folder, also
    logged as a W&B `model` artifact when the run logs to W&B. A sharded checkpoint (FSDP2 under
    ModelParallelStrategy) is gathered into full weights on rank 0 first.

    Args:
        checkpoint: "best" (the monitored ModelCheckpoint's best, else the last) or "last" (the newest file any
            ModelCheckpoint wrote: with the configs' two callbacks, last.ckpt).
        filename: the file written in the run folder.
    """

    def __init__(self, checkpoint: Literal["best", "last"] = "best", filename: str = "model.agcam") -> None:
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        self.checkpoint = checkpoint
        self.filename = filename
        self.exported: dict[str, Any] | None = None  # what was exported from where (RunSummary reports it)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best, last = checkpoint_paths(trainer)
        ckpt_path = (best if self.checkpoint == "best" else None) or last
        if not ckpt_path:
            rank_zero_warn("ExportExplained: the run saved no checkpoint (add a ModelCheckpoint); nothing exported")
            return
        out = run_folder(trainer) / self.filename
        if Path(ckpt_path).is_dir():  # sharded: every process's shard file is in the folder
            with tempfile.TemporaryDirectory(dir=out.parent) as folder:
                consolidated = consolidate_checkpoint(Path(ckpt_path), Path(folder) / Path(ckpt_path).name)
                path = export_checkpoint(consolidated, out)  # (named as its source: the card names that file)
        else:
            path = export_checkpoint(ckpt_path, out)
        source = read_card(path)["validation"] or {}
        self.exported = {
            "path": str(path),
            "from": str(ckpt_path),
            "kind": "best" if ckpt_path == best else "last",
            **{key: (source.get("checkpoint") or {}).get(key) for key in ("epoch", "global_step")},
        }
        logger = wandb_logger(trainer)
        if logger is not None:
            staged = stage_in_run_folder(
                path, run_folder(trainer), f"{path.stem}-step{trainer.global_step}{path.suffix}"
            )
            log_wandb_artifact(logger.experiment, path, aliases=["latest", self.checkpoint], staged=staged)
        rank_zero_info(f"Explained checkpoint: {path} (from {ckpt_path})")
