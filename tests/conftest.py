"""Shared fixtures: tiny timm ViTs and the reference data; W&B always offline."""

import os

import pytest

from tests.helpers.models import load_npz

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def close_wandb_run():
    """A W&B run left open would be reused by the next WandbLogger in this process."""
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()


@pytest.fixture(scope="session")
def reference() -> dict:
    """The official-code reference arrays (see tests/data/README.md)."""
    return load_npz("public_config.npz")
