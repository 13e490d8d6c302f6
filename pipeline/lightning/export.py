"""Explained checkpoints from training outputs: a Lightning checkpoint (or timm weights) made self-describing.

`export_checkpoint` writes the file `pipeline.explained` defines; `ExportExplained` does it at the end of fit and
logs the file as a W&B model artifact when the run logs to W&B.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import timm
import torch
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from pipeline.explained import ExplainedModel, make_card, read_card, save_explained
from pipeline.model import ViTClassifier
from pipeline.summary import VALIDATION_KEY, run_folder, wandb_logger

MODEL_HPARAMS = ("model_name", "num_classes", "multi_label", "class_names", "model_kwargs")  # what builds the ViT
DEFAULT_EXPLAINER = {"methods": ["agcam"], "threshold": 0.5}


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ViTClassifier checkpoint, loaded as plain tensors and containers (weights_only: no code runs).

    Args:
        path: a `.ckpt` file written by `agcam fit`.

    Returns:
        The checkpoint dict, with at least `hyper_parameters` and `state_dict`.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
    ) as error:  # what torch raises for non-checkpoints
        problem = f"torch.load(weights_only=True) failed with {type(error).__name__}"  # its text advises unsafe loading
        raise ValueError(f"{path}: not a readable Lightning checkpoint ({problem})") from None
    if not isinstance(checkpoint, dict) or not {"hyper_parameters", "state_dict"} <= checkpoint.keys():
        raise ValueError(f"{path}: not a Lightning checkpoint of a ViTClassifier (no hyper_parameters / state_dict)")
    return checkpoint


def explained_from_lightning(path: str | Path) -> ExplainedModel:
    """The ViT of a Lightning checkpoint with its card: architecture, input, classes and last validation.

    Args:
        path: a `.ckpt` file written by `agcam fit`.

    Returns:
        The model, on CPU in eval mode.
    """
    checkpoint = read_lightning_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    module = ViTClassifier(**{name: hparams[name] for name in MODEL_HPARAMS if name in hparams})
    prefix = "model."
    weights = {
        name[len(prefix) :]: tensor for name, tensor in checkpoint["state_dict"].items() if name.startswith(prefix)
    }
    module.model.load_state_dict(weights, strict=True)
    validation = dict(checkpoint.get(VALIDATION_KEY) or {})
    input_config = validation.pop("input", None) or {
        "image_size": module.data_config["input_size"][1:],
        "mean": module.data_config["mean"],
        "std": module.data_config["std"],
    }
    explainer = validation.pop("explainer", None) or DEFAULT_EXPLAINER
    card = make_card(
        hparams["model_name"],
        hparams.get("model_kwargs"),
        hparams["num_classes"],
        input_config["image_size"],
        input_config["mean"],
        input_config["std"],
        hparams.get("class_names"),
        hparams.get("multi_label", False),
        explainer["methods"],
        explainer["threshold"],
        validation or None,
    )
    return ExplainedModel(module.model, card)


def explained_from_timm(
    model_name: str,
    weights_path: str | Path,
    class_names: list[str],
    multi_label: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> ExplainedModel:
    """A timm ViT with a fine-tuned weights file (state dict, .safetensors or .pth), its input from timm's config.

    Args:
        model_name: the timm model name.
        weights_path: the weights; the head must have one output per class.
        class_names: the classes of the head, in order.
        multi_label: whether the head was trained with a sigmoid per class.
        model_kwargs: extra timm constructor arguments.

    Returns:
        The model, on CPU in eval mode, with a card without validation metrics.
    """
    if not Path(weights_path).is_file():
        raise FileNotFoundError(f"{weights_path}: no such weights file")
    module = ViTClassifier(model_name, len(class_names), multi_label, class_names, model_kwargs=model_kwargs)
    try:
        timm.models.load_checkpoint(module.model, str(weights_path), strict=True, weights_only=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_path}: does not fit {model_name} ({str(error).splitlines()[0]})") from None
    data_config = module.data_config
    card = make_card(
        model_name,
        model_kwargs,
        len(class_names),
        data_config["input_size"][1:],
        data_config["mean"],
        data_config["std"],
        class_names,
        multi_label,
        DEFAULT_EXPLAINER["methods"],
        DEFAULT_EXPLAINER["threshold"],
    )
    return ExplainedModel(module.model, card)


def export_checkpoint(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write the explained checkpoint of a Lightning checkpoint.

    Args:
        ckpt_path: a `.ckpt` file written by `agcam fit`.
        out: the explained checkpoint to write (conventionally `*.agcam`).

    Returns:
        The path written.
    """
    explained = explained_from_lightning(ckpt_path)
    return save_explained(out, explained.model, explained.card)


def log_wandb_artifact(run: Any, path: str | Path, aliases: list[str] | None = None) -> Any:
    """Log an explained checkpoint to a W&B run as a `model` artifact whose metadata is the card (offline too).

    Args:
        run: the wandb run (`WandbLogger.experiment`).
        path: the explained checkpoint.
        aliases: artifact aliases, e.g. ["latest", "best"].

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
    artifact.add_file(str(path), name=Path(path).name)
    return run.log_artifact(artifact, aliases=aliases or ["latest"])


class ExportExplained(pl.Callback):
    """At the end of fit: the run's best (or last) checkpoint as an explained checkpoint in the run folder, also
    logged as a W&B `model` artifact when the run logs to W&B.

    Args:
        checkpoint: "best" (the ModelCheckpoint's best, else its last) or "last".
        filename: the file written in the run folder.
    """

    def __init__(self, checkpoint: Literal["best", "last"] = "best", filename: str = "model.agcam") -> None:
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        self.checkpoint = checkpoint
        self.filename = filename

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved = trainer.checkpoint_callback
        best = getattr(saved, "best_model_path", "") if self.checkpoint == "best" else ""
        ckpt_path = best or getattr(saved, "last_model_path", "")
        if not ckpt_path:
            rank_zero_warn("ExportExplained: the run saved no checkpoint (add a ModelCheckpoint); nothing exported")
            return
        path = export_checkpoint(ckpt_path, run_folder(trainer) / self.filename)
        logger = wandb_logger(trainer)
        if logger is not None:
            log_wandb_artifact(logger.experiment, path, aliases=["latest", self.checkpoint])
        print(f"Explained checkpoint: {path} (from {ckpt_path})")
