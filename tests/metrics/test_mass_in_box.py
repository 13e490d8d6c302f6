"""Relevance mass accuracy: the share of positive relevance inside the ground truth, threshold-free."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.metrics import LocalizationMetrics, mass_in_box, mass_in_mask


def box(x_min: int, y_min: int, x_max: int, y_max: int) -> torch.Tensor:
    """One inclusive xyxy box as the (1, 4) tensor an image's box list holds."""
    return torch.tensor([[x_min, y_min, x_max, y_max]])


class TestMassInBox:
    def test_all_mass_inside_scores_one(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 2:5, 3:6] = torch.rand(3, 3) + 0.1
        assert mass_in_box(maps, [box(3, 2, 5, 4)], image_size=(8, 8)).tolist() == [1.0]

    def test_all_mass_outside_scores_zero(self):
        maps = torch.zeros(1, 8, 8)
        maps[0, 0, 0] = 2.0
        assert mass_in_box(maps, [box(1, 1, 7, 7)], image_size=(8, 8)).tolist() == [0.0]

    def test_mass_splits_across_several_boxes(self):
        maps = torch.zeros(1, 4, 4)
        maps[0, 0, 0], maps[0, 3, 3], maps[0, 1, 2] = 1.0, 2.0, 5.0  # total 8
        boxes = [torch.tensor([[0, 0, 0, 0], [3, 3, 3, 3]])]  # hold 1 + 2
        assert mass_in_box(maps, boxes, image_size=(4, 4)).item() == pytest.approx(3 / 8)

    def test_overlapping_boxes_count_their_union_once(self):
        boxes = [torch.tensor([[0, 0, 1, 1], [1, 1, 2, 2]])]  # 4 + 4 pixels sharing (1, 1): 7 of 16
        assert mass_in_box(torch.ones(1, 4, 4), boxes, image_size=(4, 4)).item() == pytest.approx(7 / 16)

    def test_constant_map_scores_the_box_share_of_the_image(self):
        # unlike the thresholded scores, a uniform map is not "nowhere": its mass is spread evenly
        score = mass_in_box(torch.full((1, 4, 4), 0.37), [box(0, 0, 7, 7)], image_size=(32, 32))
        assert score.item() == pytest.approx(64 / 1024, rel=1e-5)

    @pytest.mark.parametrize("map_value", [0.0, -1.0])
    def test_map_without_positive_mass_scores_zero_not_nan(self, map_value):
        score = mass_in_box(torch.full((1, 4, 4), map_value), [box(0, 0, 31, 31)], image_size=(32, 32))
        assert score.tolist() == [0.0]

    def test_negative_relevance_is_ignored(self):
        maps = torch.tensor([[[1.0, -100.0], [1.0, 2.0]]])
        assert mass_in_box(maps, [box(0, 0, 1, 0)], image_size=(2, 2)).item() == pytest.approx(1 / 4)

    def test_image_without_boxes_scores_zero(self):
        maps = torch.rand(2, 4, 4) + 0.1
        scores = mass_in_box(maps, [torch.zeros(0, 4), box(0, 0, 15, 15)], image_size=(16, 16))
        assert scores[0].item() == 0.0 and scores[1].item() == pytest.approx(1.0)

    def test_positive_rescaling_does_not_change_the_score(self):
        maps = torch.randn(4, 7, 7, generator=torch.Generator().manual_seed(0))
        boxes = [
            box(0, 0, 13, 13),
            box(5, 3, 20, 27),
            box(27, 27, 27, 27),
            torch.tensor([[0, 0, 5, 27], [20, 0, 27, 5]]),
        ]
        scores = mass_in_box(maps, boxes, image_size=(28, 28))
        torch.testing.assert_close(mass_in_box(maps * 1024.0, boxes, image_size=(28, 28)), scores, rtol=0, atol=0)
        torch.testing.assert_close(mass_in_box(maps * 3.7, boxes, image_size=(28, 28)), scores)

    def test_raw_map_is_upsampled_bilinearly_without_normalization(self):
        maps = torch.randn(3, 7, 7, generator=torch.Generator().manual_seed(1))
        boxes = [box(3, 4, 15, 20)] * 3
        upsampled = F.interpolate(maps[:, None], size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
        positive = upsampled.clamp(min=0).double()
        expected = positive[:, 4:21, 3:16].sum(dim=(1, 2)) / positive.sum(dim=(1, 2))
        torch.testing.assert_close(mass_in_box(maps, boxes, image_size=(28, 28)), expected.float())

    def test_batched_equals_one_image_at_a_time_and_stays_in_unit_range(self):
        maps = torch.randn(5, 7, 7, generator=torch.Generator().manual_seed(2))
        boxes = [box(i, i, 10 + 3 * i, 12) for i in range(5)]
        batched = mass_in_box(maps, boxes, image_size=(28, 28))
        assert batched.dtype == torch.float32 and ((batched >= 0) & (batched <= 1)).all()
        for i in range(5):
            assert torch.equal(mass_in_box(maps[i : i + 1], boxes[i : i + 1], image_size=(28, 28)), batched[i : i + 1])


class TestMassInMask:
    def test_equals_mass_in_box_for_the_box_shaped_mask(self):
        maps = torch.randn(2, 7, 7, generator=torch.Generator().manual_seed(3))
        masks = torch.zeros(2, 28, 28, dtype=torch.uint8)
        masks[:, 4:21, 3:16] = 2  # any nonzero instance id is foreground
        boxes = [box(3, 4, 15, 20)] * 2
        torch.testing.assert_close(mass_in_mask(maps, masks), mass_in_box(maps, boxes, image_size=(28, 28)))

    def test_counts_only_the_mask_pixels(self):
        maps = torch.ones(1, 4, 4)
        masks = torch.zeros(1, 4, 4, dtype=torch.bool)
        masks[0, 0, :3] = True
        assert mass_in_mask(maps, masks).item() == pytest.approx(3 / 16)

    def test_map_without_positive_mass_scores_zero(self):
        assert mass_in_mask(-torch.ones(1, 2, 2), torch.ones(1, 8, 8, dtype=torch.bool)).tolist() == [0.0]


class TestBadInputs:
    def test_maps_without_batch_dimension(self):
        with pytest.raises(ValueError, match=r"maps must be a \(B, H, W\) tensor, got \(4, 4\)"):
            mass_in_box(torch.zeros(4, 4), [box(0, 0, 1, 1)], image_size=(8, 8))

    def test_one_box_tensor_per_image(self):
        with pytest.raises(ValueError, match=r"one \(n, 4\) tensor per image \(2 images\), got 1 entries"):
            mass_in_box(torch.zeros(2, 4, 4), [box(0, 0, 1, 1)], image_size=(8, 8))

    def test_image_size(self):
        with pytest.raises(ValueError, match=r"image_size must be \(H, W\) with positive sides"):
            mass_in_box(torch.zeros(1, 4, 4), [box(0, 0, 1, 1)], image_size=(0, 8))

    def test_mask_per_map(self):
        with pytest.raises(ValueError, match=r"masks must be a \(2, H, W\) tensor"):
            mass_in_mask(torch.zeros(2, 4, 4), torch.zeros(3, 8, 8, dtype=torch.bool))


class TestInLocalizationMetrics:
    def test_reports_the_mean_over_correct_cases(self):
        maps = torch.randn(6, 7, 7, generator=torch.Generator().manual_seed(4))
        boxes = [box(i, 2, 14 + 2 * i, 20) for i in range(6)]
        correct = torch.tensor([True, False, True, True, False, True])
        metric = LocalizationMetrics(image_size=(28, 28))
        metric.update(maps, boxes, correct)
        per_case = mass_in_box(maps, boxes, image_size=(28, 28))
        expected = per_case[correct].double().mean()
        assert metric.compute()["mass_in_box"].item() == pytest.approx(expected.item(), rel=1e-12)

    def test_mask_mode_reports_the_mass_in_the_masks_under_the_same_name(self):
        maps = torch.ones(2, 4, 4)
        masks = torch.zeros(2, 8, 8, dtype=torch.bool)
        masks[0, :4] = True  # half the image
        masks[1, :2] = True  # a quarter
        metric = LocalizationMetrics()
        metric.update(maps, None, torch.tensor([True, True]), masks=masks)
        assert metric.compute()["mass_in_box"].item() == pytest.approx((1 / 2 + 1 / 4) / 2)

    def test_merged_halves_equal_one_pass_as_under_ddp(self):
        maps = torch.randn(7, 7, 7, generator=torch.Generator().manual_seed(5))
        boxes = [box(i, 0, 10 + 2 * i, 27) for i in range(7)]
        correct = torch.tensor([True, True, False, True, True, True, False])
        whole = LocalizationMetrics(image_size=(28, 28))
        whole.update(maps, boxes, correct)
        first, second = LocalizationMetrics(image_size=(28, 28)), LocalizationMetrics(image_size=(28, 28))
        first.update(maps[:3], boxes[:3], correct[:3])
        second.update(maps[3:], boxes[3:], correct[3:])
        first.merge_state(second)
        torch.testing.assert_close(first.compute()["mass_in_box"], whole.compute()["mass_in_box"], rtol=1e-12, atol=0)
