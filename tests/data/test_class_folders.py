"""Class folders with boxes from side files (metadata.jsonl, CSV) or none; unboxed images kept everywhere."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from pipeline.data import BadSampleError, BadSampleWarning, ClassFolderSource, COCOSource, ImageNetSource, LayoutError
from tests.helpers.datasets import CLASS_FOLDER_CLASSES, write_class_folders, write_coco, write_image, write_imagenet


def records(source: ClassFolderSource, split: str) -> dict:
    return {record.image_id: record for record in source.dataset(split).records}


@pytest.mark.parametrize("box_format", ["jsonl", "csv"])
def test_side_file_boxes_are_the_hand_computed_corners(tmp_path, box_format):
    write_class_folders(tmp_path, box_format)
    source = ClassFolderSource(tmp_path)
    assert source.class_names == list(CLASS_FOLDER_CLASSES)
    train, val = records(source, "train"), records(source, "val")
    # the hidden image and the text file are not samples; upper-case extensions are
    assert sorted(train) == ["cat/c1.jpg", "cat/sub/c2.JPG", "dog/d1.png", "fox/f1.jpeg"]
    assert sorted(val) == ["cat/c3.jpg", "dog/d2.PNG", "fox/f2.jpg"]
    # jsonl bbox [10, 5, 30.5, 20] (x, y, w, h) and CSV 10,5,40.5,25 are both (10, 5, 40.5, 25)
    np.testing.assert_array_equal(train["dog/d1.png"].boxes, [[10, 5, 40.5, 25]])
    np.testing.assert_array_equal(val["cat/c3.jpg"].boxes, [[10, 5, 40.5, 25], [50, 10, 70, 40]])
    np.testing.assert_array_equal(val["dog/d2.PNG"].boxes, [[0, 30, 59, 89]])
    assert [val[name].target for name in sorted(val)] == [0, 1, 2]
    assert val["dog/d2.PNG"].image_size == (60, 90)  # read from the header: the image has boxes
    for unboxed in (train["cat/sub/c2.JPG"], train["fox/f1.jpeg"], val["fox/f2.jpg"]):
        assert unboxed.boxes.shape == (0, 4) and unboxed.image_size is None  # kept, no header read


def test_no_side_file_means_labels_only(tmp_path):
    write_class_folders(tmp_path, None)
    val = records(ClassFolderSource(tmp_path), "val")
    assert [(val[n].target, len(val[n].boxes)) for n in sorted(val)] == [(0, 0), (1, 0), (2, 0)]


def test_symlinked_class_folder_and_file_are_followed_and_a_symlink_loop_ends(tmp_path):
    write_class_folders(tmp_path / "data", None)
    write_image(tmp_path / "elsewhere" / "owls" / "o1.jpg", (30, 20), [])
    (tmp_path / "data" / "train" / "owl").symlink_to(tmp_path / "elsewhere" / "owls")
    (tmp_path / "data" / "val" / "owl").mkdir()
    (tmp_path / "data" / "val" / "owl" / "o2.jpg").symlink_to(tmp_path / "elsewhere" / "owls" / "o1.jpg")
    (tmp_path / "elsewhere" / "owls" / "loop").symlink_to(tmp_path / "elsewhere")  # owls/loop/owls/loop/...
    source = ClassFolderSource(tmp_path / "data")
    assert source.class_names == ["cat", "dog", "fox", "owl"]
    assert [r.target for n, r in records(source, "train").items() if n.startswith("owl/")] == [3]
    assert records(source, "val")["owl/o2.jpg"].target == 3


def test_classes_fix_the_order_or_take_a_subset_and_mismatches_are_named(tmp_path):
    write_class_folders(tmp_path, None)  # (side-file category indices refer to the classes as given)
    with pytest.warns(UserWarning, match=r"folder\(s\) \['dog'\] are not in classes"):
        source = ClassFolderSource(tmp_path, classes=["fox", "cat"])
    val = records(source, "val")
    assert {name: record.target for name, record in val.items()} == {"cat/c3.jpg": 1, "fox/f2.jpg": 0}
    (tmp_path / "train" / "fox").rename(tmp_path / "train" / "wolf")
    with pytest.warns(UserWarning, match=re.escape(f"{tmp_path / 'train'} has no folder for class(es) ['fox']")):
        ClassFolderSource(tmp_path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: None, "has no train/ or val/ folder: expected {root}/train/<class>/<images>"),
        (lambda root: (root / "train").mkdir(), "{root}/train has no class folders: expected {root}/train/<class>"),
        (lambda root: (root / "val" / "only").mkdir(parents=True), "one class only (['only'])"),
    ],
)
def test_unreadable_layouts_name_the_path_and_what_was_expected(tmp_path, make, expected):
    make(tmp_path)
    with pytest.raises(LayoutError, match=re.escape(expected.format(root=tmp_path))):
        ClassFolderSource(tmp_path)


BAD_ROWS = {
    "a row for a missing file": (
        {"file_name": "cat/nope.jpg", "objects": {"bbox": [[1, 1, 4, 4]]}},
        "line 3: cat/nope.jpg is not an image under",
    ),
    "a box outside the image": (
        {"file_name": "fox/f2.jpg", "objects": {"bbox": [[60, 50, 5, 5]]}},
        "fox/f2.jpg, object 0: box (60, 50, 65, 55) lies outside the 56x44 image",
    ),
    "a negative width": (
        {"file_name": "fox/f2.jpg", "objects": {"bbox": [[10, 10, -5, 5]]}},
        "degenerate box (10, 10, 5, 15)",
    ),
    "a non-finite number": (
        {"file_name": "fox/f2.jpg", "objects": {"bbox": [[10, 10, float("inf"), 5]]}},
        "line 3, object 0: bbox width is not a finite number",
    ),
    "another class's box": (
        {"file_name": "fox/f2.jpg", "objects": {"bbox": [[1, 1, 4, 4]], "category": ["cat"]}},
        "category 'cat' is not the image's class 'fox'",
    ),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_side_file_rows_are_errors_naming_file_and_row_or_counted_skips(tmp_path, case):
    write_class_folders(tmp_path, "jsonl")
    row, problem = BAD_ROWS[case]
    metadata = tmp_path / "val" / "metadata.jsonl"
    metadata.write_text(metadata.read_text() + json.dumps(row) + "\n")
    with pytest.raises(BadSampleError, match=re.escape(problem)) as raised:
        ClassFolderSource(tmp_path).dataset("val")
    assert raised.value.path == str(metadata)
    source = ClassFolderSource(tmp_path, on_bad_sample="skip")
    with pytest.warns(BadSampleWarning, match=re.escape(problem)):
        val = records(source, "val")
    assert len(source.skipped) >= 1 and sorted(val)[:2] == ["cat/c3.jpg", "dog/d2.PNG"]


def test_csv_needs_its_header(tmp_path):
    write_class_folders(tmp_path, "csv")
    (tmp_path / "val" / "boxes.csv").write_text("name,x0,y0,x1,y1\n")
    with pytest.raises(ValueError, match=r"boxes.csv: expected the header file_name,xmin,ymin,xmax,ymax\[,label\]"):
        ClassFolderSource(tmp_path).dataset("val")


def test_imagenet_val_in_class_folders_keeps_images_without_a_box_row_unboxed(tmp_path):
    root = tmp_path / "imagenet"
    samples = write_imagenet(root, xml=False)
    val_dir = root / "val"
    for image_id, sample in samples.items():
        if sample.split == "val":
            wnid_dir = val_dir / ImageNetSource(root).wnids[sample.label]
            wnid_dir.mkdir(exist_ok=True)
            os.replace(val_dir / f"{image_id}.JPEG", wnid_dir / f"{image_id}.JPEG")
    csv_path = root / "LOC_val_solution.csv"
    csv_path.write_text("".join(r + "\n" for r in csv_path.read_text().splitlines() if "val_00000001" not in r))
    val = {record.image_id: record for record in ImageNetSource(root).dataset("val").records}
    assert len(val) == sum(sample.split == "val" for sample in samples.values())  # none dropped
    unboxed = val["ILSVRC2012_val_00000001"]
    assert unboxed.boxes.shape == (0, 4) and unboxed.target == samples["ILSVRC2012_val_00000001"].label


def test_coco_annotation_without_bbox_labels_an_image_that_stays_unboxed(tmp_path):
    write_coco(tmp_path)
    val_json = tmp_path / "annotations" / "val.json"
    document = json.loads(val_json.read_text())
    dog_id = next(image["id"] for image in document["images"] if image["file_name"] == "dog.jpg")
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != dog_id]
    document["annotations"].append({"id": 999, "image_id": dog_id, "category_id": 3})  # a label, no bbox
    val_json.write_text(json.dumps(document))
    for multi_label in (False, True):
        dataset = COCOSource(tmp_path / "images", val_json=val_json, multi_label=multi_label).dataset("val")
        dog = next(record for record in dataset.records if record.image_id == "dog.jpg")
        assert dog.boxes.shape == (0, 4) and len(dataset) == 2
        assert (dog.target.tolist() == [1.0, 0.0, 0.0]) if multi_label else dog.target == 0
