"""ViTDataModule: any ImageSource, transformed for the model, batched with variable-length box lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, get_worker_info

from pipeline.data.source import SPLITS, ImageSource
from pipeline.data.transforms import Augmentation, SampleTransform


class TransformedDataset(Dataset):
    """A raw dataset seen through a SampleTransform; a sample its reader skipped (None) stays None."""

    def __init__(self, raw: Dataset, transform: SampleTransform) -> None:
        self.raw = raw
        self.transform = transform

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.raw[index]
        return None if sample is None else self.transform(sample)


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


def reseed_augmentation(worker_id: int) -> None:
    """Each DataLoader worker draws its own augmentations (torch seeds workers differently every epoch)."""
    dataset = get_worker_info().dataset
    dataset.transform.reseed(torch.initial_seed() % 2**32)


class ViTDataModule(pl.LightningDataModule):
    """Train/val/test loaders over an ImageSource (the shapes data, ImageNet, VOC, CUB, COCO-JSON, a folder).

    Image size and normalization come from the ViTClassifier this module is trained with (timm's pretrained
    config), unless set here.

    Args:
        source: the dataset format and its options (a `class_path` in YAML).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (defaults to batch_size).
        num_workers: DataLoader worker processes.
        augmentation: training augmentation; None uses the Augmentation defaults.
        image_size: model input (H, W); None takes it from the model.
        mean: normalization mean; None takes it from the model.
        std: normalization std; None takes it from the model.
        seed: seed of the augmentation when loading in the main process (num_workers=0).
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
        super().__init__()
        if predict_split not in SPLITS:
            raise ValueError(f"predict_split must be one of {SPLITS}, got {predict_split!r}")
        self.source = source
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augmentation = augmentation or Augmentation()
        self.image_size, self.mean, self.std = image_size, mean, std
        self.seed = seed
        self.predict_split = predict_split
        self.datasets: dict[str, TransformedDataset] = {}
        self.input_config: tuple[tuple[int, int], Sequence[float], Sequence[float]] | None = None
        self.skipped_samples = 0

    @property
    def class_names(self) -> list[str]:
        return list(self.source.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.source.class_names)

    @property
    def multi_label(self) -> bool:
        return self.source.multi_label

    def setup(self, stage: str | None = None) -> None:
        self.input_config = image_size, mean, std = self._input_config()
        stage_splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (self.predict_split,),
        }
        for split in stage_splits.get(stage, SPLITS):  # only what the stage needs: VOC 2012 has no test split
            if split not in self.datasets:
                augmentation = self.augmentation if split == "train" else None
                transform = SampleTransform(image_size, mean, std, augmentation, seed=self.seed)
                self.datasets[split] = TransformedDataset(self.source.dataset(split), transform)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        skipped = batch.pop("skipped", 0)
        if skipped:
            self.skipped_samples += skipped
            rank_zero_warn(f"{skipped} unreadable sample(s) skipped in this batch ({self.skipped_samples} so far)")
        return batch

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"The {split!r} split of {type(self.source).__name__} is empty; check its files/config.")
        sampler = None
        if split != "train" and self.trainer is not None and self.trainer.world_size > 1:
            # each evaluation sample exactly once across processes (the default sampler pads with repeats)
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            worker_init_fn=reseed_augmentation if self.num_workers else None,
            persistent_workers=self.num_workers > 0,
        )

    def _input_config(self) -> tuple[tuple[int, int], Sequence[float], Sequence[float]]:
        """(H, W), mean and std: as set here, else from the LightningModule's timm data config."""
        model_config = {}
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None and hasattr(module, "data_config"):
            model_config = module.data_config
        image_size = self.image_size or tuple(model_config.get("input_size", (None, None, None))[1:])
        mean = self.mean or model_config.get("mean")
        std = self.std or model_config.get("std")
        if None in image_size or mean is None or std is None:
            raise ValueError(
                "ViTDataModule needs image_size, mean and std: set them, or train it with a ViTClassifier "
                "whose timm data config provides them."
            )
        return tuple(image_size), mean, std
