"""Datasets with boxes (one module per format), their transforms and batching; no Lightning here."""

from pipeline.data.source import SPLITS, ImageSource, RawSample
from pipeline.data.splits import DatasetSplits, collate_samples
from pipeline.data.synthetic import ShapesSource, SyntheticShapes
from pipeline.data.transforms import Augmentation, SampleTransform

__all__ = [
    "SPLITS",
    "Augmentation",
    "DatasetSplits",
    "ImageSource",
    "RawSample",
    "SampleTransform",
    "ShapesSource",
    "SyntheticShapes",
    "collate_samples",
]
