"""Train/val/test batches over any ImageSource, transformed for a model: what training and `agcam evaluate` share.

No Lightning here: `pipeline.lightning.ViTDataModule` adds the Lightning hooks (DDP sampler, skip counting, the
model's input config) on top of `DatasetSplits`, and the offline commands use it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from pipeline.data.sampling import ignore_stop_signals, sample_seed
from pipeline.data.source import SPLITS, ImageSource, SourceDataset
from pipeline.data.transforms import Augmentation, SampleTransform
from pipeline.inputs import InputConfig

# The splits each Lightning stage needs (None, or another stage: all of SPLITS). VOC 2012 has no test split.
STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class TransformedDataset(Dataset):
    """A raw dataset seen through a SampleTransform; a sample its reader skipped (None) stays None.

    Indexed by an (epoch, index) pair (`EpochSampler`), the augmentation is seeded by (seed, epoch, index).
    """

    def __init__(self, raw: SourceDataset, transform: SampleTransform, seed: int = 0) -> None:
        self.raw = raw
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        sample = self.raw[index]
        if sample is None:
            return None
        if epoch is not None and self.transform.augmentation is not None:
            self.transform.reseed(sample_seed(self.seed, epoch, index))
        return self.transform(sample)


def init_worker(worker_id: int) -> None:
    """DataLoader worker init: stop signals are the main process's (`ignore_stop_signals`), and each worker draws
    its own augmentations when indexed by plain integers (an `EpochSampler`'s keys reseed every sample anyway)."""
    ignore_stop_signals(worker_id)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, TransformedDataset):
        info.dataset.transform.reseed(torch.initial_seed() % 2**32)  # torch seeds each worker differently


def collate_samples(samples: Sequence[dict | None]) -> dict[str, Any]:
    """Stack images and targets; keep boxes, box labels and ids as per-image lists; count skipped samples.

    The batch: image (B, 3, H, W), target (B,) or (B, C), boxes [(n_i, 4)], box_labels [(n_i,)], image_id [str],
    mask (B, H, W) when every sample has one, and skipped (int): samples whose reader skipped them.
    """
    kept = [sample for sample in samples if sample is not None]
    if not kept:
        raise RuntimeError(
            f"All {len(samples)} samples of a batch failed to load (see the warnings above for the files); "
            "check the dataset root and files."
        )
    batch = {
        "image": torch.stack([s["image"] for s in kept]),
        "target": torch.stack([s["target"] for s in kept]),
        "boxes": [s["boxes"] for s in kept],
        "box_labels": [s["box_labels"] for s in kept],
        "image_id": [s["image_id"] for s in kept],
        "skipped": len(samples) - len(kept),
    }
    if all("mask" in s for s in kept):
        batch["mask"] = torch.stack([s["mask"] for s in kept])
    return batch


class DatasetSplits:
    """Loaders over an ImageSource (the shapes data, ImageNet, VOC, CUB, COCO-JSON, a folder), for one model input.

    Image size and normalization come from the model (`input_config`) unless set here.

    Args:
        source: the dataset format and its options (a `class_path` in YAML).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (defaults to batch_size).
        num_workers: DataLoader worker processes.
        augmentation: training augmentation; None uses the Augmentation defaults.
        image_size: model input (H, W); None takes it from the model.
        mean: normalization mean; None takes it from the model.
        std: normalization std; None takes it from the model.
        seed: seed of the training order and augmentation, drawn per (seed, epoch, sample index) (`EpochSampler`).
        predict_split: the split `predict` runs over.
    """

    def __init__(
        self,
        source: ImageSource,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        augmentation: Augmentation | None = None,
        image_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        seed: int = 0,
        predict_split: str = "test",
    ) -> None:
        super().__init__()  # cooperative: ViTDataModule adds LightningDataModule's own state through this
        if predict_split not in SPLITS:
            raise ValueError(f"predict_split must be one of {SPLITS}, got {predict_split!r}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size or batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augmentation = augmentation or Augmentation()
        self.image_size, self.mean, self.std = image_size, mean, std
        self.seed = seed
        self.predict_split = predict_split
        self.datasets: dict[str, TransformedDataset] = {}
        self.input_config: InputConfig | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.source.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.source.class_names)

    @property
    def multi_label(self) -> bool:
        return self.source.multi_label

    def index(self, stage: str | None) -> None:
        """Index the splits `stage` needs without decoding anything, so that a layout problem or a bad annotation
        is reported before a run starts (the CLI calls it before the trainer creates run folders or a W&B run)."""
        for split in (self.predict_split,) if stage == "predict" else STAGE_SPLITS.get(stage, SPLITS):
            self.source.dataset(split)

    def prepare(self, stage: str | None, model_input: InputConfig | None = None) -> None:
        """Index and transform the splits `stage` needs ("fit", "validate", "test", "predict"; None: all).

        Args:
            stage: what the splits are for.
            model_input: the model's input config; image_size, mean and std set here take precedence.
        """
        self.input_config = self._input_config(model_input)
        splits = (self.predict_split,) if stage == "predict" else STAGE_SPLITS.get(stage, SPLITS)
        for split in splits:
            if split not in self.datasets:
                augmentation = self.augmentation if split == "train" else None
                transform = SampleTransform(self.input_config, augmentation, seed=self.seed)
                self.datasets[split] = TransformedDataset(self.source.dataset(split), transform, self.seed)

    def loader(self, split: str, shuffle: bool = False, sampler: Sampler | None = None) -> DataLoader:
        """Batches of `split` (prepared first); `sampler` e.g. to split evaluation between processes."""
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"The {split!r} split of {type(self.source).__name__} is empty; check its files/config.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            worker_init_fn=init_worker if self.num_workers else None,
            persistent_workers=self.num_workers > 0,
        )

    def _input_config(self, model_input: InputConfig | None) -> InputConfig:
        """The model's input config with this object's image_size, mean and std where they are set."""
        if model_input is None and None in (self.image_size, self.mean, self.std):
            raise ValueError(
                "the data needs image_size, mean and std: set them, or use it with a model whose timm data config "
                "provides them."
            )
        return InputConfig(
            tuple(self.image_size or model_input.image_size),
            tuple(self.mean or model_input.mean),
            tuple(self.std or model_input.std),
            model_input.interpolation if model_input is not None else "bilinear",
        )
