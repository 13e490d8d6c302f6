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


def worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        reliance, atlas = measure(slice(0, 4) if rank == 0 else slice(4, 10))  # uneven halves
        results.put((rank, {k: v.tolist() for k, v in reliance.items()}, {k: v.tolist() for k, v in atlas.items()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_reliance_and_atlas_are_summed_across_processes(tmp_path):
    results = mp.get_context("fork").SimpleQueue()  # fork: the children start with everything imported
    mp.start_processes(worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True, start_method="fork")
    reliance, atlas = measure(slice(0, 10))
    reliance["unboxed"] = torch.tensor(4.0)  # the two processes count 0 and 4 unboxed images
    ranks = set()
    while not results.empty():
        rank, synced_reliance, synced_atlas = results.get()
        ranks.add(rank)
        for name, value in reliance.items():
            synced = torch.tensor(synced_reliance[name], dtype=value.dtype)
            torch.testing.assert_close(synced, value, equal_nan=True, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(torch.tensor(synced_atlas["mean"]), atlas["mean"])
        assert torch.tensor(synced_atlas["images"]).tolist() == atlas["images"].tolist()
    assert ranks == {0, 1}
