"""The bad-sample policy every file-based reader applies: `on_bad_sample` decides what a problem does.

- "error" (default): raise `BadSampleError`, whose message names the file and the problem (from a DataLoader
  worker, PyTorch re-raises it as a RuntimeError that quotes the original, file name included).
- "skip": warn (`BadSampleWarning`, naming the file), drop what is broken and record `(file, reason)` in the source's
  `skipped` list. Found while indexing: the sample or box is dropped. Found while decoding: the item is `None`,
  for the collate function to drop and count.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

OnBadSample = Literal["error", "skip"]

logger = logging.getLogger(__name__)


class BadSampleError(ValueError):
    """A sample (image or annotation file) that cannot be used, with the file and the reason.

    Args:
        path: the file at fault.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class BadSampleWarning(UserWarning):
    """A sample, or one of its boxes, dropped under `on_bad_sample: skip`."""


def warn_skipped(error: BadSampleError) -> None:
    """Say that `error`'s sample is skipped, naming the file."""
    warnings.warn(f"skipped {error}", BadSampleWarning, stacklevel=3)


class BadSamplePolicy:
    """Applies `on_bad_sample` while a source indexes its splits, and remembers what it dropped and clipped.

    Args:
        on_bad_sample: "error" raises the first problem; "skip" warns, drops and records it.
    """

    def __init__(self, on_bad_sample: OnBadSample = "error"):
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.skipped: list[tuple[str, str]] = []
        self.clipped: list[tuple[str, str]] = []

    def reject(self, error: BadSampleError) -> None:
        """Raise `error`, or (skip) warn and record it; the caller then leaves the sample or box out."""
        if self.on_bad_sample == "error":
            raise error
        warn_skipped(error)
        self.skipped.append((error.path, error.reason))

    def note_clipped(self, path: str | Path, reason: str) -> None:
        """Record a box clipped to its image (kept, so it is counted but not an error)."""
        logger.info("clipped %s: %s", path, reason)
        self.clipped.append((str(path), reason))
