"""Object reliance and the class atlas under real DDP (two gloo processes): compute() gives the one-process values."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.metrics import ClassAtlas, ObjectReliance

CLASSES = 3


def cases():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (10,), generator=generator)
    logits = [torch.randn(10, CLASSES, generator=generator) for _ in range(3)]
    maps = torch.rand(10, 4, 4, generator=generator)
    correct = torch.rand(10, generator=generator) > 0.3
    return labels, logits, maps, correct


def measure(part: slice):
    labels, logits, maps, correct = cases()
    reliance, atlas = ObjectReliance(CLASSES), ClassAtlas(CLASSES, (4, 4))
    reliance.update(labels[part], *(value[part] for value in logits), unboxed=part.start or 0)
    atlas.update(maps[part], labels[part], correct[part])
    return reliance.compute(), atlas.compute()


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        reliance, atlas = measure(slice(0, 4) if rank == 0 else slice(4, 10))  # uneven halves
        torch.save((reliance, atlas), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_reliance_and_atlas_are_summed_across_processes(tmp_path):
    # spawn, not fork: a forked child of a process whose torch thread pool already ran can deadlock
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    reliance, atlas = measure(slice(0, 10))
    reliance["unboxed"] = torch.tensor(4.0)  # the two processes count 0 and 4 unboxed images
    for rank in (0, 1):
        synced_reliance, synced_atlas = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in reliance.items():
            torch.testing.assert_close(synced_reliance[name], value, equal_nan=True, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(synced_atlas["mean"], atlas["mean"])
        assert synced_atlas["images"].tolist() == atlas["images"].tolist()
