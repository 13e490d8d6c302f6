"""Each dataset reader loads its real on-disk layout with exactly the labels, boxes and masks the fixture wrote."""

from __future__ import annotations

import numpy as np
import pytest
from jsonargparse import ArgumentParser

from pipeline.data import ClassFolderSource
from pipeline.data.coco import COCOSource
from pipeline.data.cub import CUBSource
from pipeline.data.file_source import RawSampleDataset
from pipeline.data.folder import UNLABELLED, FolderSource, ImageFolderDataset
from pipeline.data.imagenet import ImageNetSource
from pipeline.data.source import ImageSource
from pipeline.data.voc import VOC_CLASSES, VOCSource, read_voc_xml
from tests.helpers.datasets import (
    COCO_CLASS_INDEX,
    CUB_MASK_FRINGE,
    IMAGENET_SYNSETS,
    VOC_MASKED_IDS,
    VOC_SAMPLE_ID,
    VOC_SAMPLE_XML,
    FixtureSample,
    box_array,
    write_class_folders,
    write_coco,
    write_cub,
    write_folder,
    write_imagenet,
    write_voc,
)


def load_all(dataset: RawSampleDataset) -> dict[str, dict]:
    """Every sample of `dataset` by image id, each checked against the RawSample contract."""
    samples = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].dtype == np.uint8 and sample["image"].ndim == 3 and sample["image"].shape[2] == 3
        assert sample["boxes"].dtype == np.float32 and sample["boxes"].shape == (len(sample["box_labels"]), 4)
        assert sample["box_labels"].dtype == np.int64
        samples[sample["image_id"]] = sample
    return samples


def assert_matches(sample: dict, expected: FixtureSample, include_difficult: bool = False) -> None:
    """The sample has the fixture's image size, boxes and box labels."""
    objects = [obj for obj in expected.objects if include_difficult or not obj.difficult]
    width, height = expected.size
    assert sample["image"].shape == (height, width, 3)
    np.testing.assert_array_equal(sample["boxes"], box_array(objects))
    np.testing.assert_array_equal(sample["box_labels"], [obj.label for obj in objects])


def test_voc_reads_boxes_and_multi_hot_targets_without_difficult_objects(tmp_path):
    fixture = write_voc(tmp_path / "VOC2012")
    source = VOCSource(tmp_path / "VOC2012")
    assert source.multi_label and source.class_names == list(VOC_CLASSES) and source.num_classes == 20
    for split in ("train", "val"):
        samples = load_all(source.dataset(split))
        assert set(samples) == {image_id for image_id, expected in fixture.items() if expected.split == split}
        for image_id, sample in samples.items():
            assert_matches(sample, fixture[image_id])
            present = {obj.label for obj in fixture[image_id].objects if not obj.difficult}
            assert sample["target"].dtype == np.float32 and sample["target"].shape == (20,)
            assert set(np.flatnonzero(sample["target"])) == present
            assert "mask" not in sample


def test_voc_keeps_an_image_whose_objects_are_all_difficult_with_no_boxes_and_no_label(tmp_path):
    write_voc(tmp_path / "VOC2012")
    sample = load_all(VOCSource(tmp_path / "VOC2012").dataset("val"))["2008_000023"]
    assert sample["boxes"].shape == (0, 4) and not sample["target"].any()


def test_voc_include_difficult_keeps_difficult_boxes_and_their_classes(tmp_path):
    fixture = write_voc(tmp_path / "VOC2012")
    samples = load_all(VOCSource(tmp_path / "VOC2012", include_difficult=True).dataset("train"))
    assert_matches(samples["2008_000008"], fixture["2008_000008"], include_difficult=True)
    person, horse = VOC_CLASSES.index("person"), VOC_CLASSES.index("horse")
    assert set(np.flatnonzero(samples["2008_000008"]["target"])) == {horse, person}


def test_voc_real_sample_annotation_is_read_by_its_file_stem_not_its_filename_field(tmp_path):
    fixture = write_voc(tmp_path / "VOC2012")
    annotation = read_voc_xml(tmp_path / "VOC2012" / "Annotations" / f"{VOC_SAMPLE_ID}.xml")
    assert (tmp_path / "VOC2012" / "Annotations" / f"{VOC_SAMPLE_ID}.xml").read_text() == VOC_SAMPLE_XML
    assert annotation.size == (335, 500)
    assert [(obj.name, obj.box, obj.difficult) for obj in annotation.objects] == [
        ("train", (139, 200, 207, 301), False)
    ]
    sample = load_all(VOCSource(tmp_path / "VOC2012").dataset("train"))[VOC_SAMPLE_ID]
    assert_matches(sample, fixture[VOC_SAMPLE_ID])
    assert sample["boxes"].tolist() == [[139.0, 200.0, 207.0, 301.0]]  # 1-based, as in the file


def test_voc_masks_number_objects_like_the_boxes_and_drop_boundaries_and_left_out_objects(tmp_path):
    fixture = write_voc(tmp_path / "VOC2012")
    for include_difficult in (False, True):
        source = VOCSource(tmp_path / "VOC2012", include_difficult=include_difficult, use_masks=True)
        samples = {**load_all(source.dataset("train")), **load_all(source.dataset("val"))}
        assert set(samples) == set(VOC_MASKED_IDS)
        for image_id, sample in samples.items():
            assert_matches(sample, fixture[image_id], include_difficult)
            mask = sample["mask"]
            assert mask.dtype == np.uint8 and mask.shape == sample["image"].shape[:2]
            assert set(np.unique(mask)) == {0, *range(1, len(sample["boxes"]) + 1)}
            for object_id, (xmin, ymin, xmax, ymax) in enumerate(sample["boxes"].astype(int), start=1):
                assert mask[(ymin + ymax) // 2 - 1, (xmin + xmax) // 2 - 1] == object_id  # 1-based box, 0-based mask
                assert mask[ymin - 1, (xmin + xmax) // 2 - 1] == 0  # the 255 boundary reads as background


@pytest.mark.parametrize("layout", ["flat", "ilsvrc"])
def test_imagenet_reads_train_folders_and_val_boxes(tmp_path, layout):
    fixture = write_imagenet(tmp_path / "imagenet", layout=layout)
    source = ImageNetSource(tmp_path / "imagenet")
    assert source.class_names == [names for _, names in IMAGENET_SYNSETS]
    assert source.wnids == [wnid for wnid, _ in IMAGENET_SYNSETS] and not source.multi_label
    for split in ("train", "val"):
        samples = load_all(source.dataset(split))
        assert set(samples) == {image_id for image_id, expected in fixture.items() if expected.split == split}
        for image_id, sample in samples.items():
            assert_matches(sample, fixture[image_id])
            assert sample["target"] == fixture[image_id].label
    assert source.dataset("test") is source.dataset("val")


def test_imagenet_val_boxes_from_xml_and_from_csv_are_the_same(tmp_path):
    write_imagenet(tmp_path / "imagenet")
    from_xml = load_all(ImageNetSource(tmp_path / "imagenet", val_boxes="xml").dataset("val"))
    from_csv = load_all(ImageNetSource(tmp_path / "imagenet", val_boxes="csv").dataset("val"))
    assert from_xml.keys() == from_csv.keys() and len(from_xml) == 3
    for image_id, sample in from_xml.items():
        np.testing.assert_array_equal(sample["boxes"], from_csv[image_id]["boxes"])
        np.testing.assert_array_equal(sample["box_labels"], from_csv[image_id]["box_labels"])
        assert sample["target"] == from_csv[image_id]["target"]


def test_imagenet_auto_falls_back_to_the_csv_without_xml(tmp_path):
    fixture = write_imagenet(tmp_path / "imagenet", xml=False)
    samples = load_all(ImageNetSource(tmp_path / "imagenet").dataset("val"))
    for image_id, sample in samples.items():
        assert_matches(sample, fixture[image_id])


def test_cub_reads_float_boxes_as_xyxy_and_serves_test_for_val(tmp_path):
    fixture = write_cub(tmp_path / "CUB_200_2011")
    source = CUBSource(tmp_path / "CUB_200_2011")
    assert source.class_names == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    for split in ("train", "test"):
        samples = load_all(source.dataset(split))
        assert set(samples) == {image_id for image_id, expected in fixture.items() if expected.split == split}
        for image_id, sample in samples.items():
            assert_matches(sample, fixture[image_id])
            assert sample["target"] == fixture[image_id].label
    assert source.dataset("val") is source.dataset("test")
    x, y, width, height = 10.0, 8.5, 40.0, 30.25  # image 1 in bounding_boxes.txt
    train = load_all(source.dataset("train"))
    assert [x, y, x + width, y + height] in [sample["boxes"][0].tolist() for sample in train.values()]


def test_cub_masks_are_one_on_the_bird_and_zero_on_the_faint_fringe(tmp_path):
    write_cub(tmp_path / "CUB_200_2011")
    for sample in load_all(CUBSource(tmp_path / "CUB_200_2011", use_masks=True).dataset("test")).values():
        xmin, ymin, xmax, ymax = sample["boxes"][0]
        mask = sample["mask"]
        assert set(np.unique(mask)) == {0, 1}
        assert mask[int((ymin + ymax) / 2), int((xmin + xmax) / 2)] == 1
        assert mask[int(ymin), int((xmin + xmax) / 2)] == 0  # drawn at gray level CUB_MASK_FRINGE
    assert CUB_MASK_FRINGE < 128


def test_coco_maps_category_ids_in_id_order_and_labels_by_the_largest_box(tmp_path):
    fixture = write_coco(tmp_path)
    source = COCOSource(
        tmp_path / "images", train_json=tmp_path / "annotations/train.json", val_json=tmp_path / "annotations/val.json"
    )
    assert source.class_names == ["dog", "cat", "bird"] and COCO_CLASS_INDEX == {3: 0, 7: 1, 12: 2}
    for split in ("train", "val"):
        samples = load_all(source.dataset(split))
        assert set(samples) == {name for name, expected in fixture.items() if expected.split == split}
        for name, sample in samples.items():
            expected = fixture[name]
            assert sample["target"] == expected.label
            own_boxes = [obj for obj in expected.objects if obj.label == expected.label]
            np.testing.assert_array_equal(sample["boxes"], box_array(own_boxes))
            assert (sample["box_labels"] == expected.label).all()
    cat_and_dog = load_all(source.dataset("train"))["cat_and_dog.jpg"]
    assert cat_and_dog["target"] == 1 and cat_and_dog["boxes"].tolist() == [[10, 10, 70, 60]]
    with pytest.raises(ValueError, match="test_json"):
        source.dataset("test")


def test_coco_multi_label_keeps_every_box_and_a_multi_hot_target(tmp_path):
    fixture = write_coco(tmp_path)
    source = COCOSource(tmp_path / "images", val_json=tmp_path / "annotations/val.json", multi_label=True)
    assert source.multi_label
    for name, sample in load_all(source.dataset("val")).items():
        assert_matches(sample, fixture[name])
        assert sample["target"].shape == (3,)
        assert set(np.flatnonzero(sample["target"])) == {obj.label for obj in fixture[name].objects}


def test_folder_serves_every_image_under_it_unlabelled(tmp_path):
    paths = write_folder(tmp_path / "inputs")
    source = FolderSource(tmp_path / "inputs", class_names=["a", "b"])
    assert source.num_classes == 2
    for dataset in (source.dataset("predict"), ImageFolderDataset(tmp_path / "inputs")):
        samples = load_all(dataset)
        assert list(samples) == [str(path) for path in paths]
        for sample in samples.values():
            assert sample["target"] == UNLABELLED and sample["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="unknown split 'train'"):
        source.dataset("train")


def test_samples_are_independent_copies(tmp_path):
    write_voc(tmp_path / "VOC2012")
    dataset = VOCSource(tmp_path / "VOC2012").dataset("val")
    first = dataset[0]
    first["boxes"] += 1000
    first["target"][:] = 7
    assert dataset[0]["boxes"].max() < 1000 and dataset[0]["target"].max() <= 1


def test_every_source_builds_from_a_class_path_config(tmp_path):
    """Constructor arguments are typed, so configs can set them through jsonargparse `class_path`/`init_args`; every
    source is exported from `pipeline.data`, so every config names it the same way."""
    write_voc(tmp_path / "voc")
    write_imagenet(tmp_path / "imagenet")
    write_cub(tmp_path / "cub")
    write_coco(tmp_path / "coco")
    write_folder(tmp_path / "folder")
    write_class_folders(tmp_path / "class_folders", "csv")
    init_args = {
        VOCSource: {"root": str(tmp_path / "voc"), "include_difficult": True, "use_masks": True},
        ImageNetSource: {"root": str(tmp_path / "imagenet"), "val_boxes": "csv"},
        CUBSource: {"root": str(tmp_path / "cub"), "use_masks": True},
        COCOSource: {
            "image_root": str(tmp_path / "coco/images"),
            "val_json": str(tmp_path / "coco/annotations/val.json"),
        },
        FolderSource: {"root": str(tmp_path / "folder"), "class_names": ["a", "b"]},
        ClassFolderSource: {"root": str(tmp_path / "class_folders"), "classes": ["dog", "cat"], "box_file": "auto"},
    }
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--source", type=ImageSource)
    for source_class, arguments in init_args.items():
        class_path = f"pipeline.data.{source_class.__name__}"
        config = parser.parse_object(
            {"source": {"class_path": class_path, "init_args": arguments | {"on_bad_sample": "skip"}}}
        )
        source = parser.instantiate(config).source
        assert type(source) is source_class and source.bad_samples.on_bad_sample == "skip"
        assert len(source.dataset("val")) > 0
