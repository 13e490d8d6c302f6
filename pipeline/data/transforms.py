"""Image, boxes and masks transformed together: the one module that imports albumentations.

Training augmentation moves boxes and masks with the image (albumentations targets). Evaluation resizes
to the model's input and scales boxes exactly as the localization protocol does: x -> int(x / width * W).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipeline.data.source import RawSample
from pipeline.inputs import InputConfig


@contextmanager
def _no_update_check() -> Iterator[None]:
    """albumentations asks PyPI for a newer version at import unless NO_ALBUMENTATIONS_UPDATE is set: set it for
    the import only, so nothing reaches the network and the environment is left as it was."""
    previous = os.environ.get("NO_ALBUMENTATIONS_UPDATE")
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["NO_ALBUMENTATIONS_UPDATE"]
        else:
            os.environ["NO_ALBUMENTATIONS_UPDATE"] = previous


with _no_update_check():
    import albumentations as A

CV2_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass
class Augmentation:
    """Training augmentation, set from YAML.

    Args:
        crop_scale: area range of the random resized crop, as fractions of the image.
        hflip: flip left-right with probability 0.5.
        color_jitter: brightness/contrast/saturation strength (0 turns it off).
        hue_jitter: hue shift range in [0, 0.5]; keep 0 where colour identifies the class (the shapes data).
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    hflip: bool = True
    color_jitter: float = 0.2
    hue_jitter: float = 0.0


def scale_boxes(boxes: np.ndarray, source_size: tuple[int, int], target_size: tuple[int, int]) -> np.ndarray:
    """Boxes from an image of (height, width) to target (H, W) as the protocol does: int(x / width * W)."""
    (height, width), (target_h, target_w) = source_size, target_size
    # divide first, as the formula reads: x * (W / width) rounds differently (45 * (224 / 80) = 125.999...)
    sizes = np.array([width, height, width, height], np.float64)
    targets = np.array([target_w, target_h, target_w, target_h], np.float64)
    return np.trunc(boxes.astype(np.float64) / sizes * targets).astype(np.float32)


class SampleTransform:
    """RawSample -> model-ready tensors: image (3, H, W) normalized, boxes (n, 4) at input resolution, mask.

    Args:
        input_config: the model's input: (H, W), normalization and resize interpolation.
        augmentation: training augmentation, or None for evaluation (resize + normalize only).
        seed: seed of the augmentation's random state (DataLoader workers re-seed it; see `reseed`).
    """

    def __init__(
        self,
        input_config: InputConfig,
        augmentation: Augmentation | None = None,
        seed: int | None = None,
    ) -> None:
        self.image_size = input_config.image_size
        self.augmentation = augmentation
        normalize = A.Normalize(mean=input_config.mean, std=input_config.std, max_pixel_value=255.0)
        if augmentation is None:
            resize = A.Resize(*self.image_size, interpolation=CV2_INTERPOLATION[input_config.interpolation])
            self.pipeline = A.Compose([resize, normalize])
            return
        # training crops keep albumentations' bilinear resampling: the config's interpolation is the eval preprocessing
        steps = [A.RandomResizedCrop(size=self.image_size, scale=augmentation.crop_scale)]
        if augmentation.hflip:
            steps.append(A.HorizontalFlip(p=0.5))
        if augmentation.color_jitter or augmentation.hue_jitter:
            strength = augmentation.color_jitter
            steps.append(A.ColorJitter(strength, strength, strength, augmentation.hue_jitter, p=0.8))
        steps.append(normalize)
        # Boxes use inclusive pixel ends; albumentations' pascal_voc is half-open, hence the +1 / -1 around it.
        boxes = A.BboxParams(format="pascal_voc", label_fields=["box_labels"], clip=True, min_visibility=0.2)
        self.pipeline = A.Compose(steps, bbox_params=boxes, seed=seed)

    def reseed(self, seed: int) -> None:
        """Give this copy (e.g. in a DataLoader worker) its own augmentation random state."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, sample: RawSample) -> dict:
        image, boxes, box_labels = sample["image"], sample["boxes"], sample["box_labels"]
        extra = {"mask": sample["mask"]} if "mask" in sample else {}
        if self.augmentation is None:
            out = self.pipeline(image=image, **extra)
            boxes = scale_boxes(boxes, image.shape[:2], self.image_size)
        else:
            half_open = boxes + np.array([0, 0, 1, 1], np.float32)
            out = self.pipeline(image=image, bboxes=half_open, box_labels=box_labels, **extra)
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4) - np.array([0, 0, 1, 1], np.float32)
            box_labels = np.asarray(out["box_labels"], np.int64)
        transformed = {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "target": torch.as_tensor(sample["target"]),
            "boxes": torch.from_numpy(boxes),
            "box_labels": torch.as_tensor(box_labels, dtype=torch.int64),
            "image_id": sample["image_id"],
        }
        if extra:
            transformed["mask"] = torch.from_numpy(np.ascontiguousarray(out["mask"]))
        return transformed
