"""Datasets with boxes, their transforms and the Lightning data module."""

from pipeline.data.datamodule import ViTDataModule, collate_samples
from pipeline.data.source import SPLITS, ImageSource, RawSample
from pipeline.data.synthetic import ShapesSource, SyntheticShapes
from pipeline.data.transforms import Augmentation, SampleTransform

__all__ = [
    "SPLITS",
    "Augmentation",
    "ImageSource",
    "RawSample",
    "SampleTransform",
    "ShapesSource",
    "SyntheticShapes",
    "ViTDataModule",
    "collate_samples",
]
