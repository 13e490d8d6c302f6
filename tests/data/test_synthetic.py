"""The embedded shapes dataset: deterministic, exact boxes, easy by default, harder by option."""

import cv2
import numpy as np
import pytest
from torch.utils.data import DataLoader

from pipeline.data.source import SPLITS
from pipeline.data.synthetic import SHAPE_NAMES, ShapesSource, SyntheticShapes


def assert_same_sample(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(np.asarray(first[key]), np.asarray(second[key]), err_msg=key)


def object_hue(sample: dict) -> float:
    """Circular mean hue (0..1) of the object pixels."""
    hue = cv2.cvtColor(sample["image"], cv2.COLOR_RGB2HSV_FULL)[..., 0][sample["mask"] > 0] / 256.0
    return float(np.angle(np.exp(2j * np.pi * hue).mean()) / (2 * np.pi) % 1.0)


def hue_histograms(dataset: SyntheticShapes, indices: range) -> tuple[np.ndarray, np.ndarray]:
    """Colour-only features: the normalized 16-bin hue histogram of the saturated pixels, and the labels."""
    features, labels = [], []
    for index in indices:
        sample = dataset[index]
        hsv = cv2.cvtColor(sample["image"], cv2.COLOR_RGB2HSV_FULL)
        saturated_hues = hsv[..., 0][hsv[..., 1] > 128]
        features.append(np.bincount(saturated_hues // 16, minlength=16) / max(len(saturated_hues), 1))
        labels.append(sample["target"])
    return np.array(features), np.array(labels)


def nearest_class_mean_accuracy(dataset: SyntheticShapes) -> float:
    """Fit class means of the hue histograms on 600 images, score nearest-mean predictions on 200 others."""
    train_features, train_labels = hue_histograms(dataset, range(600))
    test_features, test_labels = hue_histograms(dataset, range(600, 800))
    class_means = np.stack([train_features[train_labels == c].mean(axis=0) for c in range(dataset.num_classes)])
    distances = np.linalg.norm(test_features[:, None, :] - class_means[None, :, :], axis=2)  # (test, classes)
    return float((distances.argmin(axis=1) == test_labels).mean())


def test_sample_is_a_raw_sample_with_the_documented_types():
    sample = SyntheticShapes(num_images=4, image_size=48, seed=7)[3]
    assert sample["image"].shape == (48, 48, 3) and sample["image"].dtype == np.uint8
    assert sample["mask"].shape == (48, 48) and sample["mask"].dtype == np.uint8
    assert sample["boxes"].shape == (1, 4) and sample["boxes"].dtype == np.float32
    assert sample["box_labels"].dtype == np.int64 and sample["box_labels"].tolist() == [sample["target"]]
    assert type(sample["target"]) is int
    assert sample["image_id"] == "shapes-7-3"


def test_same_seed_and_index_give_identical_samples_across_dataset_objects():
    first, second = SyntheticShapes(num_images=20, seed=3), SyntheticShapes(num_images=20, seed=3)
    for index in (19, 0, 7):  # any order: a sample depends on (seed, index) only
        assert_same_sample(first[index], second[index])


def test_dataloader_workers_give_the_same_samples_as_the_main_process():
    dataset = SyntheticShapes(num_images=12, seed=5, max_instances=3)
    in_workers = list(DataLoader(dataset, batch_size=None, num_workers=2))
    in_process = list(DataLoader(dataset, batch_size=None, num_workers=0))
    for worker_sample, process_sample in zip(in_workers, in_process, strict=True):
        assert_same_sample(worker_sample, process_sample)


def test_different_seeds_give_different_images():
    first, second = SyntheticShapes(num_images=10, seed=0), SyntheticShapes(num_images=10, seed=1)
    assert all(not np.array_equal(first[i]["image"], second[i]["image"]) for i in range(10))


def test_index_out_of_range_raises_index_error():
    with pytest.raises(IndexError, match="index 5"):
        SyntheticShapes(num_images=5)[5]


@pytest.mark.parametrize("options", [{}, {"max_instances": 3, "clutter": 8}, {"image_size": 32, "num_classes": 8}])
def test_boxes_are_the_inclusive_extent_of_each_instance_in_the_mask(options):
    dataset = SyntheticShapes(num_images=100, **options)
    size = dataset.image_size
    for index in range(len(dataset)):
        sample = dataset[index]
        instances = len(sample["boxes"])
        assert 1 <= instances <= dataset.max_instances
        assert sorted(np.unique(sample["mask"]).tolist()) == list(range(instances + 1))
        assert (sample["boxes"] >= 0).all() and (sample["boxes"] <= size - 1).all()
        assert (sample["box_labels"] == sample["target"]).all()
        for instance, (x_min, y_min, x_max, y_max) in enumerate(sample["boxes"], start=1):
            rows, cols = np.nonzero(sample["mask"] == instance)
            assert (x_min, y_min, x_max, y_max) == (cols.min(), rows.min(), cols.max(), rows.max())


def test_classes_are_roughly_balanced():
    dataset = SyntheticShapes(num_images=600)
    counts = np.bincount([dataset[i]["target"] for i in range(len(dataset))], minlength=6)
    assert counts.min() > 0.7 * 100 and counts.max() < 1.3 * 100, counts


@pytest.mark.parametrize("num_classes", [6, 8])
def test_every_class_has_its_own_hue_by_default(num_classes):
    dataset = SyntheticShapes(num_images=300, num_classes=num_classes)
    hues_by_class = {c: [] for c in range(num_classes)}
    for index in range(len(dataset)):
        sample = dataset[index]
        hues_by_class[sample["target"]].append(object_hue(sample))
    mean_hues = np.array(
        [np.angle(np.exp(2j * np.pi * np.array(h)).mean()) / (2 * np.pi) for h in hues_by_class.values()]
    )
    gaps = np.abs((mean_hues[:, None] - mean_hues[None, :] + 0.5) % 1.0 - 0.5)  # circular distance, (classes, classes)
    np.fill_diagonal(gaps, 1.0)
    assert gaps.min() > 0.5 / num_classes, gaps.min()


def test_random_colors_changes_only_the_object_colours():
    plain, random_colors = SyntheticShapes(num_images=40), SyntheticShapes(num_images=40, random_colors=True)
    class_zero_hues = []
    for index in range(len(plain)):
        plain_sample, random_sample = plain[index], random_colors[index]
        np.testing.assert_array_equal(plain_sample["mask"], random_sample["mask"])
        off_object = plain_sample["mask"] == 0
        np.testing.assert_array_equal(plain_sample["image"][off_object], random_sample["image"][off_object])
        assert not np.array_equal(plain_sample["image"], random_sample["image"])
        if random_sample["target"] == 0:
            class_zero_hues.append(object_hue(random_sample))
    assert np.ptp(class_zero_hues) > 0.5  # class 0 (red by default) now comes in any hue


def test_clutter_only_adds_distractors_off_the_objects():
    clean, cluttered = SyntheticShapes(num_images=40, clutter=0), SyntheticShapes(num_images=40, clutter=10)
    changed_pixels = []
    for index in range(len(clean)):
        clean_sample, cluttered_sample = clean[index], cluttered[index]
        np.testing.assert_array_equal(clean_sample["boxes"], cluttered_sample["boxes"])
        changed = (clean_sample["image"] != cluttered_sample["image"]).any(axis=2)
        for x_min, y_min, x_max, y_max in clean_sample["boxes"].astype(int):
            assert not changed[y_min : y_max + 1, x_min : x_max + 1].any()
        changed_pixels.append(changed.sum())
    assert min(changed_pixels) > 0


def test_max_instances_draws_several_instances_of_the_one_class():
    dataset = SyntheticShapes(num_images=60, max_instances=3)
    instance_counts = [len(dataset[i]["boxes"]) for i in range(len(dataset))]
    assert set(instance_counts) == {1, 2, 3}


def test_shapes_source_splits_have_their_sizes_and_share_no_image():
    source = ShapesSource(train_size=30, val_size=20, test_size=10, seed=2)
    assert source.class_names == list(SHAPE_NAMES[:6]) and source.num_classes == 6 and not source.multi_label
    datasets = {split: source.dataset(split) for split in SPLITS}
    assert {split: len(dataset) for split, dataset in datasets.items()} == {"train": 30, "val": 20, "test": 10}
    image_ids = [dataset[i]["image_id"] for dataset in datasets.values() for i in range(len(dataset))]
    assert len(set(image_ids)) == len(image_ids)
    first_images = [dataset[0]["image"] for dataset in datasets.values()]
    assert not any(np.array_equal(a, b) for i, a in enumerate(first_images) for b in first_images[i + 1 :])
    split_seeds = {ShapesSource(seed=seed).dataset(split).seed for seed in (0, 1, 2) for split in SPLITS}
    assert len(split_seeds) == 3 * len(SPLITS)  # no two (seed, split) pairs share a dataset seed


def test_shapes_source_passes_the_options_to_every_split():
    source = ShapesSource(image_size=48, num_classes=8, random_colors=True, clutter=5, max_instances=2)
    for split in SPLITS:
        dataset = source.dataset(split)
        assert (dataset.image_size, dataset.num_classes, dataset.random_colors) == (48, 8, True)
        assert (dataset.clutter, dataset.max_instances) == (5, 2)


def test_shapes_source_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="'valid'.*'train', 'val', 'test'"):
        ShapesSource().dataset("valid")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be in \[2, 8\], got 1"),
        ({"num_classes": 9}, r"num_classes must be in \[2, 8\], got 9"),
        ({"image_size": 16}, r"image_size must be >= 32, got 16"),
        ({"max_instances": 0}, r"max_instances must be in \[1, 3\], got 0"),
        ({"max_instances": 4}, r"max_instances must be in \[1, 3\], got 4"),
        ({"clutter": -1}, r"clutter must be >= 0, got -1"),
        ({"seed": -1}, r"seed must be >= 0, got -1"),
        ({"num_images": -1}, r"num_images must be >= 0, got -1"),
    ],
)
def test_bad_options_raise_value_errors_naming_value_and_range(options, message):
    with pytest.raises(ValueError, match=message):
        SyntheticShapes(**{"num_images": 10, **options})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_size": -1}, r"val_size must be >= 0, got -1"),
        ({"seed": -2}, r"seed must be >= 0, got -2"),
        ({"num_classes": 12}, r"num_classes must be in \[2, 8\], got 12"),
    ],
)
def test_shapes_source_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        ShapesSource(**options)


def test_default_is_learnable_from_colour_alone():
    assert nearest_class_mean_accuracy(SyntheticShapes(num_images=800)) > 0.9


def test_random_colors_removes_the_colour_cue():
    assert nearest_class_mean_accuracy(SyntheticShapes(num_images=800, random_colors=True)) < 0.3
