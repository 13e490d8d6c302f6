"""Explained checkpoints from training outputs: a Lightning checkpoint (or timm weights) made self-describing.

Lightning checkpoints are read as plain tensors and containers (`torch.load(weights_only=True)`); the timm model
is rebuilt from the hyper-parameters the checkpoint records. Lightning itself is not needed: the callbacks of
`pipeline.lightning` write the keys below into every checkpoint, and this module reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm

from pipeline.checkpoints import load_checkpoint_file
from pipeline.explained.card import ExplainedCard
from pipeline.explained.files import save_explained
from pipeline.explained.model import ExplainedModel
from pipeline.inputs import InputConfig
from pipeline.models import create_vit, load_state_dict_strictly, model_input_config

VALIDATION_KEY = "last_validation"  # written into every checkpoint by pipeline.lightning.RunSummary
EXPLAINER_KEY = "explainer"  # written by pipeline.lightning.LocalizationCallback
MODEL_PREFIX = "model."  # ViTClassifier holds the timm model as `self.model`


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ViTClassifier checkpoint, loaded as plain tensors and containers (weights_only: no code runs).

    Args:
        path: a `.ckpt` file written by `agcam fit`.

    Returns:
        The checkpoint dict, with at least `hyper_parameters` and `state_dict`.

    Raises:
        CheckpointError: (a ValueError) naming the file, what is wrong with it and the other checkpoints beside it.
    """
    return load_checkpoint_file(path, required=("hyper_parameters", "state_dict"))


def explained_from_lightning(path: str | Path) -> ExplainedModel:
    """The ViT of a Lightning checkpoint with its card: architecture, input, classes and last validation.

    Args:
        path: a `.ckpt` file written by `agcam fit`.

    Returns:
        The model, on CPU in eval mode.
    """
    checkpoint = read_lightning_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    model = create_vit(hparams["model_name"], hparams["num_classes"], model_kwargs=hparams.get("model_kwargs"))
    weights = {
        name[len(MODEL_PREFIX) :]: tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(MODEL_PREFIX)
    }
    load_state_dict_strictly(model, weights, str(path))
    validation = dict(checkpoint.get(VALIDATION_KEY) or {})
    recorded_input = validation.pop("input", None)
    if validation:  # which checkpoint the weights are, beside the validation (of that same step) they carry
        validation["checkpoint"] = {
            "file": Path(path).name,
            "epoch": checkpoint.get("epoch"),
            "global_step": checkpoint.get("global_step"),
        }
    explainer = checkpoint.get(EXPLAINER_KEY) or {}
    card = ExplainedCard(
        timm_model=hparams["model_name"],
        num_classes=hparams["num_classes"],
        input=InputConfig.from_dict(recorded_input) if recorded_input else model_input_config(model),
        class_names=hparams.get("class_names"),
        multi_label=hparams.get("multi_label", False),
        model_kwargs=dict(hparams.get("model_kwargs") or {}),
        validation=validation or None,
        **{name: explainer[name] for name in ("methods", "threshold") if name in explainer},
    )
    return ExplainedModel(model, card)


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
    model = create_vit(model_name, len(class_names), model_kwargs=model_kwargs)
    try:
        timm.models.load_checkpoint(model, str(weights_path), strict=True, weights_only=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_path}: does not fit {model_name} ({str(error).splitlines()[0]})") from None
    card = ExplainedCard(
        timm_model=model_name,
        num_classes=len(class_names),
        input=model_input_config(model),
        class_names=class_names,
        multi_label=multi_label,
        model_kwargs=dict(model_kwargs or {}),
    )
    return ExplainedModel(model, card)


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
