"""Properties of box scaling and of annotation parsing that hold for any input, checked with hypothesis.

The readers take files from users: whatever a number field holds, the result is either exactly the number written or
a `BadSampleError` naming the file, never another exception and never a box outside its image.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.annotations import usable_objects
from pipeline.data.bad_samples import BadSampleError, BadSamplePolicy, BadSampleWarning
from pipeline.data.coco import COCOSource
from pipeline.data.transforms import scale_boxes
from pipeline.data.voc import VOC_CLASSES, read_voc_xml
from tests.helpers.datasets import voc_xml, write_image

# Deterministic in CI (examples derived from each test's source, no example database), no per-example deadline
# (file writes on a loaded runner are slow, not wrong). Tests that need a file rewrite one per example in a
# module-scoped folder.
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)

# Values that are never a usable number, whatever the field: not finite, or not a number at all.
NOT_FINITE = ("inf", "-inf", "+inf", "Infinity", "-Infinity", "nan", "NaN", "-nan", "1e999", "-1e999")
NOT_NUMBERS = ("", " ", "twenty", "1,5", "--1", "0x10", "1e", ".", "1 2", "None")

sides = st.integers(1, 4000)
finite = st.floats(allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


# scale_boxes: boxes at an image of (height, width) -> the model input (H, W), as x -> trunc(x * W / width).


@st.composite
def sizes_and_boxes(draw: st.DrawFn, upper: str) -> tuple[tuple[int, int], tuple[int, int], np.ndarray]:
    """(source (h, w), target (H, W), (n, 4) boxes) with every coordinate in [0, w - 1] (upper="last") or [0, w]."""
    source, target = (draw(sides), draw(sides)), (draw(st.integers(1, 1024)), draw(st.integers(1, 1024)))
    height, width = source
    slack = 1 if upper == "last" else 0
    xs, ys = st.floats(0, width - slack), st.floats(0, height - slack)
    rows = draw(st.lists(st.tuples(xs, ys, xs, ys), min_size=1, max_size=5))
    return source, target, np.array(rows, np.float32)


class TestScaleBoxes:
    @PROPERTY
    @given(sizes_and_boxes(upper="last"))
    def test_a_pixel_of_the_image_lands_on_a_pixel_of_the_target(self, case):
        """0-based inclusive pixels (0 <= x <= w - 1) stay pixels: 0 <= x' <= W - 1, since (w - 1) * W / w < W."""
        source, (target_h, target_w), boxes = case
        scaled = scale_boxes(boxes, source, (target_h, target_w))
        assert scaled.dtype == np.float32 and scaled.shape == boxes.shape
        assert (scaled >= 0).all()
        assert (scaled[:, [0, 2]] <= target_w - 1).all() and (scaled[:, [1, 3]] <= target_h - 1).all()

    @PROPERTY
    @given(sizes_and_boxes(upper="border"))
    def test_the_far_border_lands_at_most_on_the_far_border(self, case):
        """Readers clip to [0, w] (VOC's 1-based xmax may equal the width): scaled, 0 <= x' <= W, one past the last
        pixel at most, which the inclusive fill of `boxes_to_mask` clips away."""
        source, (target_h, target_w), boxes = case
        scaled = scale_boxes(boxes, source, (target_h, target_w))
        assert (scaled >= 0).all() and (scaled[:, [0, 2]] <= target_w).all() and (scaled[:, [1, 3]] <= target_h).all()

    @PROPERTY
    @given(sizes_and_boxes(upper="border"), st.data())
    def test_is_monotone_in_every_coordinate(self, case, data):
        source, target, boxes = case
        height, width = source
        grown = boxes + np.array(data.draw(st.lists(st.floats(0, 100), min_size=4, max_size=4)), np.float32)
        grown = np.minimum(grown, np.array([width, height, width, height], np.float32))
        assert (scale_boxes(boxes, source, target) <= scale_boxes(grown, source, target)).all()

    @PROPERTY
    @given(sizes_and_boxes(upper="border"))
    def test_equal_sizes_move_a_box_by_less_than_a_pixel_and_never_outward(self, case):
        # int(x / width * W) with W == width is the protocol's own rounding: 119 / 239 * 239 = 118.99999999999999
        source, _, boxes = case
        scaled = scale_boxes(boxes, source, source)
        assert (scaled <= np.maximum(boxes, 0) + 1e-4).all() and (scaled > boxes - 1 - 1e-4).all()
        powers_of_two = (64, 64)  # the shapes data: division by a power of two is exact
        integer_boxes = np.trunc(np.clip(boxes, 0, 63))
        np.testing.assert_array_equal(scale_boxes(integer_boxes, powers_of_two, powers_of_two), integer_boxes)

    def test_follows_the_protocol_formula_where_the_two_roundings_differ(self):
        scaled = scale_boxes(np.array([[45, 0, 45, 0]], np.float32), (80, 80), (224, 224))
        assert scaled[0, 0] == int(45 / 80 * 224) == 126


# read_voc_xml: the numbers written come back exactly; anything else is a BadSampleError naming the file.

voc_names = st.sampled_from(VOC_CLASSES)
voc_objects = st.lists(st.tuples(voc_names, st.tuples(finite, finite, finite, finite), st.booleans()), max_size=4)
voc_sizes = st.tuples(st.integers(0, 100_000), st.integers(0, 100_000))
text = st.text(st.characters(codec="utf-8"), max_size=12)  # any text a file can hold, markup characters included
number_texts = st.one_of(st.integers(-(10**6), 10**6).map(str), finite.map(repr), text)
BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


class TestReadVocXml:
    @PROPERTY
    @given(voc_sizes, voc_objects)
    def test_returns_exactly_the_numbers_written(self, folder, size, objects):
        path = folder / "annotation.xml"
        path.write_text(voc_xml("image.jpg", size, objects))
        annotation = read_voc_xml(path)
        assert annotation.size == (None if 0 in size else size)  # 0 means "not recorded"
        assert [(obj.name, obj.box, obj.difficult) for obj in annotation.objects] == objects

    @PROPERTY
    @given(st.sampled_from(BOX_FIELDS), st.one_of(st.sampled_from(NOT_FINITE + NOT_NUMBERS), number_texts))
    def test_any_text_in_a_box_field_is_a_finite_number_or_a_bad_sample(self, folder, field, value):
        path = folder / "annotation.xml"
        box = tuple(value if name == field else 10 for name in BOX_FIELDS)
        path.write_text(voc_xml("image.jpg", (64, 48), [("dog", box, False)]))
        try:
            annotation = read_voc_xml(path)
        except BadSampleError as error:
            assert error.path == str(path)
            assert f"<bndbox/{field}>" in error.reason or "XML does not parse" in error.reason
            return
        assert value not in NOT_FINITE + NOT_NUMBERS
        assert all(math.isfinite(coordinate) for coordinate in annotation.objects[0].box)

    @PROPERTY
    @given(st.sampled_from(("width", "height")), number_texts)
    def test_any_text_in_a_size_field_is_a_size_or_a_bad_sample(self, folder, side, value):
        path = folder / "annotation.xml"
        path.write_text(voc_xml("image.jpg", (value, 48) if side == "width" else (64, value), []))
        try:
            annotation = read_voc_xml(path)
        except BadSampleError as error:
            assert error.path == str(path)
            assert f"<size/{side}>" in error.reason or "XML does not parse" in error.reason
            return
        assert annotation.size is None or all(type(s) is int and s > 0 for s in annotation.size)

    @PROPERTY
    @given(
        st.sampled_from(("width", "height")),
        st.one_of(
            st.sampled_from(NOT_FINITE + NOT_NUMBERS),
            st.integers(-100_000, -1),
            st.floats(-1e6, 1e6).filter(lambda v: not v.is_integer()),
        ),
    )
    def test_a_size_that_is_not_a_whole_number_from_zero_up_is_a_bad_sample(self, folder, side, value):
        path = folder / "annotation.xml"
        path.write_text(voc_xml("image.jpg", (value, 48) if side == "width" else (64, value), []))
        with pytest.raises(BadSampleError, match=f"<size/{side}> (must be a positive integer|is not a finite|is miss)"):
            read_voc_xml(path)

    @pytest.mark.parametrize("value", NOT_FINITE + NOT_NUMBERS)
    def test_every_unusable_value_is_named_with_its_field(self, tmp_path, value):
        path = tmp_path / "annotation.xml"
        for field in BOX_FIELDS:
            box = tuple(value if name == field else 10 for name in BOX_FIELDS)
            path.write_text(voc_xml("image.jpg", (64, 48), [("dog", box, False)]))
            message = rf"object 0: <bndbox/{field}> is (not a finite|missing or not a) number "
            with pytest.raises(BadSampleError, match=message + re.escape(f"({value!r})")):
                read_voc_xml(path)


# usable_objects: the check every reader's boxes go through.


@st.composite
def annotated_boxes(draw: st.DrawFn) -> tuple[tuple[int, int], np.ndarray]:
    """An image (width, height) and 1..5 boxes with any coordinates: finite, infinite, NaN, inside or out."""
    size = (draw(st.integers(1, 500)), draw(st.integers(1, 500)))
    coordinate = st.one_of(st.floats(-600, 600), st.floats(allow_nan=True, allow_infinity=True))
    not_finite = st.sampled_from([-math.inf, math.inf, math.nan])
    xs, ys = (st.one_of(st.floats(-50, side + 50), not_finite) for side in size)
    ordered = st.tuples(xs, ys, xs, ys).map(
        lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
    )
    rows = draw(st.lists(st.one_of(st.tuples(*[coordinate] * 4), ordered), min_size=1, max_size=5))
    return size, np.array(rows, np.float64)


def fits(box: np.ndarray, size: tuple[int, int]) -> bool:
    """The spec of a usable box: finite corners, xmin < xmax and ymin < ymax, and an area left once clipped."""
    width, height = size
    if not (np.isfinite(box).all() and box[0] < box[2] and box[1] < box[3]):
        return False
    clipped = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
    return bool(clipped[0] < clipped[2] and clipped[1] < clipped[3])


CLASSES = {"dog": 0}


class TestUsableObjects:
    @PROPERTY
    @given(annotated_boxes())
    def test_every_box_is_kept_clipped_inside_the_image_or_rejected_and_counted(self, case):
        size, boxes = case
        width, height = size
        policy = BadSamplePolicy("skip")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadSampleWarning)
            try:
                kept, _, positions = usable_objects(Path("a.xml"), ["dog"] * len(boxes), boxes, size, CLASSES, policy)
            except BadSampleError as error:  # raised only once every box was rejected (and counted)
                assert error.reason == "no usable object left, so no sample"
                kept, positions = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        assert positions.tolist() == [i for i, box in enumerate(boxes) if fits(box, size)]
        assert len(policy.skipped) == len(boxes) - len(kept)
        assert kept.dtype == np.float32 and np.isfinite(kept).all()
        assert ((kept >= 0) & (kept <= [width, height, width, height])).all()
        assert ((kept[:, 0] < kept[:, 2]) & (kept[:, 1] < kept[:, 3])).all()
        clipped = np.clip(boxes[positions], 0, [width, height, width, height]).astype(np.float32)
        np.testing.assert_array_equal(kept, clipped)  # the written boxes, clipped, nothing else


# COCO JSON: a tiny dataset with one real image; each example rewrites its JSON.

COCO_IMAGE_SIZE = (24, 16)  # (width, height)
COCO_IMAGE_BORDER = np.tile(COCO_IMAGE_SIZE, 2)  # the largest xmin, ymin, xmax, ymax on the image
json_values = st.one_of(
    finite,
    st.integers(-(10**6), 10**6),
    st.sampled_from([math.inf, -math.inf, math.nan, None, True, "12", "inf", "twelve", [], {}]),
)


def json_numbers(low: int, high: int) -> st.SearchStrategy[float]:
    """Integers or floats in [low, high], as JSON files write box values."""
    return st.one_of(st.integers(low, high), st.floats(low, high))


plausible_bboxes = st.tuples(*(json_numbers(low, 30) for low in (-10, -10, -2, -2))).map(list)  # often on the image
bboxes = st.one_of(st.lists(json_values, min_size=4, max_size=4), st.lists(json_values, max_size=6), json_values)


@pytest.fixture(scope="module")
def coco_root(folder: Path) -> Path:
    write_image(folder / "coco" / "images" / "one.png", COCO_IMAGE_SIZE, [(4, 4, 12, 10)])
    return folder / "coco"


def write_one_image_coco(
    root: Path, bbox: object, width: object = COCO_IMAGE_SIZE[0], height: object = COCO_IMAGE_SIZE[1]
) -> Path:
    """annotations.json with the one image and one annotation of category 1 with `bbox`, as json writes it."""
    document = {
        "images": [{"id": 1, "file_name": "one.png", "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(document))  # json writes inf and nan as Infinity and NaN, and reads them back
    return path


class TestCocoJson:
    @PROPERTY
    @given(plausible_bboxes)
    def test_a_bbox_of_numbers_gives_its_clipped_box_when_it_fits_the_image(self, coco_root, bbox):
        json_path = write_one_image_coco(coco_root, bbox)
        x, y, width, height = bbox
        xyxy = np.array([x, y, x + width, y + height], np.float64)
        if not fits(xyxy, COCO_IMAGE_SIZE):
            with pytest.raises(BadSampleError, match="degenerate box|lies outside") as error:
                COCOSource(coco_root / "images", val_json=json_path).dataset("val")
            assert error.value.path == str(json_path)
            return
        [record] = COCOSource(coco_root / "images", val_json=json_path).dataset("val").records
        expected = np.clip(xyxy, 0, COCO_IMAGE_BORDER).astype(np.float32)
        np.testing.assert_array_equal(record.boxes, [expected])
        assert record.image_size == COCO_IMAGE_SIZE

    @PROPERTY
    @given(bboxes)
    def test_any_bbox_is_a_box_or_a_bad_sample_naming_the_json(self, coco_root, bbox):
        json_path = write_one_image_coco(coco_root, bbox)
        try:
            [record] = COCOSource(coco_root / "images", val_json=json_path).dataset("val").records
        except BadSampleError as error:
            assert error.path == str(json_path), error
            return
        assert isinstance(bbox, list) and len(bbox) == 4 and all(math.isfinite(float(v)) for v in bbox)
        assert np.isfinite(record.boxes).all() and ((record.boxes >= 0) & (record.boxes <= COCO_IMAGE_BORDER)).all()

    @PROPERTY
    @given(json_values, json_values)
    def test_a_stated_size_is_positive_integers_or_a_bad_sample(self, coco_root, width, height):
        json_path = write_one_image_coco(coco_root, [2, 2, 8, 8], width, height)
        try:
            [record] = COCOSource(coco_root / "images", val_json=json_path).dataset("val").records
        except BadSampleError as error:
            assert error.path == str(json_path), error
            assert "width" in error.reason or "height" in error.reason or "lies outside" in error.reason
            return
        if width is None and height is None:
            assert record.image_size == COCO_IMAGE_SIZE  # from the image file
        else:
            assert record.image_size == (float(width), float(height)) and min(record.image_size) > 0
