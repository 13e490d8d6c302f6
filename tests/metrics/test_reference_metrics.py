"""The metrics reproduce the official localization protocol and ABPC numbers in tests/data/public_config.npz."""

import numpy as np
import pytest
import torch

from pipeline.metrics import (
    abpc,
    box_localization,
    boxes_to_mask,
    confusion_counts,
    heatmap_boxes,
    normalize_heatmaps,
    removal_ranks,
)
from tests.helpers.models import build_reference_model

CASES = range(10)
CONSTANT_CASE = 7
REFERENCE_SCORE_NAMES = {
    "pixel_accuracy": "metric_pixel_acc",
    "iou": "metric_iou",
    "dice": "metric_dice",
    "precision": "metric_precision",
    "recall": "metric_recall",
}


def valid_rows(padded: np.ndarray, count: int) -> torch.Tensor:
    """The first ``count`` rows of a -1 padded (8, 4) box array."""
    return torch.from_numpy(padded[:count])


@pytest.fixture(scope="module")
def case_maps(reference) -> torch.Tensor:
    return torch.from_numpy(reference["metric_heatmaps"])


@pytest.fixture(scope="module")
def case_gt_boxes(reference) -> list[torch.Tensor]:
    return [valid_rows(reference["metric_gt_boxes"][i], reference["metric_gt_nboxes"][i]) for i in CASES]


def test_heatmaps_match_reference_and_constant_map_is_zero(reference, case_maps):
    heatmaps = normalize_heatmaps(case_maps, (224, 224))
    expected = torch.from_numpy(reference["metric_heatmap_upsampled_norm"])
    for case in CASES:
        if case == CONSTANT_CASE:  # the reference divides 0 by 0 here (all NaN); ours must be all zeros
            assert torch.isnan(expected[case]).all()
            assert torch.equal(heatmaps[case], torch.zeros(224, 224))
        else:
            torch.testing.assert_close(heatmaps[case], expected[case], atol=1e-6, rtol=0)


def test_predicted_boxes_match_reference(reference, case_maps):
    boxes = heatmap_boxes(normalize_heatmaps(case_maps, (224, 224)))
    for case in CASES:
        expected = valid_rows(reference["metric_pred_boxes"][case], reference["metric_pred_nboxes"][case])
        assert boxes[case].dtype == torch.int64
        assert {tuple(b) for b in boxes[case].tolist()} == {tuple(b) for b in expected.tolist()}, f"case {case}"


def test_pixel_counts_match_reference_exactly(reference, case_maps, case_gt_boxes):
    pred_boxes = heatmap_boxes(normalize_heatmaps(case_maps, (224, 224)))
    counts = confusion_counts(boxes_to_mask(pred_boxes, (224, 224)), boxes_to_mask(case_gt_boxes, (224, 224)))
    for name, count in zip(("tp", "fp", "fn", "tn"), counts, strict=True):
        np.testing.assert_array_equal(count.numpy(), reference[f"metric_{name}"], err_msg=name)


def test_scores_match_reference_for_every_case(reference, case_maps, case_gt_boxes):
    scores = box_localization(case_maps, case_gt_boxes, image_size=(224, 224), threshold=0.5)
    for name, reference_name in REFERENCE_SCORE_NAMES.items():
        assert scores[name].shape == (10,) and torch.isfinite(scores[name]).all()
        np.testing.assert_allclose(scores[name].double().numpy(), reference[reference_name], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def abpc_inputs(reference) -> dict:
    images = torch.from_numpy(reference["images"][reference["abpc_image_idx"]])
    return {
        "model": build_reference_model(reference),
        "images": images,
        "target": torch.from_numpy(reference["abpc_target"]),
    }


def assert_curves_match(reference, result, compared_steps: np.ndarray) -> None:
    """Curves within 1e-4 of the stable reference at ``compared_steps`` (3, 2, 11) [MoRF, LeRF], and of the
    official (topk) reference where those steps are also untied."""
    for column, curve in enumerate(("morf", "lerf")):
        mine = result[curve].double().numpy()
        compared = compared_steps[:, column]
        np.testing.assert_allclose(mine[compared], reference[f"abpc_{curve}_stable"][compared], atol=1e-4)
        untied = compared & ~reference["abpc_boundary_ties"][:, :, column]
        np.testing.assert_allclose(mine[untied], reference[f"abpc_{curve}"][untied], atol=1e-4)


def assert_abpc_matches_stable_curves(reference, result) -> None:
    # abpc_per_image / abpc_score come from the official topk curves; ours break ties like the stable curves,
    # so the per-image ABPC and the score are compared with sum(lerf_stable - morf_stable) / 11 and its mean.
    stable_per_image = (reference["abpc_lerf_stable"] - reference["abpc_morf_stable"]).sum(axis=1) / 11
    np.testing.assert_allclose(result["abpc"].double().numpy(), stable_per_image, atol=1e-4)
    np.testing.assert_allclose(result["abpc"].double().mean().item(), stable_per_image.mean(), atol=1e-4)


def test_removal_counts_match_reference(reference):
    fractions = torch.linspace(0, 1, 11, dtype=torch.float64)
    np.testing.assert_array_equal((fractions * 224 * 224).long().numpy(), reference["abpc_k"])


def test_abpc_from_reference_heatmaps_matches_stable_curves(reference, abpc_inputs):
    heatmaps = torch.from_numpy(reference["abpc_heatmaps"])
    result = abpc(**abpc_inputs, heatmaps=heatmaps, steps=11, batch_size=64)
    assert result["morf"].shape == result["lerf"].shape == (3, 11)
    assert_curves_match(reference, result, compared_steps=np.ones((3, 2, 11), dtype=bool))
    assert_abpc_matches_stable_curves(reference, result)


def test_abpc_from_raw_maps_matches_stable_curves(reference, abpc_inputs):
    raw_maps = torch.from_numpy(reference["agcam_pred"][reference["abpc_image_idx"]])
    result = abpc(**abpc_inputs, heatmaps=raw_maps, steps=11, batch_size=64)
    # The reference heatmaps were upsampled by torchvision's (antialiased) bilinear resize, ours by plain bilinear
    # interpolation (docs/method.md); they differ by < 1e-6, which can move a near-tied pixel across the removal
    # boundary. Where that happens the model sees another input, so such a step is not compared; it must be a tie
    # (the pixels that differ lie within 2e-6 of the boundary value), never a ranking error. ABPC itself is compared
    # on the reference heatmaps (test above), where no step differs.
    heatmaps = normalize_heatmaps(raw_maps, (224, 224))
    reference_heatmaps = torch.from_numpy(reference["abpc_heatmaps"])
    torch.testing.assert_close(heatmaps, reference_heatmaps, atol=1e-6, rtol=0)
    removed_counts = torch.from_numpy(reference["abpc_k"])  # (11,)
    mine = removal_ranks(heatmaps)[..., None] < removed_counts  # (3, 2, H * W, 11)
    official_ranks = removal_ranks(reference_heatmaps)  # (3, 2, H * W)
    official = official_ranks[..., None] < removed_counts
    same_pixels_removed = (mine == official).all(dim=2).numpy()  # (3, 2, 11)
    for image, curve, step in zip(*np.nonzero(~same_pixels_removed)):
        k = int(removed_counts[step])
        flat = reference_heatmaps[image].flatten()
        boundary = flat[(official_ranks[image, curve] == k - 1).nonzero()[0, 0]]  # the k-th removed pixel's value
        differing = (mine[image, curve, :, step] != official[image, curve, :, step]).nonzero()[:, 0]
        assert (flat[differing] - boundary).abs().max() <= 2e-6, (image, curve, step)
    assert_curves_match(reference, result, compared_steps=same_pixels_removed)
