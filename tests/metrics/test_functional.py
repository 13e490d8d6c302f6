"""Behaviour of the localization and ABPC metrics on small maps, boxes and a tiny model made here."""

import doctest
import importlib

import pytest
import torch
from torch import nn

from pipeline.metrics import (
    ABPC,
    LocalizationMetrics,
    abpc,
    box_localization,
    boxes_to_mask,
    localization_scores,
    mask_localization,
    mask_pointing_game,
    mass_in_box,
    mass_in_mask,
    normalize_heatmaps,
    pointing_game,
)
from pipeline.metrics.localization import REPORTED_SCORES

SCORES = ("pixel_accuracy", "iou", "dice", "precision", "recall")


def hot_block_maps(batch: int = 1, grid: int = 4) -> torch.Tensor:
    """Raw (B, grid, grid) maps that are 1 on the patches [1:3, 1:3] and 0 elsewhere."""
    maps = torch.zeros(batch, grid, grid)
    maps[:, 1:3, 1:3] = 1.0
    return maps


def random_cases(batch: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Random (B, 7, 7) maps, one to three random boxes per image at 28 x 28, and random correctness flags."""
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, 7, 7, generator=generator)
    boxes = []
    for _ in range(batch):
        corners = torch.randint(0, 28, (int(torch.randint(1, 4, (1,), generator=generator)), 2, 2), generator=generator)
        boxes.append(torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1))  # (n, 4) xyxy
    correct = torch.rand(batch, generator=generator) > 0.3
    return maps, boxes, correct


class TopLeftDetector(nn.Module):
    """Class 0's logit is the summed intensity of the top-left 4 x 4 quadrant; class 1's is 0. Records its modes."""

    def __init__(self) -> None:
        super().__init__()
        self.modes_seen: list[tuple[bool, bool]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes_seen.append((self.training, torch.is_grad_enabled()))
        evidence = images[:, :, :4, :4].sum(dim=(1, 2, 3))  # (N,)
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def top_left_heatmaps(batch: int = 2) -> torch.Tensor:
    """(B, 8, 8) heatmaps that are highest on the top-left quadrant, with distinct values elsewhere."""
    heatmaps = torch.linspace(0, 0.5, 64).reshape(1, 8, 8).repeat(batch, 1, 1)
    heatmaps[:, :4, :4] += 1.0
    return heatmaps / heatmaps.amax()


class TestHeatmaps:
    def test_upsampled_and_scaled_to_unit_range(self):
        heatmaps = normalize_heatmaps(torch.randn(3, 4, 4), (32, 32))
        assert heatmaps.shape == (3, 32, 32) and heatmaps.dtype == torch.float32
        assert torch.allclose(heatmaps.amin(dim=(1, 2)), torch.zeros(3))
        assert torch.allclose(heatmaps.amax(dim=(1, 2)), torch.ones(3))

    def test_maps_at_image_size_are_only_normalized(self):
        maps = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]], dtype=torch.float64)
        assert torch.equal(normalize_heatmaps(maps, (2, 2)), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))

    def test_constant_map_gives_zeros_not_nan(self):
        assert torch.equal(normalize_heatmaps(torch.full((2, 4, 4), 0.37), (16, 16)), torch.zeros(2, 16, 16))


class TestBoxesToMask:
    def test_boxes_fill_inclusively_and_merge(self):
        mask = boxes_to_mask([torch.tensor([[0, 0, 1, 1], [1, 1, 2, 2]])], (4, 4))
        expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
        assert torch.equal(mask[0], expected)

    def test_boxes_reaching_past_the_border_are_clipped(self):
        mask = boxes_to_mask([torch.tensor([[2, 2, 4, 4]]), torch.zeros(0, 4, dtype=torch.long)], (4, 4))
        assert mask[0].sum() == 4 and mask[0, 2:, 2:].all()
        assert not mask[1].any()


class TestBoxLocalization:
    def test_heatmap_exactly_on_the_box_scores_one(self):
        # upsampled hot patches [1:3, 1:3] of a 4 x 4 grid are hot on pixels 8..23 -> box (8, 8, 24, 24)
        scores = box_localization(hot_block_maps(), [torch.tensor([[8, 8, 24, 24]])], image_size=(32, 32))
        for name in SCORES:
            assert scores[name].item() == pytest.approx(1.0), name

    def test_disjoint_box_scores_zero_iou(self):
        scores = box_localization(hot_block_maps(), [torch.tensor([[28, 0, 31, 3]])], image_size=(32, 32))
        assert scores["iou"].item() < 1e-6 and scores["dice"].item() < 1e-6 and scores["recall"].item() < 1e-6

    def test_constant_map_predicts_nothing_and_stays_finite(self):
        scores = box_localization(torch.full((1, 4, 4), 0.37), [torch.tensor([[0, 0, 7, 7]])], image_size=(32, 32))
        assert all(torch.isfinite(scores[name]).all() for name in SCORES)
        assert scores["iou"].item() < 1e-6
        assert scores["precision"].item() == pytest.approx(1.0)  # no predicted pixel: eps / eps
        assert scores["pixel_accuracy"].item() == pytest.approx(1 - 64 / 1024)

    def test_batched_equals_one_image_at_a_time(self):
        maps, boxes, _ = random_cases(6)
        batched = box_localization(maps, boxes, image_size=(28, 28))
        for i in range(6):
            single = box_localization(maps[i : i + 1], boxes[i : i + 1], image_size=(28, 28))
            for name in SCORES:
                assert torch.equal(single[name], batched[name][i : i + 1]), (name, i)


class TestMaskLocalization:
    def test_thresholded_heatmap_is_compared_pixel_by_pixel(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 2:6, 2:6] = 1.0
        masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        masks[0, 2:6, 2:4] = True  # half of the hot square
        scores = mask_localization(maps, masks)
        assert scores["precision"].item() == pytest.approx(0.5)
        assert scores["recall"].item() == pytest.approx(1.0)
        assert scores["iou"].item() == pytest.approx(0.5)


class TestPointingGame:
    def test_peak_inside_a_box_hits_and_outside_misses(self):
        maps = torch.zeros(2, 8, 8)
        maps[:, 2, 3] = 1.0
        boxes = [torch.tensor([[3, 2, 3, 2]]), torch.tensor([[5, 5, 7, 7]])]
        assert pointing_game(maps, boxes, image_size=(8, 8)).tolist() == [True, False]

    def test_tolerance_reaches_a_nearby_box(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 0, 0] = 1.0
        box = [torch.tensor([[3, 4, 7, 7]])]  # nearest box pixel (3, 4) lies 5 px away
        assert pointing_game(maps, box, image_size=(8, 8), tolerance=4).tolist() == [False]
        assert pointing_game(maps, box, image_size=(8, 8), tolerance=5).tolist() == [True]

    def test_tied_peaks_share_the_credit_whatever_the_scan_order(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 1, 6] = maps[0, 6, 1] = 1.0  # two tied peaks: (row 1, col 6) and (row 6, col 1)
        around_first, around_second = [torch.tensor([[6, 1, 6, 1]])], [torch.tensor([[1, 6, 1, 6]])]
        assert pointing_game(maps, around_first, image_size=(8, 8)).tolist() == [0.5]
        assert pointing_game(maps, around_second, image_size=(8, 8)).tolist() == [0.5]  # row-major order gave 0
        transposed = maps.transpose(1, 2)  # the same peaks met in the other order
        assert pointing_game(transposed, around_second, image_size=(8, 8)).tolist() == [0.5]
        maps[0, 2, 6] = 1.0  # a third tie, inside a box with the first
        assert pointing_game(maps, [torch.tensor([[6, 1, 6, 2]])], image_size=(8, 8)).item() == pytest.approx(2 / 3)

    def test_an_upsampling_plateau_is_shared_among_its_pixels(self):
        # a 2 x 2 map peaking in its corner patch becomes a 2 x 2 plateau of exact maxima at 8 x 8 (bilinear,
        # align_corners=False clamps at the border): (0, 0), (0, 1), (1, 0), (1, 1)
        maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
        assert pointing_game(maps, [torch.tensor([[1, 1, 1, 1]])], image_size=(8, 8)).tolist() == [0.25]
        assert pointing_game(maps, [torch.tensor([[0, 0, 0, 1]])], image_size=(8, 8)).tolist() == [0.5]
        assert pointing_game(maps, [torch.tensor([[0, 0, 5, 5]])], image_size=(8, 8)).tolist() == [1.0]
        assert pointing_game(maps, [torch.tensor([[2, 2, 7, 7]])], image_size=(8, 8)).tolist() == [0.0]
        masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        masks[0, 1, 1] = True
        assert mask_pointing_game(maps, masks).tolist() == [0.25]

    def test_tolerance_counts_each_tied_peak_by_its_own_distance(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 0, 0] = maps[0, 7, 7] = 1.0
        box = [torch.tensor([[5, 5, 6, 6]])]  # (7, 7) is sqrt(2) px from it, (0, 0) about 7.07 px
        hits = [pointing_game(maps, box, image_size=(8, 8), tolerance=t).item() for t in (0, 1, 2, 7, 8)]
        assert hits == [0.0, 0.0, 0.5, 0.5, 1.0]

    def test_the_metric_averages_shared_credit(self):
        maps = torch.zeros(2, 8, 8)
        maps[:, 1, 6] = maps[:, 6, 1] = 1.0
        metric = LocalizationMetrics(image_size=(8, 8))
        metric.update(maps, [torch.tensor([[6, 1, 6, 1]])] * 2, torch.tensor([True, True]))
        assert metric.compute()["pointing_game"].item() == pytest.approx(0.5)

    def test_constant_map_has_no_peak_and_misses(self):
        whole_image = [torch.tensor([[0, 0, 7, 7]])]
        assert pointing_game(torch.ones(1, 8, 8), whole_image, image_size=(8, 8)).tolist() == [False]

    def test_against_masks(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 4, 4] = 1.0
        masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        masks[0, 4, 4] = True
        assert mask_pointing_game(maps, masks).tolist() == [True]
        assert mask_pointing_game(maps, ~masks).tolist() == [False]


class TestLocalizationMetrics:
    def test_merged_halves_equal_one_pass_as_under_ddp(self):
        maps, boxes, correct = random_cases(8)
        whole = LocalizationMetrics(image_size=(28, 28))
        whole.update(maps, boxes, correct)
        first, second = LocalizationMetrics(image_size=(28, 28)), LocalizationMetrics(image_size=(28, 28))
        first.update(maps[:5], boxes[:5], correct[:5])
        second.update(maps[5:], boxes[5:], correct[5:])
        first.merge_state(second)
        merged, expected = first.compute(), whole.compute()
        assert merged.keys() == expected.keys()
        assert torch.equal(merged["cases"], expected["cases"]) and torch.equal(merged["skipped"], expected["skipped"])
        for name in REPORTED_SCORES:
            torch.testing.assert_close(merged[name], expected[name], rtol=1e-12, atol=0)

    def test_only_correct_cases_count_and_misclassified_are_skipped(self):
        maps, boxes, correct = random_cases(8)
        metric = LocalizationMetrics(image_size=(28, 28))
        metric.update(maps, boxes, correct)
        result = metric.compute()
        used = correct.nonzero()[:, 0]
        expected = box_localization(maps[used], [boxes[i] for i in used], image_size=(28, 28))
        assert result["cases"].item() == correct.sum().item()
        assert result["skipped"].item() == (~correct).sum().item()
        for name in SCORES:
            assert result[name].item() == pytest.approx(expected[name].double().mean().item(), abs=1e-7)

    def test_pointing_game_rate_is_accumulated(self):
        maps = torch.zeros(4, 8, 8)
        maps[:, 2, 2] = 1.0
        hit, miss = torch.tensor([[0, 0, 3, 3]]), torch.tensor([[5, 5, 7, 7]])
        metric = LocalizationMetrics(image_size=(8, 8))
        metric.update(maps, [hit, miss, hit, hit], torch.tensor([True, True, True, False]))
        assert metric.compute()["pointing_game"].item() == pytest.approx(2 / 3)

    def test_one_pass_gives_exactly_the_separate_functions_scores(self):
        maps, boxes, _ = random_cases(6, seed=3)
        together = localization_scores(maps, boxes, image_size=(28, 28), threshold=0.4, tolerance=2)
        expected = {
            **box_localization(maps, boxes, image_size=(28, 28), threshold=0.4),
            "pointing_game": pointing_game(maps, boxes, image_size=(28, 28), tolerance=2),
            "mass_in_box": mass_in_box(maps, boxes, image_size=(28, 28)),
        }
        masks = boxes_to_mask(boxes, (28, 28))
        in_masks = localization_scores(maps, masks=masks, threshold=0.4, tolerance=2)
        expected_in_masks = {
            **mask_localization(maps, masks, threshold=0.4),
            "pointing_game": mask_pointing_game(maps, masks, tolerance=2),
            "mass_in_box": mass_in_mask(maps, masks),
        }
        for name in REPORTED_SCORES:
            assert torch.equal(together[name], expected[name]), name
            assert torch.equal(in_masks[name], expected_in_masks[name]), name

    def test_the_fast_path_gives_the_same_numbers(self):
        maps, boxes, correct = random_cases(8, seed=4)
        checked, fast = (
            LocalizationMetrics(image_size=(28, 28)),
            LocalizationMetrics(image_size=(28, 28), validate_args=False),
        )
        for metric in (checked, fast):
            metric.update(maps, boxes, correct)
        expected, got = checked.compute(), fast.compute()
        assert expected.keys() == got.keys() and all(torch.equal(expected[name], got[name]) for name in expected)

    def test_box_mode_without_an_image_size_is_refused(self):
        with pytest.raises(ValueError, match="image_size: give the .H, W. the boxes are at"):
            LocalizationMetrics().update(hot_block_maps(), [torch.tensor([[8, 8, 24, 24]])], torch.tensor([True]))

    def test_image_size_given_to_update_overrides_the_constructor(self):
        metric = LocalizationMetrics(image_size=(224, 224))
        metric.update(hot_block_maps(), [torch.tensor([[8, 8, 24, 24]])], torch.tensor([True]), image_size=(32, 32))
        assert metric.compute()["iou"].item() == pytest.approx(1.0)

    def test_mask_mode(self):
        maps = torch.zeros(2, 8, 8)
        maps[:, 2:6, 2:6] = 1.0
        masks = torch.zeros(2, 8, 8, dtype=torch.bool)
        masks[:, 2:6, 2:6] = True
        metric = LocalizationMetrics()
        metric.update(maps, None, torch.tensor([True, True]), masks=masks)
        result = metric.compute()
        assert result["iou"].item() == pytest.approx(1.0) and result["pointing_game"].item() == 1.0

    def test_empty_batch_changes_nothing(self):
        metric = LocalizationMetrics(image_size=(28, 28))
        metric.update(torch.zeros(0, 7, 7), [], torch.zeros(0, dtype=torch.bool))
        assert metric.compute() == {"cases": torch.tensor(0), "skipped": torch.tensor(0)}

    def test_no_used_case_reports_counts_only(self):
        metric = LocalizationMetrics(image_size=(28, 28))
        maps, boxes, _ = random_cases(3)
        metric.update(maps, boxes, torch.zeros(3, dtype=torch.bool))
        result = metric.compute()
        assert set(result) == {"cases", "skipped"}
        assert result["cases"].item() == 0 and result["skipped"].item() == 3


class TestPerClassLocalization:
    def per_case_scores(self, maps, boxes) -> dict[str, torch.Tensor]:
        """Every reported score of every case, from the functional API."""
        scores = box_localization(maps, boxes, image_size=(28, 28))
        scores["pointing_game"] = pointing_game(maps, boxes, image_size=(28, 28)).float()
        scores["mass_in_box"] = mass_in_box(maps, boxes, image_size=(28, 28))
        return scores

    def test_per_class_means_are_the_means_of_each_class_correct_cases(self):
        maps, boxes, correct = random_cases(12, seed=1)
        classes = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
        metric = LocalizationMetrics(image_size=(28, 28), num_classes=4)  # class 3 never occurs
        metric.update(maps, boxes, correct, classes=classes)
        result = metric.compute()
        per_case = self.per_case_scores(maps, boxes)
        expected_cases = [int((correct & (classes == c)).sum()) for c in range(4)]
        assert result["per_class_cases"].tolist() == expected_cases and min(expected_cases[:3]) > 0
        for name in REPORTED_SCORES:
            per_class = result[f"per_class_{name}"]
            assert per_class.shape == (4,) and per_class.dtype == torch.float64
            for c in range(3):
                expected = per_case[name][correct & (classes == c)].double().mean().item()
                assert per_class[c].item() == pytest.approx(expected, abs=1e-7), (name, c)
            assert per_class[3].item() == 0.0  # no case: 0.0, never NaN; per_class_cases says to skip it

    def test_overall_means_do_not_change_when_classes_are_tracked(self):
        maps, boxes, correct = random_cases(8, seed=2)
        plain, by_class = (
            LocalizationMetrics(image_size=(28, 28)),
            LocalizationMetrics(image_size=(28, 28), num_classes=3),
        )
        plain.update(maps, boxes, correct)
        by_class.update(maps, boxes, correct, classes=torch.arange(8) % 3)
        plain_result, by_class_result = plain.compute(), by_class.compute()
        assert set(by_class_result) - set(plain_result) == {
            "per_class_cases",
            *(f"per_class_{name}" for name in REPORTED_SCORES),
        }
        for name, value in plain_result.items():
            assert torch.equal(by_class_result[name], value), name

    def test_merged_halves_equal_one_pass_as_under_ddp(self):
        maps, boxes, correct = random_cases(10, seed=3)
        classes = torch.tensor([1, 0, 1, 1, 2, 0, 2, 1, 0, 0])
        whole = LocalizationMetrics(image_size=(28, 28), num_classes=3)
        whole.update(maps, boxes, correct, classes=classes)
        first, second = (LocalizationMetrics(image_size=(28, 28), num_classes=3) for _ in range(2))
        first.update(maps[:4], boxes[:4], correct[:4], classes=classes[:4])
        second.update(maps[4:], boxes[4:], correct[4:], classes=classes[4:])
        first.merge_state(second)
        merged, expected = first.compute(), whole.compute()
        assert merged.keys() == expected.keys()
        assert torch.equal(merged["per_class_cases"], expected["per_class_cases"])
        for name in REPORTED_SCORES:
            torch.testing.assert_close(merged[f"per_class_{name}"], expected[f"per_class_{name}"], rtol=1e-12, atol=0)

    def test_mask_mode_accumulates_per_class(self):
        maps = torch.zeros(3, 8, 8)
        maps[:, 2:6, 2:6] = 1.0
        masks = torch.zeros(3, 8, 8, dtype=torch.bool)
        masks[:2, 2:6, 2:6] = True  # the first two cases are right on, the third has an empty mask
        metric = LocalizationMetrics(num_classes=2)
        metric.update(maps, None, torch.ones(3, dtype=torch.bool), masks=masks, classes=torch.tensor([0, 1, 1]))
        result = metric.compute()
        assert result["per_class_cases"].tolist() == [1, 2]
        assert result["per_class_mass_in_box"].tolist() == [1.0, 0.5]

    def test_no_used_case_reports_the_counts_only(self):
        maps, boxes, _ = random_cases(3)
        metric = LocalizationMetrics(image_size=(28, 28), num_classes=2)
        metric.update(maps, boxes, torch.zeros(3, dtype=torch.bool), classes=torch.tensor([0, 1, 1]))
        result = metric.compute()
        assert set(result) == {"cases", "skipped", "per_class_cases"}
        assert result["per_class_cases"].tolist() == [0, 0] and result["skipped"].item() == 3

    def test_classes_are_required_with_num_classes(self):
        with pytest.raises(ValueError, match=r"classes must be a \(2,\) integer tensor"):
            LocalizationMetrics(image_size=(8, 8), num_classes=3).update(
                torch.zeros(2, 4, 4), [torch.zeros(0, 4)] * 2, torch.ones(2, dtype=torch.bool)
            )

    def test_classes_are_refused_without_num_classes(self):
        with pytest.raises(ValueError, match="built without num_classes"):
            LocalizationMetrics(image_size=(8, 8)).update(
                torch.zeros(1, 4, 4), [torch.zeros(0, 4)], torch.ones(1, dtype=torch.bool), classes=torch.zeros(1)
            )

    def test_classes_out_of_range(self):
        with pytest.raises(ValueError, match=r"classes must be in \[0, 2\], got values from 0 to 3"):
            LocalizationMetrics(image_size=(8, 8), num_classes=3).update(
                torch.zeros(2, 4, 4),
                [torch.zeros(0, 4)] * 2,
                torch.ones(2, dtype=torch.bool),
                classes=torch.tensor([0, 3]),
            )


class TestBadInputs:
    def test_maps_without_batch_dimension(self):
        with pytest.raises(ValueError, match=r"maps must be a \(B, H, W\) tensor, got \(4, 4\)"):
            box_localization(torch.zeros(4, 4), [torch.zeros(1, 4)], image_size=(8, 8))

    def test_one_box_tensor_per_image(self):
        with pytest.raises(ValueError, match=r"one \(n, 4\) tensor per image \(2 images\), got 1 entries"):
            box_localization(torch.zeros(2, 4, 4), [torch.zeros(1, 4)], image_size=(8, 8))

    def test_box_tensor_shape(self):
        with pytest.raises(ValueError, match=r"boxes\[0\] must be an \(n, 4\) xyxy tensor, got \(4,\)"):
            pointing_game(torch.zeros(1, 4, 4), [torch.zeros(4)], image_size=(8, 8))

    def test_mask_per_map(self):
        with pytest.raises(ValueError, match=r"masks must be a \(2, H, W\) tensor"):
            mask_localization(torch.zeros(2, 4, 4), torch.zeros(3, 8, 8, dtype=torch.bool))

    def test_correct_flags(self):
        with pytest.raises(ValueError, match=r"correct must be a \(2,\) bool tensor"):
            LocalizationMetrics(image_size=(8, 8)).update(torch.zeros(2, 4, 4), [torch.zeros(0, 4)] * 2, torch.ones(2))

    def test_boxes_or_masks_not_both(self):
        with pytest.raises(ValueError, match="exactly one of boxes"):
            LocalizationMetrics().update(torch.zeros(1, 4, 4), None, torch.ones(1, dtype=torch.bool))

    def test_abpc_target_shape(self):
        with pytest.raises(ValueError, match=r"target must be a \(2,\) integer tensor"):
            abpc(TopLeftDetector(), torch.ones(2, 3, 8, 8), top_left_heatmaps(2), torch.zeros(2, 1, dtype=torch.long))

    def test_abpc_heatmap_per_image(self):
        with pytest.raises(ValueError, match=r"heatmaps must hold one map per image \(2\)"):
            abpc(TopLeftDetector(), torch.ones(2, 3, 8, 8), top_left_heatmaps(3), torch.zeros(2, dtype=torch.long))


class TestABPC:
    def test_faithful_heatmap_scores_positive_and_reversed_negative(self):
        images, target = torch.ones(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
        faithful = abpc(TopLeftDetector(), images, top_left_heatmaps(), target)
        reversed_ = abpc(TopLeftDetector(), images, 1 - top_left_heatmaps(), target)
        assert (faithful["abpc"] > 0.3).all()
        assert (reversed_["abpc"] < -0.3).all()
        assert faithful["morf"].shape == faithful["lerf"].shape == (2, 11)
        torch.testing.assert_close(faithful["morf"][:, 0], faithful["lerf"][:, 0])  # nothing removed
        torch.testing.assert_close(faithful["morf"][:, -1], faithful["lerf"][:, -1])  # everything removed

    def test_raw_maps_are_normalized_first(self):
        images, target = torch.ones(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
        raw_maps = torch.zeros(2, 2, 2)
        raw_maps[:, 0, 0] = 5.0
        from_raw = abpc(TopLeftDetector(), images, raw_maps, target)
        from_heatmaps = abpc(TopLeftDetector(), images, normalize_heatmaps(raw_maps, (8, 8)), target)
        torch.testing.assert_close(from_raw, from_heatmaps)

    def test_chunk_size_does_not_change_the_result(self):
        images, target = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 0])
        one_chunk = abpc(TopLeftDetector(), images, top_left_heatmaps(3), target, steps=6, batch_size=64)
        small_chunks = abpc(TopLeftDetector(), images, top_left_heatmaps(3), target, steps=6, batch_size=5)
        torch.testing.assert_close(one_chunk, small_chunks)

    def test_model_runs_in_eval_without_grad_and_gets_its_mode_back(self):
        model = TopLeftDetector().train()
        abpc(model, torch.ones(1, 3, 8, 8), top_left_heatmaps(1), torch.zeros(1, dtype=torch.long), batch_size=4)
        assert len(model.modes_seen) == 6  # 22 perturbed inputs in chunks of 4
        assert set(model.modes_seen) == {(False, False)}
        assert model.training

    def test_a_mixed_train_eval_model_gets_each_module_mode_back(self):
        model = nn.Sequential(TopLeftDetector(), nn.Identity()).train()
        model[1].eval()  # e.g. a frozen part
        abpc(model, torch.ones(1, 3, 8, 8), top_left_heatmaps(1), torch.zeros(1, dtype=torch.long))
        assert model.training and model[0].training and not model[1].training

    def test_merged_halves_equal_one_pass_as_under_ddp(self):
        images, heatmaps, target = torch.rand(4, 3, 8, 8), top_left_heatmaps(4), torch.tensor([0, 1, 0, 0])
        whole = ABPC()
        whole.update(TopLeftDetector(), images, heatmaps, target)
        first, second = ABPC(), ABPC()
        first.update(TopLeftDetector(), images[:1], heatmaps[:1], target[:1])
        second.update(TopLeftDetector(), images[1:], heatmaps[1:], target[1:])
        first.merge_state(second)
        merged, expected = first.compute(), whole.compute()
        assert torch.equal(merged["count"], expected["count"]) and merged["count"].item() == 4
        for name in ("abpc", "lerf", "morf"):
            torch.testing.assert_close(merged[name], expected[name], rtol=1e-12, atol=1e-15)

    @pytest.mark.filterwarnings("ignore:The ``compute`` method of metric ABPC was called before")
    def test_nothing_added_reports_the_count_only(self):
        assert ABPC().compute() == {"count": torch.tensor(0)}


@pytest.mark.parametrize("module_name", ["functional", "localization"])
def test_docstring_examples_run(module_name):
    module = importlib.import_module(f"pipeline.metrics.{module_name}")
    results = doctest.testmod(module, extraglobs={"torch": torch})
    assert results.attempted > 0 and results.failed == 0
