"""Training order and augmentation drawn from (seed, epoch, sample index), never from process RNG state.

A run resumed from a checkpoint then sees the samples, in the order and with the augmentations, that the
uninterrupted run saw: the epoch's order is a permutation seeded by (seed, epoch), and each sample's augmentation
is seeded by (seed, epoch, index), whichever process or DataLoader worker draws it. `EpochSampler` yields
(epoch, index) pairs so that persistent workers, which never see the main process's state, know the epoch too.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sized

import numpy as np
from torch.utils.data import DistributedSampler


class EpochSampler(DistributedSampler):
    """This process's share of a permutation seeded by (seed, epoch), as (epoch, index) pairs.

    A DistributedSampler (one process: num_replicas=1), so Lightning leaves it in place under DDP and calls
    `set_epoch` before every epoch. `resume_at` skips the samples of an epoch a mid-epoch checkpoint already trained.

    Args:
        dataset: the training set.
        num_replicas: processes sharing the epoch.
        rank: this process.
        seed: the run's data seed.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)  # type: ignore[arg-type]
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, samples: int) -> None:
        """Start `epoch` after its first `samples` (of this process's share); later epochs start at 0."""
        self._resume = (epoch, samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
            self._resume = None
        return iter([(self.epoch, index) for index in indices[skip:]])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch (a 32-bit value, independent across the three)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: a scheduler's signal to the whole process group is the main process's to handle.

    Without this, SIGTERM/SIGINT/SIGUSR1 kill the workers first and the main process dies of "DataLoader worker
    killed" instead of saving a checkpoint; workers still exit when the main process does.
    """
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
