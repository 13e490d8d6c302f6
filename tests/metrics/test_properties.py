"""Properties of the box protocol that hold for any map, any boxes and any image size, checked with hypothesis.

Maps are small (1..48 px a side, square or not), boxes may be degenerate (x0 == x1), inverted, on the border or
outside the image. Bounds are exact where the arithmetic makes them exact, never measured tolerances: scores are
ratios of integer counts computed in float32, and the rescalings used for invariance are powers of two (and, at
image size, offsets on a binary grid), which float32 represents and interpolates without rounding.
"""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.metrics import (
    box_localization,
    boxes_to_mask,
    confusion_counts,
    heatmap_boxes,
    normalize_heatmaps,
    pointing_game,
    scores_from_counts,
)

SCORES = ("pixel_accuracy", "iou", "dice", "precision", "recall")
MAX_SIDE = 48

# Deterministic in CI (examples derived from each test's source, no example database), no per-example deadline
# (a loaded 2-core runner is slow, not wrong), and few examples: the whole file runs in seconds.
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)

sides = st.integers(1, MAX_SIDE)
image_sizes = st.tuples(sides, sides)  # (H, W)


@st.composite
def box_lists(draw: st.DrawFn, image_size: tuple[int, int], batch: int, floats: bool = False) -> list[torch.Tensor]:
    """One (n, 4) xyxy tensor per image, 0..4 boxes each, corners anywhere from 6 px before to 6 px past the image."""
    height, width = image_size
    boxes = []
    for _ in range(batch):
        if floats:
            xs, ys = st.floats(-6, width + 6), st.floats(-6, height + 6)
        else:
            xs, ys = st.integers(-6, width + 6), st.integers(-6, height + 6)
        rows = draw(st.lists(st.tuples(xs, ys, xs, ys), max_size=4))
        boxes.append(torch.tensor(rows, dtype=torch.float64 if floats else torch.long).reshape(-1, 4))
    return boxes


@st.composite
def raw_maps(draw: st.DrawFn, batch: int, at_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, gh, gw) float32 maps on a patch grid of 1..12 a side (or exactly ``at_size``), any finite values."""
    shape = (batch, *at_size) if at_size else (batch, draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    values = st.floats(-1e3, 1e3, width=32)
    return torch.from_numpy(draw(arrays(np.float32, shape, elements=values)))


@st.composite
def grid_maps(draw: st.DrawFn, shape: tuple[int, ...]) -> torch.Tensor:
    """Maps whose values are multiples of 1/8 in [-4, 4]: exact in float32 under the rescalings below."""
    return torch.from_numpy(draw(arrays(np.int8, shape, elements=st.integers(-32, 32))).astype(np.float32) / 8)


@st.composite
def localization_cases(draw: st.DrawFn) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
    """(maps, boxes, image_size) for a batch of 1..3 images."""
    image_size, batch = draw(image_sizes), draw(st.integers(1, 3))
    at_image_size = draw(st.booleans())
    maps = draw(raw_maps(batch, at_size=image_size if at_image_size else None))
    return maps, draw(box_lists(image_size, batch)), image_size


def slow_mask(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The inclusive union of boxes, pixel by pixel: a pixel is in a box when trunc(x0) <= col <= trunc(x1), ..."""
    height, width = image_size
    corners = [[math.trunc(v) for v in box] for box in boxes.tolist()]
    mask = torch.zeros(height, width, dtype=torch.bool)
    for row in range(height):
        for col in range(width):
            mask[row, col] = any(x0 <= col <= x1 and y0 <= row <= y1 for x0, y0, x1, y1 in corners)
    return mask


class TestScores:
    @PROPERTY
    @given(localization_cases(), st.sampled_from([0.0, 0.25, 0.5, 0.9]))
    def test_every_score_lies_in_the_unit_interval(self, case, threshold):
        maps, boxes, image_size = case
        scores = box_localization(maps, boxes, image_size=image_size, threshold=threshold)
        for name in SCORES:
            assert scores[name].shape == (len(maps),) and scores[name].dtype == torch.float32
            assert ((scores[name] >= 0) & (scores[name] <= 1)).all(), (name, scores[name])

    @PROPERTY
    @given(st.lists(st.tuples(*[st.integers(0, 224 * 224)] * 4), min_size=1, max_size=8))
    def test_scores_from_any_counts_are_ordered_ratios_in_the_unit_interval(self, counts):
        """0 <= IoU <= Dice, precision, recall <= 1 exactly: each is (a + eps) / (b + eps) with integer a <= b."""
        tp, fp, fn, tn = torch.tensor(counts).T
        scores = scores_from_counts(tp, fp, fn, tn)
        for name in SCORES:
            assert ((scores[name] >= 0) & (scores[name] <= 1)).all(), name
        assert (scores["iou"] <= scores["dice"]).all()
        assert (scores["iou"] <= scores["precision"]).all() and (scores["iou"] <= scores["recall"]).all()

    @PROPERTY
    @given(st.lists(st.tuples(st.integers(0, 224 * 224), st.integers(0, 224 * 224)), min_size=1, max_size=8))
    def test_no_predicted_pixel_has_precision_one(self, counts):
        fn, tn = torch.tensor(counts).T
        no_prediction = torch.zeros_like(fn)
        assert (scores_from_counts(no_prediction, no_prediction, fn, tn)["precision"] == 1).all()

    @PROPERTY
    @given(localization_cases())
    def test_a_threshold_nothing_exceeds_predicts_no_box_and_precision_one(self, case):
        maps, boxes, image_size = case
        assert all(len(b) == 0 for b in heatmap_boxes(normalize_heatmaps(maps, image_size), threshold=1.0))
        scores = box_localization(maps, boxes, image_size=image_size, threshold=1.0)
        assert (scores["precision"] == 1).all()

    @PROPERTY
    @given(localization_cases())
    def test_pixel_counts_add_up_to_the_image(self, case):
        maps, boxes, image_size = case
        heatmaps = normalize_heatmaps(maps, image_size)
        pred_masks = boxes_to_mask(heatmap_boxes(heatmaps), image_size)
        tp, fp, fn, tn = confusion_counts(pred_masks, boxes_to_mask(boxes, image_size))
        assert ((tp + fp + fn + tn) == image_size[0] * image_size[1]).all()
        assert torch.equal(tp + fp, pred_masks.flatten(1).sum(dim=1))


class TestRescaling:
    """Positive affine rescalings of a map change neither its heatmap nor any score."""

    @PROPERTY
    @given(image_sizes, st.integers(1, 3), st.integers(-3, 3), st.integers(-256, 256), st.data())
    def test_maps_at_image_size_under_a_positive_affine_rescaling(self, image_size, batch, log2_scale, offset, data):
        maps = data.draw(grid_maps((batch, *image_size)))
        boxes = data.draw(box_lists(image_size, batch))
        rescaled = maps * 2.0**log2_scale + offset / 8  # exact: a binary grid stays a binary grid
        assert torch.equal(normalize_heatmaps(rescaled, image_size), normalize_heatmaps(maps, image_size))
        self.assert_same_scores(maps, rescaled, boxes, image_size)

    @PROPERTY
    @given(image_sizes, st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.integers(-3, 3), st.data())
    def test_patch_maps_under_a_power_of_two_scale_through_upsampling(self, image_size, batch, gh, gw, log2, data):
        """Bilinear weights times 2**k round exactly like the weights alone (an offset would not: see the module)."""
        maps = data.draw(grid_maps((batch, gh, gw)))
        boxes = data.draw(box_lists(image_size, batch))
        rescaled = maps * 2.0**log2
        assert torch.equal(normalize_heatmaps(rescaled, image_size), normalize_heatmaps(maps, image_size))
        self.assert_same_scores(maps, rescaled, boxes, image_size)

    @staticmethod
    def assert_same_scores(maps, rescaled, boxes, image_size) -> None:
        before, after = (box_localization(m, boxes, image_size=image_size) for m in (maps, rescaled))
        for name in SCORES:
            assert torch.equal(before[name], after[name]), name
        hits = (pointing_game(m, boxes, image_size=image_size) for m in (maps, rescaled))
        assert torch.equal(*hits)


class TestHeatmaps:
    @PROPERTY
    @given(image_sizes, st.integers(1, 12), st.integers(1, 12), st.floats(-1e3, 1e3, width=32))
    def test_a_constant_map_gives_an_all_zero_heatmap_no_box_and_no_peak(self, image_size, gh, gw, value):
        maps = torch.full((2, gh, gw), value)
        heatmaps = normalize_heatmaps(maps, image_size)
        assert torch.equal(heatmaps, torch.zeros(2, *image_size))
        assert [len(b) for b in heatmap_boxes(heatmaps)] == [0, 0]
        whole_image = torch.tensor([[0, 0, image_size[1] - 1, image_size[0] - 1]])
        assert pointing_game(maps, [whole_image] * 2, image_size=image_size, tolerance=5).tolist() == [False, False]

    @PROPERTY
    @given(localization_cases())
    def test_heatmaps_lie_in_the_unit_interval_and_reach_one_unless_all_zero(self, case):
        maps, _, image_size = case
        heatmaps = normalize_heatmaps(maps, image_size)
        assert heatmaps.shape == (len(maps), *image_size) and heatmaps.dtype == torch.float32
        assert ((heatmaps >= 0) & (heatmaps <= 1)).all()  # (v - low) <= (high - low) survives rounding
        peaks = heatmaps.flatten(1).amax(dim=1)
        assert ((peaks == 1) | (peaks == 0)).all()
        if maps.shape[-2:] == image_size:  # no resampling to flatten it: a map that varies reaches 1
            varies = maps.flatten(1).amax(dim=1) > maps.flatten(1).amin(dim=1)
            assert torch.equal(peaks == 1, varies)


class TestHeatmapBoxes:
    @PROPERTY
    @given(localization_cases(), st.sampled_from([0.0, 0.3, 0.5, 0.9]))
    def test_boxes_lie_in_the_image_and_cover_exactly_the_hot_pixels(self, case, threshold):
        """Boxes are OpenCV rectangles (x, y, x + w, y + h): half-open, so 0 <= x0 < x1 <= W, never past W.

        (The protocol then fills them inclusively, one pixel wider than the hot region where the image allows.)
        """
        maps, _, image_size = case
        height, width = image_size
        heatmaps = normalize_heatmaps(maps, image_size)
        for heatmap, boxes in zip(heatmaps, heatmap_boxes(heatmaps, threshold), strict=True):
            assert boxes.dtype == torch.int64 and boxes.shape[1:] == (4,)
            x0, y0, x1, y1 = boxes.T
            assert ((x0 >= 0) & (x0 < x1) & (x1 <= width)).all() and ((y0 >= 0) & (y0 < y1) & (y1 <= height)).all()
            hot = heatmap > threshold
            in_some_box = torch.zeros_like(hot)
            for bx0, by0, bx1, by1 in boxes.tolist():
                assert hot[by0:by1, bx0:bx1].any()  # every box holds hot pixels
                in_some_box[by0:by1, bx0:bx1] = True
            assert not (hot & ~in_some_box).any()  # every hot pixel is in a box


class TestBoxesToMask:
    @PROPERTY
    @given(image_sizes, st.booleans(), st.data())
    def test_equals_the_pixel_by_pixel_inclusive_fill(self, image_size, floats, data):
        boxes = data.draw(box_lists(image_size, batch=2, floats=floats))
        masks = boxes_to_mask(boxes, image_size)
        assert masks.shape == (2, *image_size) and masks.dtype == torch.bool
        for mask, image_boxes in zip(masks, boxes, strict=True):
            assert torch.equal(mask, slow_mask(image_boxes, image_size))

    @PROPERTY
    @given(image_sizes, st.data())
    def test_a_degenerate_box_is_a_line_or_a_pixel(self, image_size, data):
        height, width = image_size
        x, y = data.draw(st.integers(0, width - 1)), data.draw(st.integers(0, height - 1))
        y1 = data.draw(st.integers(y, height - 1))
        mask = boxes_to_mask([torch.tensor([[x, y, x, y1]])], image_size)[0]
        assert mask.sum() == y1 - y + 1 and mask[y : y1 + 1, x].all()


class TestPointingGame:
    @PROPERTY
    @given(image_sizes.filter(lambda size: size[0] * size[1] > 1), st.data())  # one pixel is a constant map
    def test_a_unique_peak_inside_a_box_hits(self, image_size, data):
        height, width = image_size
        maps = data.draw(grid_maps((1, height, width))).clamp(max=3.0)
        row, col = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
        maps[0, row, col] = 4.0
        x0, x1 = data.draw(st.integers(-3, col)), data.draw(st.integers(col, width + 3))
        y0, y1 = data.draw(st.integers(-3, row)), data.draw(st.integers(row, height + 3))
        inside = [torch.tensor([[x0, y0, x1, y1]])]
        assert pointing_game(maps, inside, image_size=image_size).tolist() == [True]

    @PROPERTY
    @given(localization_cases())
    def test_more_tolerance_never_loses_a_hit(self, case):
        maps, boxes, image_size = case
        hits = [pointing_game(maps, boxes, image_size=image_size, tolerance=t) for t in (0, 2, 15)]
        for fewer, more in zip(hits, hits[1:]):
            assert (fewer <= more).all()
