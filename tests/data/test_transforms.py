"""Transforms move boxes with the image; evaluation boxes are scaled by the protocol; batches keep box lists."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.data import Augmentation, SampleTransform, ShapesSource, SyntheticShapes, collate_samples
from pipeline.data.transforms import scale_boxes
from pipeline.inputs import InputConfig
from pipeline.lightning import ViTDataModule

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def mask_extents(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Inclusive xyxy extent of instances 1..count of an instance mask."""
    extents = []
    for instance in range(1, count + 1):
        ys, xs = torch.nonzero(mask == instance, as_tuple=True)
        extents.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return torch.tensor(extents, dtype=torch.float32)


def rectangle_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """Instance mask of filled (inclusive) boxes: a shape without thin parts that resampling could lose."""
    mask = np.zeros((size, size), np.uint8)
    for instance, (x0, y0, x1, y1) in enumerate(boxes.astype(int), start=1):
        mask[y0 : y1 + 1, x0 : x1 + 1] = instance
    return mask


@pytest.mark.parametrize("seed", range(4))
def test_flip_and_crop_move_boxes_with_the_objects(seed):
    dataset = SyntheticShapes(num_images=8, image_size=64, max_instances=2)
    augmentation = Augmentation(crop_scale=(0.6, 1.0), hflip=True, color_jitter=0.0)
    transform = SampleTransform(InputConfig((48, 48), MEAN, STD), augmentation, seed=seed)
    checked = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        sample["mask"] = rectangle_mask(sample["boxes"], 64)
        out = transform(sample)
        present = torch.unique(out["mask"])
        if len(out["boxes"]) != len(sample["boxes"]) or len(present) - 1 != len(out["boxes"]):
            continue  # an instance cropped away: its box is dropped, nothing left to compare
        extents = mask_extents(out["mask"], len(out["boxes"]))
        assert (out["boxes"] - extents).abs().max() <= 1.0  # nearest-neighbour resampling moves an edge <= 1 px
        checked += 1
    assert checked >= 4


def test_a_flip_mirrors_inclusive_boxes_exactly():
    image = np.zeros((20, 20, 3), np.uint8)
    sample = {"image": image, "boxes": np.array([[2, 3, 5, 7]], np.float32), "box_labels": np.array([1]),
              "target": 1, "image_id": "x"}  # fmt: skip
    transform = SampleTransform(
        InputConfig((20, 20), MEAN, STD), Augmentation(crop_scale=(1.0, 1.0), hflip=True, color_jitter=0)
    )
    flipped = {tuple(transform(sample)["boxes"][0].tolist()) for _ in range(20)}
    assert flipped == {(2.0, 3.0, 5.0, 7.0), (14.0, 3.0, 17.0, 7.0)}  # pixel columns c -> 19 - c


def test_evaluation_resizes_normalizes_and_scales_boxes_like_the_protocol():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    boxes = np.array([[10.5, 20.0, 499.0, 299.0], [0.0, 0.0, 3.0, 3.0]], np.float32)
    sample = {"image": image, "boxes": boxes, "box_labels": np.array([0, 2]), "target": 2, "image_id": "img"}
    out = SampleTransform(InputConfig((224, 224), MEAN, STD))(sample)
    assert out["image"].shape == (3, 224, 224) and out["image"].dtype == torch.float32
    assert out["image"].min() >= -1.0 and out["image"].max() <= 1.0
    expected = [[int(10.5 / 500 * 224), int(20 / 300 * 224), int(499 / 500 * 224), int(299 / 300 * 224)], [0, 0, 1, 2]]
    assert out["boxes"].tolist() == expected
    assert out["target"].item() == 2 and out["box_labels"].tolist() == [0, 2]


def test_scale_boxes_truncates_toward_zero():
    scaled = scale_boxes(np.array([[99.9, 0.4, 100.0, 1.0]], np.float32), (100, 200), (224, 224))
    assert scaled.tolist() == [[111.0, 0.0, 112.0, 2.0]]


def test_collate_keeps_variable_box_lists_and_counts_skipped_samples():
    dataset = SyntheticShapes(num_images=4, image_size=32, max_instances=3)
    transform = SampleTransform(InputConfig((32, 32), MEAN, STD))
    samples = [transform(dataset[i]) for i in range(4)]
    batch = collate_samples([samples[0], None, samples[1], samples[2], None, samples[3]])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4,)
    assert [len(b) for b in batch["boxes"]] == [len(s["boxes"]) for s in samples]
    assert batch["mask"].shape == (4, 32, 32)
    assert batch["skipped"] == 2
    with pytest.raises(RuntimeError, match="All 2 samples of a batch failed to load"):
        collate_samples([None, None])


def test_datamodule_needs_an_input_config_without_a_model():
    source = ShapesSource(train_size=8, val_size=4, test_size=4, image_size=32)
    with pytest.raises(ValueError, match="image_size, mean and std"):
        ViTDataModule(source).setup("fit")
    data = ViTDataModule(source, batch_size=4, num_workers=0, image_size=(32, 32), mean=MEAN, std=STD)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["image_id"]) == 4
    assert data.num_classes == 6 and data.class_names[0] == "circle" and not data.multi_label


def test_workers_draw_different_augmentations():
    transform = SampleTransform(InputConfig((32, 32), MEAN, STD), Augmentation(), seed=0)
    sample = SyntheticShapes(num_images=1, image_size=32)[0]
    draws = []
    for seed in (1, 2, 1):
        transform.reseed(seed)
        draws.append(transform(sample)["image"])
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])


def test_importing_the_data_package_opens_no_network_connection_and_leaves_the_environment():
    """albumentations checks PyPI for updates at import unless told not to: nothing may reach the network."""
    probe = (
        "import socket\n"
        "def refuse(self, address): raise SystemExit(f'network connection attempted: {address}')\n"
        "socket.socket.connect = refuse\n"
        "import os, pipeline.data, pipeline.data.transforms\n"
        "assert 'NO_ALBUMENTATIONS_UPDATE' not in os.environ, 'the import changed the environment'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", probe], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
