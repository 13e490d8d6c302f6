"""AtomicCheckpointIO: Lightning saves and loads checkpoints through `pipeline.checkpoints`.

Lightning's own TorchCheckpointIO writes through a temporary file in /tmp when asked to be atomic; across
filesystems its final move is a copy straight onto `last.ckpt`, which a full disk leaves truncated. Here the
temporary file sits beside the checkpoint, is fsynced and replaces it in one rename, so the previous checkpoint
stays whole until the new one is; every checkpoint carries a content hash checked when it is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins import TorchCheckpointIO

from pipeline.checkpoints import load_checkpoint_file, save_checkpoint_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with atomic, hashed writes and loads that fail in one line naming the file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_checkpoint_file(checkpoint, Path(path))

    def load_checkpoint(
        self, path: _PATH, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        return load_checkpoint_file(path, map_location or "cpu", required=(), weights_only=weights_only)
