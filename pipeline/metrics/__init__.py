"""Localization and faithfulness metrics for explanation maps: pure functions and torchmetrics classes."""

from pipeline.metrics.faithfulness import ABPC
from pipeline.metrics.functional import (
    LOCALIZATION_SCORES,
    abpc,
    box_localization,
    boxes_to_mask,
    check_threshold,
    check_tolerance,
    class_regions,
    confusion_counts,
    heatmap_boxes,
    localization_scores,
    mask_localization,
    mask_pointing_game,
    mass_in_box,
    mass_in_mask,
    normalize_heatmaps,
    pointing_game,
    removal_ranks,
    scores_from_counts,
)
from pipeline.metrics.localization import REPORTED_SCORES, LocalizationMetrics

__all__ = [
    "ABPC",
    "LOCALIZATION_SCORES",
    "LocalizationMetrics",
    "REPORTED_SCORES",
    "abpc",
    "box_localization",
    "boxes_to_mask",
    "check_threshold",
    "check_tolerance",
    "class_regions",
    "confusion_counts",
    "heatmap_boxes",
    "localization_scores",
    "mask_localization",
    "mask_pointing_game",
    "mass_in_box",
    "mass_in_mask",
    "normalize_heatmaps",
    "pointing_game",
    "removal_ranks",
    "scores_from_counts",
]
