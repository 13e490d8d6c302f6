"""ClassAtlas: per-class means of normalized maps of the correct cases, their shape and their sums."""

import pytest
import torch

from pipeline.metrics import ClassAtlas
from pipeline.render import render_atlas


def spot(row: int, col: int, value: float = 3.0) -> torch.Tensor:
    maps = torch.zeros(4, 4)
    maps[row, col] = value
    return maps


def test_means_of_normalized_maps_of_correct_cases_per_class():
    atlas = ClassAtlas(num_classes=3, grid=(4, 4))
    maps = torch.stack([spot(0, 0), spot(0, 0, value=7.0), spot(3, 3), spot(1, 1)])
    atlas.update(maps, classes=torch.tensor([0, 0, 2, 2]), correct=torch.tensor([True, True, True, False]))
    result = atlas.compute()
    assert result["mean"].shape == (3, 4, 4) and result["images"].tolist() == [2, 0, 1]
    assert torch.equal(result["mean"][0], spot(0, 0, value=1.0))  # each map normalized first: the scale is gone
    assert torch.equal(result["mean"][1], torch.zeros(4, 4))  # no image: zeros
    assert torch.equal(result["mean"][2], spot(3, 3, value=1.0))  # the misclassified case is left out
    # the state holds sums: a class's mean times its count is the sum of its normalized maps
    assert torch.equal(atlas.sums.sum(dim=(1, 2)), torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64))


def test_merged_halves_equal_one_pass_as_under_ddp():
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(10, 4, 4, generator=generator)
    classes = torch.randint(0, 3, (10,), generator=generator)
    correct = torch.rand(10, generator=generator) > 0.3
    whole, first, second = (ClassAtlas(3, (4, 4)) for _ in range(3))
    whole.update(maps, classes, correct)
    first.update(maps[:6], classes[:6], correct[:6])
    second.update(maps[6:], classes[6:], correct[6:])
    first.merge_state(second)
    torch.testing.assert_close(first.compute()["mean"], whole.compute()["mean"])
    assert torch.equal(first.compute()["images"], whole.compute()["images"])


def test_maps_on_another_grid_are_refused():
    with pytest.raises(ValueError, match=r"atlas maps must be on the \(4, 4\) grid"):
        ClassAtlas(2, (4, 4)).update(torch.rand(1, 2, 2), torch.tensor([0]), torch.tensor([True]))


def test_render_one_tile_per_class():
    picture = render_atlas(torch.rand(3, 4, 4), torch.tensor([2, 0, 1]), ["a", "b", "c"], tile=32)
    assert picture.shape == (32, 96, 3)
    assert (picture[:20, 32:63] == 128).all()  # the class without images is a grey tile
