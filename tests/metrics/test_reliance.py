"""Object reliance on hand cases: a model that reads a fixed pixel, and one that reads only the object."""

import pytest
import torch
from torch import nn

from pipeline.metrics import RELIANCE_SCORES, ObjectReliance, erase, object_regions, reliance_counts
from pipeline.scoring import RelianceScorer, class_rows

CLASSES = 4
SIZE = 8


class FixedPixelReader(nn.Module):
    """Answers class c when pixel (0, 0) of channel 0 holds c: a shortcut outside every object."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixel = images[:, 0, 0, 0]
        return -((pixel[:, None] - torch.arange(CLASSES)) ** 2)


class ObjectReader(nn.Module):
    """Answers class c when the brightest pixel of channel 1 is c + 1 (the object's value); 0 without an object."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        peak = images[:, 1].flatten(1).amax(dim=1)
        return -((peak[:, None] - 1 - torch.arange(CLASSES)) ** 2)


def hand_batch(labels: list[int]) -> dict:
    """Images with the label coded twice: pixel (0, 0) of channel 0 = label (outside the object), and a 3 x 3
    object of value label + 1 in channel 1 at rows/columns 3..5, boxed [3, 3, 5, 5]."""
    target = torch.tensor(labels)
    images = torch.zeros(len(labels), 3, SIZE, SIZE)
    images[:, 0, 0, 0] = target.float()
    images[:, 1, 3:6, 3:6] = (target + 1).float()[:, None, None]
    boxes = [torch.tensor([[3.0, 3.0, 5.0, 5.0]]) for _ in labels]
    box_labels = [torch.tensor([label]) for label in labels]
    return {"image": images, "target": target, "boxes": boxes, "box_labels": box_labels}


def score(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    scorer = RelianceScorer(model, CLASSES)
    scorer.update(batch["image"], model(batch["image"]), batch)
    return scorer.compute()


BALANCED = [0, 1, 2, 3, 0, 1, 2, 3]


def test_a_model_that_reads_a_fixed_pixel_stays_right_with_the_object_erased():
    result = score(FixedPixelReader(), hand_batch(BALANCED))
    assert result["acc"] == 1.0 and result["acc_object_erased"] == 1.0
    assert result["acc_context_erased"] == 0.25  # pixel (0, 0) -> 0: right for class 0 only
    assert result["chance"] == 0.25 and result["images"] == 8


def test_a_model_that_reads_only_the_object_drops_to_chance_with_it_erased():
    result = score(ObjectReader(), hand_batch(BALANCED))
    assert result["acc"] == 1.0 and result["acc_context_erased"] == 1.0
    assert result["acc_object_erased"] == result["chance"] == 0.25


def test_per_class_counts_and_rows():
    result = score(FixedPixelReader(), hand_batch([0, 0, 1, 3]))
    assert result["per_class_images"].tolist() == [2, 1, 0, 1]
    assert result["per_class_acc_context_erased"][[0, 1, 3]].tolist() == [1.0, 0.0, 0.0]
    assert result["per_class_acc_context_erased"][2].isnan()  # no image: NaN, never a silent 0
    rows = class_rows(result, ["a", "b", "c", "d"], count="images", scores=RELIANCE_SCORES)
    assert list(rows) == ["a", "b", "d"]
    assert rows["a"] == {"images": 2, "acc": 1.0, "acc_object_erased": 1.0, "acc_context_erased": 1.0}


def test_images_without_a_box_are_counted_apart_and_an_epoch_without_boxes_is_an_error():
    batch = hand_batch([0, 1, 2])
    batch["boxes"][1] = torch.zeros(0, 4)
    result = score(FixedPixelReader(), batch)
    assert result["images"] == 2 and result["unboxed"] == 1
    batch["boxes"] = [torch.zeros(0, 4)] * 3
    with pytest.raises(ValueError, match="reliance: none of 3 images has a labelled box or mask"):
        score(FixedPixelReader(), batch)


def test_the_erased_forward_runs_once_per_batch_even_without_boxes():
    """FSDP2 gathers parameters in every forward: each process must call the model as often as the others."""
    calls = []

    class Counting(FixedPixelReader):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            calls.append(len(images))
            return super().forward(images)

    scorer = RelianceScorer(Counting(), CLASSES)
    boxed, unboxed = hand_batch([0, 1]), hand_batch([2, 3])
    unboxed["boxes"] = [torch.zeros(0, 4)] * 2
    for batch in (boxed, unboxed):
        scorer.update(batch["image"], FixedPixelReader()(batch["image"]), batch)
    assert calls == [4, 0]  # both images erased two ways, then an empty batch
    assert scorer.compute()["images"] == 2 and scorer.compute()["unboxed"] == 2


def test_masks_are_the_region_in_mask_mode():
    batch = hand_batch(BALANCED)
    batch["mask"] = (batch["image"][:, 1] > 0).long()  # the object's pixels, id 1
    batch["boxes"] = [torch.tensor([[0.0, 0.0, 7.0, 7.0]])] * 8  # boxes over everything: must not be used
    scorer = RelianceScorer(ObjectReader(), CLASSES, use_masks=True)
    scorer.update(batch["image"], ObjectReader()(batch["image"]), batch)
    assert scorer.compute()["acc_object_erased"] == 0.25
    del batch["mask"]
    with pytest.raises(ValueError, match="use_masks needs masks"):
        object_regions(batch, (SIZE, SIZE), use_masks=True)


def test_erase_sets_the_region_or_the_rest_to_the_normalization_mean():
    images = torch.randn(2, 3, 4, 4)
    regions = torch.zeros(2, 4, 4, dtype=torch.bool)
    regions[:, 1:3, 1:3] = True
    object_erased, context_erased = erase(images, regions)
    assert (object_erased[:, :, 1:3, 1:3] == 0).all() and torch.equal(object_erased[:, :, 0], images[:, :, 0])
    assert torch.equal(context_erased[:, :, 1:3, 1:3], images[:, :, 1:3, 1:3]) and (context_erased[:, :, 0] == 0).all()
    with pytest.raises(ValueError, match="regions must be"):
        erase(images, regions[0])


def test_merged_halves_equal_one_pass_as_under_ddp():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (12,), generator=generator)
    logits = [torch.randn(12, CLASSES, generator=generator) for _ in range(3)]
    whole, first, second = (ObjectReliance(CLASSES) for _ in range(3))
    whole.update(labels, *logits, unboxed=3)
    first.update(labels[:5], *(value[:5] for value in logits), unboxed=1)
    second.update(labels[5:], *(value[5:] for value in logits), unboxed=2)
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value, equal_nan=True, rtol=0, atol=0)
    counts = reliance_counts(labels, *logits, CLASSES)
    assert whole.compute()["acc"] == counts["acc"].sum() / 12
