"""A Lightning checkpoint of a tiny ViTClassifier, as `agcam fit` writes it, without training."""

from pathlib import Path

import torch

from pipeline.checkpoints import save_checkpoint_file
from pipeline.lightning import ViTClassifier
from tests.helpers.explained import CLASS_NAMES, TINY_KWARGS


def tiny_lightning_checkpoint(path: Path) -> Path:
    """A seeded 4-class tiny ViTClassifier's checkpoint at `path`: weights, hyper-parameters and training state."""
    torch.manual_seed(0)
    module = ViTClassifier("vit_tiny_patch16_224", 4, class_names=CLASS_NAMES, model_kwargs=TINY_KWARGS)
    checkpoint = {
        "epoch": 1,
        "global_step": 16,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}],
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 1}}}},
    }
    return save_checkpoint_file(checkpoint, path)
