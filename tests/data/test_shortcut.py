"""The shapes dataset's shortcut options: a class-coded marker off the objects, and a less reliable class hue."""

import hashlib

import numpy as np
import pytest

from pipeline.data.source import SPLITS
from pipeline.data.synthetic import MARKER_MODES as MODES
from pipeline.data.synthetic import ShapesSource, SyntheticShapes, default_marker_size

CLEARANCE = 2  # free rows the generator promises between the marker band and any object box

# sha256 of samples 0..n-1 (image, mask, boxes, box_labels, target), computed with the generator BEFORE the shortcut
# options existed: the options' defaults must leave every image bit-identical.
DIGESTS_BEFORE_SHORTCUTS = {
    "default": ({"num_images": 32}, "b2b5ca17595d3ee75e461d7e657c30f5ccee91afd3808712216cdaac88bcfdd6"),
    "harder": (
        {"num_images": 16, "seed": 5, "image_size": 96, "num_classes": 8, "max_instances": 3, "clutter": 6},
        "397e0b3143b764e24d6f1ad2afb2230194b51562a88b15478fff1c59f607e350",
    ),
    "random_colors": (
        {"num_images": 16, "seed": 2, "random_colors": True},
        "a1c43a77b95b62a7f6b284d7401f0f585c2758156886b80490b030fed71965ad",
    ),
    "small": ({"num_images": 16, "image_size": 32}, "86dd1b000be795ffaec58bba63e205ab10b719c1b219a3ba38ac8d4e9cbc3ac9"),
}
SOURCE_TEST_DIGEST_BEFORE_SHORTCUTS = "c29bae23bf629b3a51f1fc34e27570c2104141397dbb154661c608a1ac8f4820"


def digest(dataset: SyntheticShapes) -> str:
    sha = hashlib.sha256()
    for index in range(len(dataset)):
        sample = dataset[index]
        for key in ("image", "mask", "boxes", "box_labels"):
            sha.update(np.ascontiguousarray(sample[key]).tobytes())
        sha.update(str(sample["target"]).encode())
    return sha.hexdigest()


def assert_same_sample(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(np.asarray(first[key]), np.asarray(second[key]), err_msg=key)


def white_spots(dataset: SyntheticShapes, image: np.ndarray) -> list[int]:
    """The classes whose marker spot is entirely pure white in `image`: the markers actually drawn."""
    spots = []
    for class_index in range(dataset.num_classes):
        x_min, y_min, x_max, y_max = dataset.marker_box(class_index).astype(int)
        if (image[y_min : y_max + 1, x_min : x_max + 1] == 255).all():
            spots.append(class_index)
    return spots


class TestDefaultsLeaveTodaysImages:
    @pytest.mark.parametrize("name", DIGESTS_BEFORE_SHORTCUTS)
    def test_default_options_give_the_images_from_before_the_shortcut_options(self, name):
        options, expected = DIGESTS_BEFORE_SHORTCUTS[name]
        assert digest(SyntheticShapes(**options)) == expected

    @pytest.mark.parametrize(
        "shortcut_off",
        [
            {"marker_fraction": 0.0, "hue_reliability": 1.0},
            {"marker_mode": "shuffled"},  # no marker to move while marker_fraction is 0
            {"marker_mode": "absent", "marker_size": 3},
            {"border_fraction": 0.0, "border_width": 4},  # no border
        ],
    )
    def test_explicitly_disabled_shortcuts_give_the_images_from_before(self, shortcut_off):
        options, expected = DIGESTS_BEFORE_SHORTCUTS["default"]
        assert digest(SyntheticShapes(**options, **shortcut_off)) == expected

    def test_source_test_split_is_unchanged_for_every_test_marker_mode_without_markers(self):
        for test_marker in ("same", "shuffled", "absent"):
            test_split = ShapesSource(test_size=8, test_marker=test_marker).dataset("test")
            assert digest(test_split) == SOURCE_TEST_DIGEST_BEFORE_SHORTCUTS, test_marker


class TestMarker:
    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"image_size": 32, "num_classes": 8},  # the tightest default: 3 px markers in 4 px columns
            {"max_instances": 3, "clutter": 8},
            {"image_size": 96, "marker_size": 4},
        ],
    )
    def test_full_marker_sits_at_the_class_spot_clear_of_every_object_box(self, options):
        for seed in range(3):
            dataset = SyntheticShapes(num_images=60, seed=seed, marker_fraction=1.0, **options)
            for index in range(len(dataset)):
                sample = dataset[index]
                label = sample["target"]
                assert dataset.marker_class(index) == label
                assert white_spots(dataset, sample["image"]) == [label]
                marker_bottom = int(dataset.marker_box(label)[3])
                assert (sample["boxes"][:, 1] >= marker_bottom + 1 + CLEARANCE).all(), (seed, index)
                assert not sample["mask"][: marker_bottom + 1 + CLEARANCE].any()

    def test_marker_is_not_part_of_boxes_or_masks_and_changes_only_its_spot(self):
        marked = SyntheticShapes(num_images=40, marker_fraction=1.0)
        unmarked = SyntheticShapes(num_images=40, marker_fraction=1.0, marker_mode="absent")
        for index in range(len(marked)):
            with_marker, without = marked[index], unmarked[index]
            for key in ("boxes", "box_labels", "mask", "target", "image_id"):
                np.testing.assert_array_equal(with_marker[key], without[key], err_msg=key)
            x_min, y_min, x_max, y_max = marked.marker_box(with_marker["target"]).astype(int)
            off_spot = np.ones(with_marker["mask"].shape, bool)
            off_spot[y_min : y_max + 1, x_min : x_max + 1] = False
            np.testing.assert_array_equal(with_marker["image"][off_spot], without["image"][off_spot])
            assert white_spots(unmarked, without["image"]) == [] and unmarked.marker_class(index) is None

    def test_marker_frequency_follows_the_fraction(self):
        dataset = SyntheticShapes(num_images=400, marker_fraction=0.3, clutter=0)
        carriers = [bool(white_spots(dataset, dataset[index]["image"])) for index in range(len(dataset))]
        assert carriers == [dataset.marker_class(index) is not None for index in range(len(dataset))]
        assert 0.3 - 0.06 < np.mean(carriers) < 0.3 + 0.06

    def test_shuffled_marker_is_on_the_same_images_but_never_at_the_true_class(self):
        same = SyntheticShapes(num_images=300, marker_fraction=0.5)
        shuffled = SyntheticShapes(num_images=300, marker_fraction=0.5, marker_mode="shuffled")
        offsets = []
        for index in range(len(same)):
            label = shuffled[index]["target"]
            shuffled_class, same_class = shuffled.marker_class(index), same.marker_class(index)
            assert (shuffled_class is None) == (same_class is None)
            assert white_spots(shuffled, shuffled[index]["image"]) == (
                [] if shuffled_class is None else [shuffled_class]
            )
            if shuffled_class is not None:
                assert shuffled_class != label
                offsets.append((shuffled_class - label) % shuffled.num_classes)
        assert set(offsets) == set(range(1, same.num_classes))  # every wrong class gets used

    def test_spots_are_evenly_spaced_along_the_top_and_never_touch(self):
        for image_size in (32, 48, 64, 224):
            for num_classes in range(2, 9):
                dataset = SyntheticShapes(num_images=1, image_size=image_size, num_classes=num_classes)
                spots = np.stack([dataset.marker_box(c) for c in range(num_classes)])  # (C, 4) inclusive xyxy
                assert (spots[:, 2] - spots[:, 0] + 1 == dataset.marker_size).all()
                assert (spots[:, 1] == spots[0, 1]).all() and spots[0, 1] < 2  # one row band by the top border
                assert (spots[1:, 0] > spots[:-1, 2] + 1).all()  # at least one free column between two spots
                centres = (spots[:, 0] + spots[:, 2]) / 2
                gaps = np.diff(centres)
                assert gaps.max() - gaps.min() <= 1.0 and abs(centres.mean() - (image_size - 1) / 2) <= 1.0

    def test_default_marker_size_scales_with_the_image(self):
        assert [default_marker_size(size) for size in (32, 64, 128, 224)] == [3, 5, 10, 18]
        assert SyntheticShapes(num_images=1).marker_size == 5

    def test_samples_with_markers_are_deterministic(self):
        options = {"num_images": 20, "seed": 4, "marker_fraction": 0.5, "hue_reliability": 0.5}
        first, second = SyntheticShapes(**options), SyntheticShapes(**options)
        for index in (19, 3, 0):
            assert_same_sample(first[index], second[index])


class TestHueReliability:
    def test_changes_only_the_colour_of_a_share_of_the_objects(self):
        reliable, unreliable = SyntheticShapes(num_images=300), SyntheticShapes(num_images=300, hue_reliability=0.7)
        recoloured = []
        for index in range(len(reliable)):
            before, after = reliable[index], unreliable[index]
            for key in ("boxes", "box_labels", "mask", "target"):
                np.testing.assert_array_equal(before[key], after[key], err_msg=key)
            off_object = before["mask"] == 0
            np.testing.assert_array_equal(before["image"][off_object], after["image"][off_object])
            recoloured.append(not np.array_equal(before["image"], after["image"]))
        assert 0.3 - 0.07 < np.mean(recoloured) < 0.3 + 0.07

    def test_zero_reliability_is_random_colors(self):
        never, random_colors = (
            SyntheticShapes(num_images=20, hue_reliability=0.0),
            SyntheticShapes(20, random_colors=True),
        )
        for index in range(len(never)):
            assert_same_sample(never[index], random_colors[index])


class TestShapesSource:
    def test_train_and_val_carry_the_true_marker_and_test_its_own_mode(self):
        source = ShapesSource(
            train_size=8, val_size=8, test_size=8, marker_fraction=1.0, hue_reliability=0.7, test_marker="shuffled"
        )
        for split in SPLITS:
            dataset = source.dataset(split)
            assert (dataset.marker_fraction, dataset.hue_reliability, dataset.marker_size) == (1.0, 0.7, 5)
            assert dataset.marker_mode == ("shuffled" if split == "test" else "same")

    def test_test_marker_changes_nothing_but_the_marker(self):
        common = {"train_size": 0, "val_size": 0, "test_size": 30, "marker_fraction": 1.0, "marker_size": 4}
        tests = {
            mode: ShapesSource(**common, test_marker=mode).dataset("test") for mode in ("same", "shuffled", "absent")
        }
        for index in range(30):
            samples = {mode: dataset[index] for mode, dataset in tests.items()}
            label = samples["same"]["target"]
            assert white_spots(tests["same"], samples["same"]["image"]) == [label]
            assert white_spots(tests["absent"], samples["absent"]["image"]) == []
            (wrong_class,) = white_spots(tests["shuffled"], samples["shuffled"]["image"])
            assert wrong_class != label
            marker_free = np.ones((64, 64), bool)
            for class_index in (label, wrong_class):
                x_min, y_min, x_max, y_max = tests["same"].marker_box(class_index).astype(int)
                marker_free[y_min : y_max + 1, x_min : x_max + 1] = False
            for mode in ("shuffled", "absent"):
                np.testing.assert_array_equal(samples[mode]["mask"], samples["same"]["mask"])
                np.testing.assert_array_equal(
                    samples[mode]["image"][marker_free], samples["same"]["image"][marker_free]
                )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"marker_fraction": 1.5}, r"marker_fraction must be in \[0, 1\], got 1.5"),
        ({"marker_fraction": -0.1}, r"marker_fraction must be in \[0, 1\], got -0.1"),
        ({"hue_reliability": 2.0}, r"hue_reliability must be in \[0, 1\], got 2.0"),
        ({"marker_size": 0}, r"marker_size must be in \[1, 9\] for 6 classes at 64 px, got 0"),
        ({"marker_size": 10}, r"marker_size must be in \[1, 9\] for 6 classes at 64 px, got 10"),
        ({"border_fraction": 1.1}, r"border_fraction must be in \[0, 1\], got 1.1"),
        ({"border_width": 0}, r"border_width must be in \[1, 8\] at 64 px, got 0"),
        ({"border_width": 9}, r"border_width must be in \[1, 8\] at 64 px, got 9"),
        ({"marker_mode": "swapped"}, r"marker_mode must be one of \('same', 'shuffled', 'absent'\), got 'swapped'"),
    ],
)
def test_bad_shortcut_options_raise_value_errors_naming_value_and_range(options, message):
    with pytest.raises(ValueError, match=message):
        SyntheticShapes(**{"num_images": 10, **options})


def test_shapes_source_rejects_an_unknown_test_marker():
    with pytest.raises(ValueError, match=r"test_marker must be one of \('same', 'shuffled', 'absent'\), got 'wrong'"):
        ShapesSource(test_marker="wrong")


class TestTintedBorder:
    """The second shortcut, of another kind: a frame in the class hue all around the image, not a spot."""

    def test_full_border_in_the_class_tint_clear_of_every_object_box(self):
        dataset = SyntheticShapes(24, border_fraction=1.0, hue_reliability=0.7)
        width = dataset.border_width
        assert width == 2  # 2 px per 64 px
        for index in range(len(dataset)):
            sample = dataset[index]
            tint = np.round(dataset.border_color(sample["target"])).astype(np.uint8)
            frame = np.ones((64, 64), bool)
            frame[width:-width, width:-width] = False
            assert (sample["image"][frame] == tint).all()
            x_min, y_min, x_max, y_max = (
                sample["boxes"].min(axis=0)[:2].tolist() + sample["boxes"].max(axis=0)[2:].tolist()
            )
            assert min(x_min, y_min) >= width + CLEARANCE and max(x_max, y_max) <= 63 - width - CLEARANCE
            assert not sample["mask"][frame].any()

    def test_tints_of_the_classes_differ_and_the_fraction_is_followed(self):
        dataset = SyntheticShapes(400, border_fraction=0.25)
        tints = {tuple(np.round(dataset.border_color(c)).astype(int)) for c in range(dataset.num_classes)}
        assert len(tints) == dataset.num_classes
        carried = sum(dataset.border_class(index) is not None for index in range(len(dataset)))
        assert 0.18 < carried / len(dataset) < 0.32  # 100 expected; a seeded draw, never flaky

    def test_shuffled_border_is_on_the_same_images_in_a_wrong_class_tint_and_absent_leaves_the_rest(self):
        modes = {mode: SyntheticShapes(40, border_fraction=0.5, marker_mode=mode) for mode in MODES}
        for index in range(40):
            same, shuffled = modes["same"].border_class(index), modes["shuffled"].border_class(index)
            assert (same is None) is (shuffled is None) and modes["absent"].border_class(index) is None
            label = modes["same"][index]["target"]
            assert same in (None, label) and shuffled != label
            inner = (slice(2, -2), slice(2, -2))
            for mode in ("shuffled", "absent"):
                np.testing.assert_array_equal(modes[mode][index]["image"][inner], modes["same"][index]["image"][inner])

    def test_the_source_passes_the_border_to_every_split_and_test_marker_moves_it_on_test(self):
        source = ShapesSource(8, 8, 8, border_fraction=1.0, test_marker="shuffled")
        for split in SPLITS:
            dataset = source.dataset(split)
            assert dataset.border_fraction == 1.0
            label = dataset[0]["target"]
            assert (dataset.border_class(0) == label) is (split != "test")
