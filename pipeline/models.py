"""timm ViTs by name, checked for explanation, their input config and strict weight loading; no Lightning."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import timm
import torch
from timm.data import resolve_model_data_config

from pipeline.explain import UnsupportedModelError, check_explainable
from pipeline.inputs import INTERPOLATIONS, InputConfig


def model_input_config(model: torch.nn.Module) -> InputConfig:
    """The input a timm ViT expects: its built image size, and timm's pretrained normalization and interpolation."""
    config = resolve_model_data_config(model)
    height, width = (int(side) for side in cast(Any, model.patch_embed).img_size)
    interpolation = config.get("interpolation", "bilinear")
    return InputConfig(
        (height, width), config["mean"], config["std"], interpolation if interpolation in INTERPOLATIONS else "bilinear"
    )


def create_vit(
    model_name: str,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """A timm ViT by name, validated for explanation, with hub or local weights when asked.

    Raises a clear error for an unknown name, a model the explainers cannot read, or a missing weights file,
    before anything is downloaded or trained.
    """
    if not timm.is_model(model_name):
        candidates = timm.list_models("*vit*") + timm.list_models("deit*") + timm.list_models("eva*")
        close = difflib.get_close_matches(model_name, candidates + timm.list_models("beit*"), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown timm model {model_name!r}.{hint} See timm.list_models('vit_*') / ('deit*').")
    overlay = None
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(
                f"weights_path {str(weights_path)!r} does not exist; give a .safetensors/.pth state dict or unset it."
            )
        overlay = {"file": str(weights_path)}  # timm loads it like hub weights, re-initializing a different head
    model = timm.create_model(
        model_name,
        pretrained=pretrained or weights_path is not None,
        pretrained_cfg_overlay=overlay,
        num_classes=num_classes,
        **(model_kwargs or {}),
    )
    try:
        check_explainable(model)
    except UnsupportedModelError as error:
        raise ValueError(f"{model_name!r} cannot be explained: {error}") from error
    return model


def load_state_dict_strictly(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(state_dict, strict=True)`, with an error that names the first keys that do not fit."""
    own = model.state_dict()
    missing = [name for name in own if name not in state_dict]
    unexpected = [name for name in state_dict if name not in own]
    misshaped = [
        f"{name} {list(state_dict[name].shape)} vs {list(own[name].shape)}"
        for name in own
        if name in state_dict and tuple(state_dict[name].shape) != tuple(own[name].shape)
    ]
    problems = [
        f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)} in all)"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", misshaped))
        if names
    ]
    if problems:
        raise ValueError(f"{source}: the weights do not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)
