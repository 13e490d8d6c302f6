"""The contract every dataset format implements: raw samples in, nothing Lightning-specific.

A *source* knows one on-disk (or generated) format and hands out a plain `torch.utils.data.Dataset`
per split. Each item is a `RawSample`: the decoded RGB image and its annotations in original pixel
coordinates. Transforms (resize, augmentation, normalization) happen later, in `transforms.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np
from typing_extensions import NotRequired, TypedDict

SPLITS = ("train", "val", "test")


class LayoutError(FileNotFoundError):
    """Data that is not laid out as its source expects: the message names the path and what was expected there.

    Sources check their layout when they are built, before any run folder or W&B run exists; the CLI prints the
    message as one line and exits with status 2.
    """


class RawSample(TypedDict):
    """One decoded image and its annotations, before any transform.

    image: (H, W, 3) uint8 RGB.
    boxes: (n, 4) float32 xyxy in pixels of `image`, as the annotation gives them (the metric fills
        them inclusively: rows ymin..ymax, columns xmin..xmax).
    box_labels: (n,) int64 class index of each box.
    target: the class index (int) for single-label data, or a (num_classes,) float32 multi-hot vector
        for multi-label data.
    image_id: a stable name for the image (file stem or generated id), used in logs and error messages.
    mask: optional (H, W) uint8 object mask (0 = background, k > 0 = object k) for mask-mode metrics.
    """

    image: np.ndarray
    boxes: np.ndarray
    box_labels: np.ndarray
    target: int | np.ndarray
    image_id: str
    mask: NotRequired[np.ndarray]


class SourceDataset(Protocol):
    """What `ImageSource.dataset` hands out: a map-style dataset of raw samples (None: one its reader skipped)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> RawSample | None: ...


class ImageSource(ABC):
    """A dataset format: class names, label mode, and one `Dataset[RawSample]` per split."""

    class_names: list[str]
    multi_label: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def dataset(self, split: str) -> SourceDataset:
        """The raw dataset for `split` (one of SPLITS); a clear ValueError for a split the format lacks."""
