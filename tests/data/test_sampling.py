"""Training order and augmentation from (seed, epoch, sample index): reproducible in any process, resumable."""

import torch

from pipeline.data import ShapesSource
from pipeline.data.sampling import EpochSampler
from pipeline.data.splits import DatasetSplits
from pipeline.inputs import InputConfig


def test_the_order_depends_on_seed_and_epoch_only_and_processes_share_it_out():
    def order(seed: int, epoch: int, replicas: int = 1, rank: int = 0) -> list:
        sampler = EpochSampler(range(20), num_replicas=replicas, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3) and order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
    assert all(epoch == 3 for epoch, _ in order(0, 3)) and sorted(i for _, i in order(0, 3)) == list(range(20))
    shares = [order(0, 3, replicas=2, rank=rank) for rank in (0, 1)]
    assert sorted(i for share in shares for _, i in share) == list(range(20))


def test_resume_at_skips_the_samples_a_mid_epoch_checkpoint_trained_once():
    sampler = EpochSampler(range(20), seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume_at(epoch=2, samples=8)
    assert list(sampler) == full[8:]
    assert list(sampler) == full  # the next pass over the same epoch (and later epochs) start at the beginning


def test_a_samples_augmentation_comes_from_seed_epoch_and_index_not_from_what_ran_before():
    data = DatasetSplits(ShapesSource(train_size=8, val_size=2, test_size=2, image_size=32, num_classes=4), seed=3)
    data.prepare("fit", InputConfig((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    train = data.datasets["train"]
    first = train[(1, 5)]["image"]
    for key in [(1, 4), (0, 5), (7, 2)]:
        train[key]  # other samples, other epochs: augmentation state moves on
    torch.manual_seed(123)
    assert torch.equal(train[(1, 5)]["image"], first)
    assert not torch.equal(train[(2, 5)]["image"], first)  # another epoch, another crop/flip/jitter


def test_workers_of_a_plainly_indexed_loader_draw_their_own_augmentations():
    """Without an EpochSampler the keys are plain indices: each worker must still augment with its own stream."""

    class OneImage(torch.utils.data.Dataset):  # the same raw sample at every index
        def __init__(self) -> None:
            self.sample = ShapesSource(1, 1, 1, image_size=64).dataset("train")[0]

        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int):
            return self.sample

    data = DatasetSplits(ShapesSource(4, 4, 4, image_size=64), batch_size=1, num_workers=2)
    data.prepare("fit", InputConfig((32, 32), (0.5,) * 3, (0.5,) * 3))
    dataset = data.datasets["train"]
    dataset.raw = OneImage()
    images = [batch["image"] for batch in data.loader("train")]  # workers alternate: 0, 1, 0, 1
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[2], images[3])
