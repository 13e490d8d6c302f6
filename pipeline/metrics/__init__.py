"""Localization and faithfulness metrics for explanation maps: pure functions and torchmetrics classes."""

from pipeline.metrics.atlas import ClassAtlas
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
from pipeline.metrics.reliance import (
    RELIANCE_SCORES,
    ObjectReliance,
    erase,
    object_regions,
    reliance_counts,
    reliance_scores,
)

__all__ = [
    "ABPC",
    "ClassAtlas",
    "LOCALIZATION_SCORES",
    "LocalizationMetrics",
    "ObjectReliance",
    "RELIANCE_SCORES",
    "REPORTED_SCORES",
    "abpc",
    "box_localization",
    "boxes_to_mask",
    "check_threshold",
    "check_tolerance",
    "class_regions",
    "confusion_counts",
    "erase",
    "heatmap_boxes",
    "localization_scores",
    "mask_localization",
    "mask_pointing_game",
    "mass_in_box",
    "mass_in_mask",
    "normalize_heatmaps",
    "object_regions",
    "pointing_game",
    "reliance_counts",
    "reliance_scores",
    "removal_ranks",
    "scores_from_counts",
]
