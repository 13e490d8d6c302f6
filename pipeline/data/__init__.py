"""Datasets with boxes (one module per format), their transforms and batching; no Lightning here.

Every source is exported here, so configs name them all the same way: `class_path: pipeline.data.<Source>`.
"""

from pipeline.data.bad_samples import BadSampleError, BadSampleWarning, OnBadSample
from pipeline.data.class_folders import ClassFolderSource
from pipeline.data.coco import COCOSource
from pipeline.data.cub import CUBSource
from pipeline.data.folder import FolderSource, ImageFolderDataset
from pipeline.data.hf import HFDatasetSource
from pipeline.data.imagenet import ImageNetSource
from pipeline.data.source import SPLITS, ImageSource, LayoutError, RawSample
from pipeline.data.splits import DatasetSplits, collate_samples
from pipeline.data.synthetic import ShapesSource, SyntheticShapes
from pipeline.data.transforms import Augmentation, SampleTransform
from pipeline.data.voc import VOCSource

__all__ = [
    "SPLITS",
    "Augmentation",
    "BadSampleError",
    "BadSampleWarning",
    "COCOSource",
    "ClassFolderSource",
    "CUBSource",
    "DatasetSplits",
    "FolderSource",
    "HFDatasetSource",
    "ImageFolderDataset",
    "ImageNetSource",
    "ImageSource",
    "LayoutError",
    "OnBadSample",
    "RawSample",
    "SampleTransform",
    "ShapesSource",
    "SyntheticShapes",
    "VOCSource",
    "collate_samples",
]
