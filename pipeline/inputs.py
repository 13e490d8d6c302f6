"""InputConfig: the one shape in which a model's input configuration travels (size, normalization, resize)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")


@dataclass(frozen=True)
class InputConfig:
    """What a model's input looks like: (H, W), per-channel normalization and the resize interpolation.

    The data transforms, the heatmap panel, the explained checkpoint card and the offline commands all take this.
    """

    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
            raise ValueError(f"image_size must be two positive integers (H, W), got {list(self.image_size)}")
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got mean {list(mean)} and std {list(std)}")
        if not all(math.isfinite(v) for v in mean):
            raise ValueError(f"mean must be finite numbers, got {list(mean)}")
        if not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"std must be finite and > 0 (it divides the pixels), got {list(std)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputConfig:
        """The inverse of `to_dict` (interpolation optional)."""
        image_size = data["image_size"]
        if not isinstance(image_size, Sequence) or isinstance(image_size, str):
            raise ValueError(f"image_size must be [H, W], got {image_size!r}")
        return cls(tuple(image_size), tuple(data["mean"]), tuple(data["std"]), data.get("interpolation", "bilinear"))
