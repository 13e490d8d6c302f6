"""ViTDataModule: DatasetSplits with Lightning's hooks: the model's input config, DDP evaluation, skip counting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import pytorch_lightning as pl
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.strategies import ModelParallelStrategy
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from pipeline.data.sampling import EpochSampler
from pipeline.data.splits import DatasetSplits


class ViTDataModule(DatasetSplits, pl.LightningDataModule):
    """Train/val/test loaders over an ImageSource; the arguments are `DatasetSplits`'.

    Image size and normalization come from the ViTClassifier it is trained with (timm's pretrained config), unless
    set here. Training order and augmentation come from (seed, epoch, sample index) (`EpochSampler`), and a
    mid-epoch checkpoint records how far its epoch got, so a resumed run sees the samples the uninterrupted run saw.
    Under DDP each evaluation sample is seen exactly once across processes.
    """

    skipped_samples = 0  # unreadable samples dropped from batches so far (counted per process)
    _resume_position: tuple[int, int] | None = None  # (epoch, samples) of a mid-epoch checkpoint being resumed

    def setup(self, stage: str | None = None) -> None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        self.prepare(stage, getattr(module, "input_config", None))

    def train_dataloader(self) -> DataLoader:
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = EpochSampler(self.datasets["train"], num_replicas=world_size, rank=rank, seed=self.seed)
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
        return self.loader("train", sampler=sampler)

    def state_dict(self) -> dict[str, int]:
        """Where the current epoch stands when a checkpoint is saved mid-epoch (a preemption): its epoch and the
        samples this process already trained on, so the resumed epoch goes on with the next one."""
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if not 0 < done < self.trainer.num_training_batches:
            return {}  # at an epoch boundary the next epoch starts from its beginning
        return {"epoch": self.trainer.current_epoch, "samples": done * self.batch_size}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_position = (state_dict["epoch"], state_dict["samples"]) if state_dict else None

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.predict_split)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        skipped = batch.pop("skipped", 0)
        if skipped:
            self.skipped_samples += skipped
            rank_zero_warn(f"{skipped} unreadable sample(s) skipped in this batch ({self.skipped_samples} so far)")
        return batch

    def eval_indices(self, split: str) -> list[int]:
        """The indices of `split` this process evaluates (all of them on one process)."""
        sampler = self._eval_sampler(split)
        return list(cast(Iterable[int], sampler)) if sampler is not None else list(range(len(self.datasets[split])))

    def _eval_loader(self, split: str) -> DataLoader:
        sampler = self._eval_sampler(split)
        if sampler is not None:
            check_even_split_when_sharded(cast(pl.Trainer, self.trainer), split, len(self.datasets[split]))
        return self.loader(split, sampler=sampler)

    def _eval_sampler(self, split: str) -> UnrepeatedDistributedSampler | None:
        if self.trainer is None or self.trainer.world_size <= 1:
            return None
        # each evaluation sample exactly once across processes (the default sampler pads with repeats)
        return UnrepeatedDistributedSampler(
            self.datasets[split], num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
        )


def check_even_split_when_sharded(trainer: pl.Trainer, split: str, size: int) -> None:
    """Under FSDP every forward gathers parameters from all processes, so each must run as many evaluation batches;
    the unpadded split (each sample once) guarantees that only when the size divides evenly."""
    if isinstance(trainer.strategy, ModelParallelStrategy) and size % trainer.world_size:
        raise ValueError(
            f"The {split} split has {size} samples, not a multiple of the {trainer.world_size} processes: under "
            "ModelParallelStrategy (FSDP2) every process must run the same number of batches, and each sample is "
            f"evaluated once; use a {split} size divisible by {trainer.world_size}."
        )
