"""Bad input: a clear error naming the file and the problem under "error", a warning and a counted skip under "skip"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from pipeline.data.bad_samples import BadSampleError, BadSampleWarning
from pipeline.data.coco import COCOSource
from pipeline.data.cub import CUBSource
from pipeline.data.decoding import load_rgb
from pipeline.data.file_source import RawSampleDataset
from pipeline.data.folder import FolderSource, ImageFolderDataset
from pipeline.data.imagenet import ImageNetSource
from pipeline.data.voc import VOCSource
from tests.helpers.datasets import (
    cub_image_path,
    voc_xml,
    write_coco,
    write_cub,
    write_imagenet,
    write_voc,
)

ONE_OBJECT_ID = "2008_000015"  # a val image with one bottle, 80x64
THREE_OBJECT_ID = "2008_000019"  # a val image with two dogs and a person, 100x80


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    write_voc(tmp_path / "VOC2012")
    return tmp_path / "VOC2012"


def warns_about(path: Path):
    """Expect a BadSampleWarning that names `path`."""
    return pytest.warns(BadSampleWarning, match=re.escape(str(path)))


def index_of(dataset: RawSampleDataset, image_id: str) -> int:
    return [record.image_id for record in dataset.records].index(image_id)


def corrupt(path: Path) -> None:
    path.write_bytes(b"these bytes are no image at all " * 20)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# Images that fail to decode: found when the item is read.


@pytest.mark.parametrize(("damage", "problem"), [(corrupt, "not an image file"), (truncate, "cannot be decoded")])
def test_undecodable_image_raises_naming_the_file(voc_root, damage, problem):
    image_path = voc_root / "JPEGImages" / f"{ONE_OBJECT_ID}.jpg"
    damage(image_path)
    dataset = VOCSource(voc_root).dataset("val")
    with pytest.raises(BadSampleError, match=problem) as error:
        dataset[index_of(dataset, ONE_OBJECT_ID)]
    assert error.value.path == str(image_path) and str(image_path) in str(error.value)


@pytest.mark.parametrize("damage", [corrupt, truncate])
def test_undecodable_image_is_skipped_as_none_with_a_warning(voc_root, damage):
    image_path = voc_root / "JPEGImages" / f"{ONE_OBJECT_ID}.jpg"
    damage(image_path)
    dataset = VOCSource(voc_root, on_bad_sample="skip").dataset("val")
    with warns_about(image_path):
        assert dataset[index_of(dataset, ONE_OBJECT_ID)] is None
    assert dataset[index_of(dataset, THREE_OBJECT_ID)]["image_id"] == THREE_OBJECT_ID


def test_missing_image_file_raises_naming_it(tmp_path):
    with pytest.raises(BadSampleError, match="image file not found") as error:
        load_rgb(tmp_path / "nowhere.jpg")
    assert str(tmp_path / "nowhere.jpg") in str(error.value)


def test_a_crash_in_a_dataloader_worker_names_the_file(voc_root):
    image_path = voc_root / "JPEGImages" / f"{ONE_OBJECT_ID}.jpg"
    corrupt(image_path)
    loader = DataLoader(VOCSource(voc_root).dataset("val"), batch_size=1, num_workers=2, collate_fn=list)
    with pytest.raises(Exception, match=re.escape(str(image_path))):
        list(loader)


def test_dataloader_workers_yield_none_for_a_skipped_image(voc_root):
    corrupt(voc_root / "JPEGImages" / f"{ONE_OBJECT_ID}.jpg")
    dataset = VOCSource(voc_root, on_bad_sample="skip").dataset("val")
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=list)
    with pytest.warns(BadSampleWarning):  # from the main-process read; the workers' own warnings stay in them
        assert dataset[index_of(dataset, ONE_OBJECT_ID)] is None
        items = [item for batch in loader for item in batch]
    assert len(items) == len(dataset) and sum(item is None for item in items) == 1


def test_image_whose_size_differs_from_its_annotation_is_bad(voc_root):
    image_path = voc_root / "JPEGImages" / f"{ONE_OBJECT_ID}.jpg"
    Image.new("RGB", (81, 64)).save(image_path)  # the annotation says 80x64
    dataset = VOCSource(voc_root).dataset("val")
    with pytest.raises(BadSampleError, match="image is 81x64 but its annotation says 80x64"):
        dataset[index_of(dataset, ONE_OBJECT_ID)]


# Problems found while indexing annotations: the whole sample goes.


def _delete_annotation(root: Path) -> tuple[Path, str]:
    path = root / "Annotations" / f"{ONE_OBJECT_ID}.xml"
    path.unlink()
    return path, "annotation file not found"


def _unparsable_xml(root: Path) -> tuple[Path, str]:
    path = root / "Annotations" / f"{ONE_OBJECT_ID}.xml"
    path.write_text(path.read_text()[:200])  # cut off mid-element
    return path, "XML does not parse"


def _box_not_a_number(root: Path) -> tuple[Path, str]:
    path = root / "Annotations" / f"{ONE_OBJECT_ID}.xml"
    path.write_text(path.read_text().replace("<xmax>20</xmax>", "<xmax>twenty</xmax>"))
    return path, "<bndbox/xmax> is missing or not a number"


def _delete_image(root: Path) -> tuple[Path, str]:
    path = root / "JPEGImages" / f"{ONE_OBJECT_ID}.jpg"
    path.unlink()
    return path, "image file not found"


def _only_box_degenerate(root: Path) -> tuple[Path, str]:
    path = root / "Annotations" / f"{ONE_OBJECT_ID}.xml"
    path.write_text(voc_xml(f"{ONE_OBJECT_ID}.jpg", (80, 64), [("bottle", (20, 5, 20, 50), False)]))
    return path, "degenerate box (20, 5, 20, 50)"


def _rewrite_bottle(root: Path, size: tuple = (80, 64), box: tuple = (5, 5, 20, 50)) -> Path:
    """Rewrite the one-bottle annotation (80x64, box (5, 5, 20, 50)) with other size or box values."""
    path = root / "Annotations" / f"{ONE_OBJECT_ID}.xml"
    path.write_text(voc_xml(f"{ONE_OBJECT_ID}.jpg", size, [("bottle", box, False)]))
    return path


def _box_infinite(root: Path) -> tuple[Path, str]:  # was clipped to the image border
    return _rewrite_bottle(root, box=(5, 5, "inf", 50)), "object 0: <bndbox/xmax> is not a finite number ('inf')"


def _box_minus_infinite(root: Path) -> tuple[Path, str]:  # was clipped to 0
    return _rewrite_bottle(root, box=("-inf", 5, 20, 50)), "object 0: <bndbox/xmin> is not a finite number ('-inf')"


def _box_nan(root: Path) -> tuple[Path, str]:  # was reported as a degenerate box
    return _rewrite_bottle(root, box=(5, 5, 20, "nan")), "object 0: <bndbox/ymax> is not a finite number ('nan')"


def _size_negative(root: Path) -> tuple[Path, str]:  # was ignored, the size read from the image instead
    return _rewrite_bottle(root, size=(-5, 64)), "<size/width> must be a positive integer, got -5"


def _size_infinite(root: Path) -> tuple[Path, str]:  # was an OverflowError from int()
    return _rewrite_bottle(root, size=(80, "inf")), "<size/height> is not a finite number ('inf')"


def _size_fractional(root: Path) -> tuple[Path, str]:  # was truncated to 80
    return _rewrite_bottle(root, size=(80.5, 64)), "<size/width> must be a positive integer, got 80.5"


SAMPLE_PROBLEMS = [
    _delete_annotation,
    _unparsable_xml,
    _box_not_a_number,
    _delete_image,
    _only_box_degenerate,
    _box_infinite,
    _box_minus_infinite,
    _box_nan,
    _size_negative,
    _size_infinite,
    _size_fractional,
]


@pytest.mark.parametrize("make_problem", SAMPLE_PROBLEMS)
def test_bad_sample_while_indexing_raises_naming_the_file_and_the_problem(voc_root, make_problem):
    culprit, problem = make_problem(voc_root)
    with pytest.raises(BadSampleError, match=re.escape(problem)) as error:
        VOCSource(voc_root).dataset("val")
    assert error.value.path == str(culprit) and str(culprit) in str(error.value)


@pytest.mark.parametrize("make_problem", SAMPLE_PROBLEMS)
def test_bad_sample_while_indexing_is_skipped_with_a_warning_and_counted(voc_root, make_problem):
    culprit, problem = make_problem(voc_root)
    source = VOCSource(voc_root, on_bad_sample="skip")
    with warns_about(culprit):
        dataset = source.dataset("val")
    assert ONE_OBJECT_ID not in [record.image_id for record in dataset.records]
    assert THREE_OBJECT_ID in [record.image_id for record in dataset.records]
    assert source.skipped and {path for path, _ in source.skipped} == {str(culprit)}
    assert problem in source.skipped[0][1]


@pytest.mark.parametrize("size", [(0, 0), (0, 64), (80, 0)])
def test_voc_size_of_zero_means_not_recorded_and_is_read_from_the_image(voc_root, size):
    _rewrite_bottle(voc_root, size=size)
    source = VOCSource(voc_root)
    dataset = source.dataset("val")
    assert dataset.records[index_of(dataset, ONE_OBJECT_ID)].image_size == (80, 64)
    assert source.skipped == []


# Problems with one box among several: the box (with its object) goes, the sample stays.


@pytest.mark.parametrize(
    ("bad_object", "problem"),
    [
        (("unicorn", (60, 2, 98, 20), False), "class 'unicorn' is not in the class list"),
        (("person", (60, 20, 98, 20), False), "degenerate box (60, 20, 98, 20)"),
        (("person", (98, 2, 60, 20), False), "degenerate box (98, 2, 60, 20)"),
        (("person", (120, 90, 150, 99), False), "box (120, 90, 150, 99) lies outside the 100x80 image"),
    ],
)
def test_bad_box_raises_or_is_dropped_and_counted(voc_root, bad_object, problem):
    annotation = voc_root / "Annotations" / f"{THREE_OBJECT_ID}.xml"
    dogs = [("dog", (4, 10, 40, 70), False), ("dog", (50, 30, 90, 75), False)]
    annotation.write_text(voc_xml(f"{THREE_OBJECT_ID}.jpg", (100, 80), [*dogs, bad_object]))
    with pytest.raises(BadSampleError, match=re.escape(f"object 2: {problem}")) as error:
        VOCSource(voc_root).dataset("val")
    assert error.value.path == str(annotation)

    source = VOCSource(voc_root, on_bad_sample="skip")
    with warns_about(annotation):
        dataset = source.dataset("val")
    sample = dataset[index_of(dataset, THREE_OBJECT_ID)]
    assert sample["boxes"].tolist() == [[4, 10, 40, 70], [50, 30, 90, 75]]
    assert set(np.flatnonzero(sample["target"])) == {11}  # dog only: the dropped object's class went with it
    [(path, reason)] = source.skipped
    assert path == str(annotation) and reason.startswith(f"object 2: {problem}")


def test_bad_box_is_named_by_its_position_in_the_file_even_after_difficult_objects_are_left_out(voc_root):
    annotation = voc_root / "Annotations" / f"{THREE_OBJECT_ID}.xml"
    objects = [("dog", (4, 10, 40, 70), True), ("dog", (50, 30, 50, 75), False)]
    annotation.write_text(voc_xml(f"{THREE_OBJECT_ID}.jpg", (100, 80), objects))
    with pytest.raises(BadSampleError, match=re.escape("object 1: degenerate box (50, 30, 50, 75)")):
        VOCSource(voc_root).dataset("val")


def test_box_partly_outside_the_image_is_clipped_and_counted_under_either_policy(voc_root):
    annotation = voc_root / "Annotations" / f"{THREE_OBJECT_ID}.xml"
    objects = [("dog", (4, 10, 40, 70), False), ("dog", (50, 30, 130, 95), False)]
    annotation.write_text(voc_xml(f"{THREE_OBJECT_ID}.jpg", (100, 80), objects))
    for policy in ("error", "skip"):
        source = VOCSource(voc_root, on_bad_sample=policy)
        dataset = source.dataset("val")
        assert dataset[index_of(dataset, THREE_OBJECT_ID)]["boxes"].tolist() == [[4, 10, 40, 70], [50, 30, 100, 80]]
        assert source.clipped == [(str(annotation), "object 1: box (50, 30, 130, 95) clipped to (50, 30, 100, 80)")]
        assert source.skipped == []


# Images of every PIL mode become sensible RGB.


def _write_mode_images(folder: Path) -> dict[str, np.ndarray]:
    """One image file per awkward mode, and the RGB each must decode to."""
    folder.mkdir()
    red, white = (255, 0, 0), (255, 255, 255)
    expected = {}
    Image.new("L", (6, 4), 100).save(folder / "gray.png")
    expected["gray.png"] = np.full((4, 6, 3), 100)
    la = Image.new("LA", (6, 4), (100, 255))
    la.paste((100, 0), (3, 0, 6, 4))  # right half fully transparent
    la.save(folder / "gray_alpha.png")
    expected["gray_alpha.png"] = np.concatenate([np.full((4, 3, 3), 100), np.full((4, 3, 3), 255)], axis=1)
    rgba = Image.new("RGBA", (6, 4), (*red, 255))
    rgba.paste((0, 0, 0, 0), (3, 0, 6, 4))
    rgba.save(folder / "rgba.png")
    expected["rgba.png"] = np.concatenate([np.full((4, 3, 3), red), np.full((4, 3, 3), white)], axis=1)
    palette = Image.new("P", (6, 4), 0)
    palette.putpalette([*red, 0, 255, 0] + [0] * 762)
    palette.paste(1, (3, 0, 6, 4))
    palette.save(folder / "palette.png", transparency=1)  # index 1 (green) is transparent
    expected["palette.png"] = expected["rgba.png"]
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)
    expected["cmyk.jpg"] = np.full((4, 6, 3), red)
    sixteen_bit = np.array([[0, 257 * 128, 65535]] * 2, np.uint16)  # 257 * v is v in 8 bits
    Image.fromarray(sixteen_bit).save(folder / "gray16.png")
    expected["gray16.png"] = np.repeat(np.array([[0, 128, 255]] * 2)[:, :, None], 3, axis=2)
    return expected


def test_every_image_mode_is_converted_to_rgb_with_sensible_values(tmp_path):
    expected = _write_mode_images(tmp_path / "modes")
    with Image.open(tmp_path / "modes" / "gray16.png") as gray16, Image.open(tmp_path / "modes" / "cmyk.jpg") as cmyk:
        assert gray16.mode == "I;16" and cmyk.mode == "CMYK"
    samples = {Path(sample["image_id"]).name: sample for sample in ImageFolderDataset(tmp_path / "modes")}
    assert set(samples) == set(expected)
    for name, rgb in expected.items():
        image = samples[name]["image"]
        assert image.dtype == np.uint8 and image.shape == rgb.shape, name
        # a flat colour survives JPEG up to its DC quantization (< 1/8 level at quality 95) and the decoder's IDCT
        # rounding, a level or two on any conforming decoder (libjpeg-turbo's gives 0): not a measured bound
        tolerance = 3 if name.endswith(".jpg") else 0
        assert np.abs(image.astype(int) - rgb).max() <= tolerance, name


# Format-specific problems in the other readers.


def test_unparsable_coco_json_is_an_error_naming_the_file_under_either_policy(tmp_path):
    write_coco(tmp_path)
    val_json = tmp_path / "annotations" / "val.json"
    val_json.write_text(val_json.read_text()[:-20])
    for policy in ("error", "skip"):
        train_json = tmp_path / "annotations" / "train.json"  # the categories come from the first JSON given
        source = COCOSource(tmp_path / "images", train_json=train_json, val_json=val_json, on_bad_sample=policy)
        with pytest.raises(ValueError, match=re.escape(f"{val_json}: does not parse as JSON")):
            source.dataset("val")
    with pytest.raises(ValueError, match=re.escape(f"{val_json}: does not parse as JSON")):
        COCOSource(tmp_path / "images", val_json=val_json)


CAT = 1  # class index of COCO category 7


@pytest.mark.parametrize(
    ("edit", "problem", "bird_and_cat_target"),
    [
        (lambda doc: doc["annotations"][0].update(category_id=99), "object 0: class 99 is not in the class list", CAT),
        (lambda doc: doc["annotations"][0].update(bbox=[5, 5, 0, 50]), "object 0: degenerate box (5, 5, 5, 55)", CAT),
        (lambda doc: doc["annotations"][0].update(image_id=404), "annotation 0: image_id 404 is not among", CAT),
        (lambda doc: doc["annotations"][0].update(bbox="5 5 70 50"), "bbox must be [x, y, width, height]", None),
        (lambda doc: doc["annotations"][0].update(bbox=[5, 5, 70]), "bbox must be [x, y, width, height]", None),
        (lambda doc: doc["annotations"][0].update(bbox=[5, 5, -70, 50]), "degenerate box (5, 5, -65, 55)", CAT),
        (lambda doc: doc["annotations"][0].update(bbox=[5, 5, 70, -50]), "degenerate box (5, 5, 75, -45)", CAT),
        # json writes and reads these as Infinity and NaN; before, an infinite width was clipped to the image
        (
            lambda doc: doc["annotations"][0].update(bbox=[5, 5, float("inf"), 50]),
            "image nested/bird_and_cat.png, object 0: bbox width is not a finite number (inf)",
            None,
        ),
        (
            lambda doc: doc["annotations"][0].update(bbox=[float("nan"), 5, 70, 50]),
            "image nested/bird_and_cat.png, object 0: bbox x is not a finite number (nan)",
            None,
        ),
        (
            lambda doc: doc["annotations"][0].update(bbox=[5, 5, 70, "fifty"]),
            "object 0: bbox height is missing or not a number ('fifty')",
            None,
        ),
        # a stated image size that is not positive: before, the size was silently read from the image instead
        (
            lambda doc: doc["images"][0].update(width=-90),
            "image nested/bird_and_cat.png: width must be a positive integer, got -90",
            None,
        ),
        (
            lambda doc: doc["images"][0].update(height=0),
            "image nested/bird_and_cat.png: height must be a positive",
            None,
        ),
        (lambda doc: doc["images"][0].update(height=float("inf")), "height is not a finite number (inf)", None),
    ],
)
def test_bad_coco_annotation_raises_or_is_skipped(tmp_path, edit, problem, bird_and_cat_target):
    """The first annotation is the bird, the larger of the two objects of nested/bird_and_cat.png."""
    write_coco(tmp_path)
    val_json = tmp_path / "annotations" / "val.json"
    document = json.loads(val_json.read_text())
    edit(document)
    val_json.write_text(json.dumps(document))
    with pytest.raises(BadSampleError, match=re.escape(problem)) as error:
        COCOSource(tmp_path / "images", val_json=val_json).dataset("val")
    assert error.value.path == str(val_json)

    source = COCOSource(tmp_path / "images", val_json=val_json, on_bad_sample="skip")
    with warns_about(val_json):
        samples = {sample["image_id"]: sample for sample in source.dataset("val")}
    [(path, reason)] = source.skipped
    assert path == str(val_json) and problem in reason
    if bird_and_cat_target is None:  # an annotation that does not parse takes its image with it
        assert set(samples) == {"dog.jpg"}
    else:  # a bad box goes alone: the cat is left, and becomes the label
        assert samples["nested/bird_and_cat.png"]["target"] == bird_and_cat_target
        assert samples["nested/bird_and_cat.png"]["boxes"].tolist() == [[76, 40, 86, 60]]


def test_coco_image_without_annotations_is_bad_single_label_but_kept_multi_label(tmp_path):
    write_coco(tmp_path)
    val_json = tmp_path / "annotations" / "val.json"
    document = json.loads(val_json.read_text())
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != document["images"][1]["id"]]
    val_json.write_text(json.dumps(document))
    with pytest.raises(BadSampleError, match=re.escape("image dog.jpg: no annotations, so no label")):
        COCOSource(tmp_path / "images", val_json=val_json).dataset("val")
    samples = {
        s["image_id"]: s for s in COCOSource(tmp_path / "images", val_json=val_json, multi_label=True).dataset("val")
    }
    assert not samples["dog.jpg"]["target"].any() and samples["dog.jpg"]["boxes"].shape == (0, 4)


def test_cub_missing_box_line_and_unknown_class_id(tmp_path):
    root = tmp_path / "CUB_200_2011"
    write_cub(root)
    boxes_txt, labels_txt = root / "bounding_boxes.txt", root / "image_class_labels.txt"
    boxes_txt.write_text(
        "".join(line + "\n" for line in boxes_txt.read_text().splitlines() if not line.startswith("2 "))
    )
    labels_txt.write_text(labels_txt.read_text().replace("\n4 2\n", "\n4 201\n"))
    with pytest.raises(BadSampleError, match=re.escape("image 2: expected 'x y width height', got no line")):
        CUBSource(root).dataset("test")
    source = CUBSource(root, on_bad_sample="skip")
    with warns_about(boxes_txt), warns_about(labels_txt):
        samples = {sample["image_id"] for sample in source.dataset("test")}
    assert samples == {Path(cub_image_path(6)).stem}
    assert [path for path, _ in source.skipped] == [str(boxes_txt), str(labels_txt)]
    assert "class id 201 is not in classes.txt" in source.skipped[1][1]


def test_coco_image_without_a_stated_size_takes_it_from_the_image_file(tmp_path):
    write_coco(tmp_path)
    val_json = tmp_path / "annotations" / "val.json"
    document = json.loads(val_json.read_text())
    del document["images"][0]["width"], document["images"][0]["height"]
    val_json.write_text(json.dumps(document))
    dataset = COCOSource(tmp_path / "images", val_json=val_json).dataset("val")
    assert dataset.records[index_of(dataset, "nested/bird_and_cat.png")].image_size == (90, 70)


@pytest.mark.parametrize(
    ("box_line", "problem"),
    [
        ("2 5.5 5.5 nan 60.0", "image 2: width is not a finite number ('nan')"),  # was a "degenerate box (5.5, ...)"
        ("2 5.5 5.5 inf 60.0", "image 2: width is not a finite number ('inf')"),  # was clipped to the image
        ("2 -inf 5.5 50.0 60.0", "image 2: x is not a finite number ('-inf')"),  # was clipped to 0
        ("2 5.5 5.5 50.0 sixty", "image 2: height is missing or not a number ('sixty')"),
        ("2 5.5 5.5 -50.0 60.0", "image 2, object 0: degenerate box (5.5, 5.5, -44.5, 65.5)"),
        # each number finite, their sum not: the box check catches what the number check cannot
        ("2 1e308 5.5 1e308 60.0", "image 2, object 0: box (1e+308, 5.5, inf, 65.5) has a coordinate that is not"),
    ],
)
def test_cub_box_that_is_not_finite_or_has_a_negative_size_is_bad(tmp_path, box_line, problem):
    root = tmp_path / "CUB_200_2011"
    write_cub(root)
    boxes_txt = root / "bounding_boxes.txt"
    boxes_txt.write_text(
        "".join((box_line if line.startswith("2 ") else line) + "\n" for line in boxes_txt.read_text().splitlines())
    )
    with pytest.raises(BadSampleError, match=re.escape(problem)) as error:
        CUBSource(root).dataset("test")
    assert error.value.path == str(boxes_txt)
    source = CUBSource(root, on_bad_sample="skip")
    with warns_about(boxes_txt):
        samples = {sample["image_id"] for sample in source.dataset("test")}
    assert samples == {Path(cub_image_path(image_id)).stem for image_id in (4, 6)}
    assert {path for path, _ in source.skipped} == {str(boxes_txt)} and problem in source.skipped[0][1]


def test_imagenet_csv_coordinate_that_is_not_finite_is_bad(tmp_path):
    root = tmp_path / "imagenet"
    write_imagenet(root, xml=False)
    csv_path = root / "LOC_val_solution.csv"
    csv_path.write_text(csv_path.read_text().replace("n01443537 10 8 50 40", "n01443537 10 8 inf 40"))
    problem = "row ILSVRC2012_val_00000001, box 0: xmax is not a finite number ('inf')"  # was clipped to the image
    with pytest.raises(BadSampleError, match=re.escape(problem)):
        ImageNetSource(root).dataset("val")
    source = ImageNetSource(root, on_bad_sample="skip")
    with warns_about(csv_path):
        dataset = source.dataset("val")
    assert "ILSVRC2012_val_00000001" not in [record.image_id for record in dataset.records]
    assert source.skipped == [(str(csv_path), problem)]


def test_imagenet_csv_without_a_row_for_an_image_and_val_boxes_of_two_classes(tmp_path):
    root = tmp_path / "imagenet"
    write_imagenet(root, xml=False)
    csv_path = root / "LOC_val_solution.csv"
    rows = csv_path.read_text().splitlines()
    rows = [row for row in rows if not row.startswith("ILSVRC2012_val_00000001")]
    rows = [row.replace("n01491361 36", "n01440764 36") for row in rows]  # image 2: boxes of two classes
    csv_path.write_text("\n".join(rows) + "\n")
    with pytest.raises(BadSampleError, match="ILSVRC2012_val_00000001.JPEG: no boxes for this val image, so no label"):
        ImageNetSource(root).dataset("val")
    source = ImageNetSource(root, on_bad_sample="skip")
    with warns_about(csv_path):
        dataset = source.dataset("val")
    assert [record.image_id for record in dataset.records] == ["ILSVRC2012_val_00000003"]
    assert "exactly one class, found n01440764, n01491361" in source.skipped[1][1]


def test_imagenet_train_folder_that_is_not_a_synset(tmp_path):
    root = tmp_path / "imagenet"
    write_imagenet(root)
    stray = root / "train" / "n99999999" / "n99999999_1.JPEG"
    stray.parent.mkdir()
    Image.new("RGB", (8, 8)).save(stray)
    with pytest.raises(BadSampleError, match="its folder 'n99999999' is not a synset"):
        ImageNetSource(root).dataset("train")
    source = ImageNetSource(root, on_bad_sample="skip")
    with warns_about(stray):
        assert len(source.dataset("train")) == 5


# Whole-source problems: a clear error that names the path and the fix.


def test_empty_split_is_an_error_naming_the_root(voc_root):
    (voc_root / "ImageSets" / "Main" / "val.txt").write_text("")
    with pytest.raises(ValueError, match=re.escape(f"split 'val' under {voc_root} has no usable samples")):
        VOCSource(voc_root).dataset("val")


def test_split_whose_every_sample_is_skipped_is_an_error_that_counts_them(voc_root):
    (voc_root / "ImageSets" / "Main" / "val.txt").write_text(f"{ONE_OBJECT_ID}\n")
    (voc_root / "Annotations" / f"{ONE_OBJECT_ID}.xml").unlink()
    with pytest.warns(BadSampleWarning), pytest.raises(ValueError, match="no usable samples \\(1 skipped so far"):
        VOCSource(voc_root, on_bad_sample="skip").dataset("val")


def test_missing_split_list_and_unknown_split_name(voc_root):
    with pytest.raises(FileNotFoundError, match=re.escape(str(voc_root / "ImageSets" / "Main" / "test.txt"))):
        VOCSource(voc_root).dataset("test")
    with pytest.raises(
        ValueError, match=re.escape("unknown split 'validation'; choose one of ['train', 'val', 'test']")
    ):
        VOCSource(voc_root).dataset("validation")


def test_empty_image_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"no image files (.jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp) under {tmp_path / 'empty'}"
        ),
    ):
        FolderSource(tmp_path / "empty").dataset("predict")


@pytest.mark.parametrize(
    "build",
    [
        lambda root: VOCSource(root),
        lambda root: ImageNetSource(root),
        lambda root: CUBSource(root),
        lambda root: COCOSource(root, val_json=root / "val.json"),
        lambda root: FolderSource(root),
        lambda root: ImageFolderDataset(root),
    ],
)
def test_root_that_does_not_exist_is_an_error_naming_it(tmp_path, build):
    missing = tmp_path / "not" / "there"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build(missing)


def test_missing_class_list_files_are_errors_naming_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "LOC_synset_mapping.txt"))):
        ImageNetSource(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "classes.txt"))):
        CUBSource(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "train.json"))):
        COCOSource(tmp_path / "empty", train_json=tmp_path / "empty" / "train.json")


def test_unknown_policy_is_rejected(voc_root):
    with pytest.raises(ValueError, match="on_bad_sample must be 'error' or 'skip', got 'ignore'"):
        VOCSource(voc_root, on_bad_sample="ignore")


def test_imagenet_without_val_boxes_is_an_error_naming_what_it_looked_for(tmp_path):
    write_imagenet(tmp_path / "imagenet", xml=False, csv=False)
    with pytest.raises(FileNotFoundError, match="no val boxes .* expected LOC_val_solution.csv or one of"):
        ImageNetSource(tmp_path / "imagenet").dataset("val")
    with pytest.raises(FileNotFoundError, match="no val XML annotations"):
        ImageNetSource(tmp_path / "imagenet", val_boxes="xml").dataset("val")


def test_coco_splits_with_different_categories_are_an_error(tmp_path):
    write_coco(tmp_path)
    val_json = tmp_path / "annotations" / "val.json"
    document = json.loads(val_json.read_text())
    document["categories"] = document["categories"][:2]
    val_json.write_text(json.dumps(document))
    source = COCOSource(tmp_path / "images", train_json=tmp_path / "annotations" / "train.json", val_json=val_json)
    with pytest.raises(ValueError, match=re.escape(f"{val_json}: categories differ from those of")):
        source.dataset("val")
