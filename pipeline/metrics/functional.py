"""Localization and faithfulness metrics for explanation maps, as pure functions on tensors (docs/method.md).

Every function takes raw explanation maps (B, gh, gw) or heatmaps at input resolution and returns per-image
tensors; the torchmetrics classes in this package only accumulate what these return.
"""

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.modes import eval_mode

LOCALIZATION_SCORES = ("pixel_accuracy", "iou", "dice", "precision", "recall")


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """The one check of a heatmap threshold, strictly inside (0, 1); `name` is the option in the error."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"{name} must lie in (0, 1) (heatmaps are normalized to [0, 1]), got {threshold!r}")
    return float(threshold)


def check_tolerance(tolerance: int, name: str = "tolerance") -> int:
    """The one check of a pointing-game tolerance: whole pixels, >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"{name} must be a whole number of pixels >= 0, got {tolerance!r}")
    return tolerance


def normalize_heatmaps(maps: Tensor, image_size: Sequence[int]) -> Tensor:
    """Turn raw maps into heatmaps: bilinear upsampling to the input size, then per-image min-max to [0, 1].

    A constant map has no extent and becomes all zeros, never NaN.

    Args:
        maps: (B, gh, gw) raw maps, or (B, H, W) maps already at ``image_size`` (then only normalized).
        image_size: (H, W) of the input images.

    Returns:
        (B, H, W) float32 heatmaps in [0, 1].

    Example:
        >>> normalize_heatmaps(torch.tensor([[[0.0, 2.0]]]), (1, 2))
        tensor([[[0., 1.]]])
        >>> normalize_heatmaps(torch.full((1, 2, 2), 0.37), (4, 4)).sum()
        tensor(0.)
    """
    _check_maps(maps)
    return _normalized(maps, _upsampled(maps, _check_image_size(image_size)))


def heatmap_boxes(heatmaps: Tensor, threshold: float = 0.5) -> list[Tensor]:
    """Boxes around the hot regions: one bounding rectangle per external contour of ``heatmap > threshold``.

    Holes are ignored (only outer contours); a rectangle (x, y, w, h) becomes the box (x, y, x + w, y + h).

    Args:
        heatmaps: (B, H, W) normalized heatmaps.
        threshold: pixels strictly above it are hot.

    Returns:
        One (n_i, 4) int64 tensor of xyxy boxes per image, in OpenCV's contour order, on the heatmaps' device.

    Example:
        >>> heatmap = torch.zeros(1, 8, 8)
        >>> heatmap[0, 2:4, 1:6] = 1.0
        >>> heatmap_boxes(heatmap)
        [tensor([[1, 2, 6, 4]])]
    """
    _check_maps(heatmaps, "heatmaps")
    hot_masks = (heatmaps.detach() > threshold).to(torch.uint8).mul(255).cpu().numpy()
    boxes = []
    for hot in hot_masks:
        contours, _ = cv2.findContours(hot, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        rects = np.array([cv2.boundingRect(contour) for contour in contours], dtype=np.int64).reshape(-1, 4)
        rects[:, 2:] += rects[:, :2]  # (x, y, w, h) -> (x, y, x + w, y + h)
        boxes.append(torch.from_numpy(rects).to(heatmaps.device))
    return boxes


def boxes_to_mask(boxes_list: Sequence[Tensor], image_size: Sequence[int]) -> Tensor:
    """Union of each image's boxes as a pixel mask, every box filled inclusively and clipped to the image.

    Float coordinates are truncated toward zero, like the protocol's ``int()`` box scaling (docs/method.md).

    Args:
        boxes_list: one (n_i, 4) xyxy tensor per image, inclusive ends, at ``image_size``.
        image_size: (H, W) of the mask.

    Returns:
        (B, H, W) bool mask.

    Example:
        >>> boxes_to_mask([torch.tensor([[1, 0, 2, 1]])], (3, 4)).int()
        tensor([[[0, 1, 1, 0],
                 [0, 1, 1, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    _check_boxes(boxes_list, len(boxes_list))
    return _boxes_to_mask(boxes_list, _check_image_size(image_size))


def class_regions(
    classes: Tensor,
    box_labels: Sequence[Tensor],
    *,
    boxes: Sequence[Tensor] | None = None,
    masks: Tensor | None = None,
    image_size: Sequence[int] | None = None,
) -> Tensor:
    """Where each case's class is: the union of its image's boxes of that class, or those objects' mask pixels.

    Args:
        classes: (N,) the class of each case.
        box_labels: per case, the (n_i,) class of each object of its image.
        boxes: per case, the (n_i, 4) xyxy boxes of its image's objects, at ``image_size`` ...
        masks: ... or (N, H, W) its image's object ids (value i + 1 is object i, 0 the background).
        image_size: (H, W); box mode only (mask mode takes the masks' size).

    Returns:
        (N, H, W) bool regions; all False for a case without an object of its class.

    Example:
        >>> labels = [torch.tensor([2, 0, 2])]
        >>> boxes = [torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 2, 0]])]
        >>> class_regions(torch.tensor([2]), labels, boxes=boxes, image_size=(2, 3)).int()
        tensor([[[1, 0, 1],
                 [0, 0, 0]]], dtype=torch.int32)
        >>> class_regions(torch.tensor([0]), labels, masks=torch.tensor([[[1, 2, 3]]])).int()
        tensor([[[0, 1, 0]]], dtype=torch.int32)
    """
    if (boxes is None) == (masks is None):
        raise ValueError("give exactly one of boxes or masks")
    own = [labels == cls for labels, cls in zip(box_labels, classes.tolist())]  # per case: its class's objects
    if masks is not None:
        object_ids = [keep.nonzero()[:, 0] + 1 for keep in own]  # mask value i + 1 is object i
        return torch.stack([torch.isin(mask.long(), ids.to(mask.device)) for mask, ids in zip(masks, object_ids)])
    if image_size is None or boxes is None:
        raise ValueError("image_size: give the (H, W) the boxes are at")
    return boxes_to_mask([image_boxes[keep] for image_boxes, keep in zip(boxes, own)], image_size)


def _boxes_to_mask(boxes_list: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
    """`boxes_to_mask` without the checks (the caller made or checked the boxes)."""
    height, width = image_size
    device = boxes_list[0].device if len(boxes_list) else torch.device("cpu")
    no_boxes = torch.empty(0, 4, dtype=torch.long, device=device)
    boxes = torch.cat([no_boxes, *(b.to(device).long() for b in boxes_list)])  # (N, 4) all images' boxes
    boxes_per_image = torch.tensor([len(b) for b in boxes_list], dtype=torch.long, device=device)
    owner = torch.repeat_interleave(boxes_per_image)  # (N,) image index of each box
    # each box adds +1 on its clipped rectangle through four corner marks; two cumsums turn marks into counts,
    # O(boxes + pixels) instead of one (H, W) plane per box
    x0, y0 = boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height)
    x1, y1 = (boxes[:, 2] + 1).clamp(0, width), (boxes[:, 3] + 1).clamp(0, height)  # exclusive ends
    keep = (x0 < x1) & (y0 < y1)  # boxes with pixels inside the image
    owner, x0, y0, x1, y1 = (t[keep] for t in (owner, x0, y0, x1, y1))
    marks = torch.zeros(len(boxes_list), height + 1, width + 1, dtype=torch.int32, device=device)
    ones = torch.ones(len(owner), dtype=torch.int32, device=device)
    for rows, cols, sign in ((y0, x0, ones), (y0, x1, -ones), (y1, x0, -ones), (y1, x1, ones)):
        marks.index_put_((owner, rows, cols), sign, accumulate=True)
    return marks.cumsum(dim=1).cumsum(dim=2)[:, :height, :width] > 0


def confusion_counts(pred_masks: Tensor, target_masks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image pixel counts of a predicted mask against a ground-truth mask.

    Args:
        pred_masks: (B, H, W) bool predicted mask.
        target_masks: (B, H, W) bool ground-truth mask.

    Returns:
        tp, fp, fn, tn: (B,) int64 each.
    """
    # Counted directly: torchmetrics' binary_stat_scores(multidim_average="samplewise") fails on a batch of one
    # (1.9.0 squeezes the batch dimension away), and a last validation batch can hold one image.
    pred, target = pred_masks.bool().flatten(1), target_masks.bool().flatten(1)  # (B, H * W)
    tp = (pred & target).sum(dim=1)
    fp = (pred & ~target).sum(dim=1)
    fn = (~pred & target).sum(dim=1)
    tn = (~pred & ~target).sum(dim=1)
    return tp, fp, fn, tn


def scores_from_counts(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, eps: float = 1e-5) -> dict[str, Tensor]:
    """The paper's five localization scores from pixel counts, in float32 as the reference computes them.

    The ``eps`` in numerator and denominator keeps every score finite: an empty prediction has precision 1.

    Args:
        tp, fp, fn, tn: (B,) pixel counts.
        eps: smoothing added to numerator and denominator.

    Returns:
        Dict of (B,) float32 tensors: pixel_accuracy, iou, dice, precision, recall.

    Example:
        >>> scores = scores_from_counts(*torch.tensor([[30], [10], [10], [50]]))
        >>> round(scores["iou"].item(), 4), round(scores["dice"].item(), 4)
        (0.6, 0.75)
    """
    tp, fp, fn, tn = (count.float() for count in (tp, fp, fn, tn))
    return {
        "pixel_accuracy": (tp + tn + eps) / (tp + tn + fp + fn + eps),
        "iou": (tp + eps) / (tp + fp + fn + eps),
        "dice": (2 * tp + eps) / (2 * tp + fp + fn + eps),
        "precision": (tp + eps) / (tp + fp + eps),
        "recall": (tp + eps) / (tp + fn + eps),
    }


def box_localization(
    maps: Tensor, boxes: Sequence[Tensor], image_size: Sequence[int], threshold: float = 0.5
) -> dict[str, Tensor]:
    """Weakly-supervised localization scores: boxes around the thresholded heatmap against ground-truth boxes.

    Args:
        maps: (B, gh, gw) raw explanation maps (or maps already at ``image_size``).
        boxes: one (n_i, 4) xyxy ground-truth tensor per image, inclusive ends, already at ``image_size``.
        image_size: (H, W) of the input images.
        threshold: heatmap pixels strictly above it are hot.

    Returns:
        Dict of (B,) float32 tensors: pixel_accuracy, iou, dice, precision, recall.

    Example:
        >>> maps = torch.zeros(1, 8, 8)
        >>> maps[0, 2:5, 2:5] = 1.0  # contour box (2, 2, 5, 5), filled inclusively like the ground truth
        >>> box_localization(maps, [torch.tensor([[2, 2, 5, 5]])], image_size=(8, 8))["iou"]
        tensor([1.])
    """
    _check_maps(maps)
    _check_boxes(boxes, len(maps))
    heatmaps = normalize_heatmaps(maps, image_size)
    return _box_scores(heatmaps, boxes_to_mask(boxes, heatmaps.shape[-2:]).to(heatmaps.device), threshold)


def mask_localization(maps: Tensor, masks: Tensor, threshold: float = 0.5) -> dict[str, Tensor]:
    """Segmentation-style localization scores: the thresholded heatmap itself against a ground-truth mask.

    Args:
        maps: (B, gh, gw) raw explanation maps (or maps already at the masks' size).
        masks: (B, H, W) ground-truth masks; nonzero is foreground.
        threshold: heatmap pixels strictly above it are predicted foreground.

    Returns:
        Dict of (B,) float32 tensors: pixel_accuracy, iou, dice, precision, recall.
    """
    _check_maps(maps)
    _check_masks(masks, len(maps))
    heatmaps = normalize_heatmaps(maps, masks.shape[-2:])
    return scores_from_counts(*confusion_counts(heatmaps > threshold, masks.to(heatmaps.device)))


def pointing_game(maps: Tensor, boxes: Sequence[Tensor], image_size: Sequence[int], tolerance: int = 0) -> Tensor:
    """Pointing game (Zhang et al. 2016): whether the heatmap's peak falls in (or near) a ground-truth box.

    Args:
        maps: (B, gh, gw) raw explanation maps.
        boxes: one (n_i, 4) xyxy ground-truth tensor per image, inclusive ends, already at ``image_size``.
        image_size: (H, W) of the input images.
        tolerance: a peak within this many pixels (Euclidean) of a box also hits; Zhang et al. use 15.

    Returns:
        (B,) float32 hits in [0, 1]: 1 or 0 for a unique peak; for tied maxima (upsampling makes plateaus), the
        share of them that hit, so the score does not depend on the order pixels are scanned in (docs/method.md).
        A constant map has no peak and misses.

    Example:
        >>> maps = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
        >>> pointing_game(maps, [torch.tensor([[1, 1, 1, 1]])], image_size=(2, 2))
        tensor([1.])
        >>> maps = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two tied peaks, one in the box
        >>> pointing_game(maps, [torch.tensor([[1, 1, 1, 1]])], image_size=(2, 2))
        tensor([0.5000])
    """
    _check_maps(maps)
    _check_boxes(boxes, len(maps))
    check_tolerance(tolerance)
    heatmaps = normalize_heatmaps(maps, image_size)
    target_masks = boxes_to_mask(boxes, heatmaps.shape[-2:]).to(heatmaps.device)
    return _peak_hits(heatmaps, target_masks, tolerance)


def mask_pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Pointing game against ground-truth masks: whether the heatmap's peak falls in (or near) the foreground.

    Args:
        maps: (B, gh, gw) raw explanation maps (or maps already at the masks' size).
        masks: (B, H, W) ground-truth masks; nonzero is foreground.
        tolerance: a peak within this many pixels (Euclidean) of a foreground pixel also hits.

    Returns:
        (B,) float32 hits in [0, 1], tied maxima sharing the credit as in :func:`pointing_game`.
    """
    _check_maps(maps)
    _check_masks(masks, len(maps))
    check_tolerance(tolerance)
    heatmaps = normalize_heatmaps(maps, masks.shape[-2:])
    return _peak_hits(heatmaps, masks.to(heatmaps.device) != 0, tolerance)


def localization_scores(
    maps: Tensor,
    boxes: Sequence[Tensor] | None = None,
    masks: Tensor | None = None,
    *,
    image_size: Sequence[int] | None = None,
    threshold: float = 0.5,
    tolerance: int = 0,
    validate_args: bool = True,
) -> dict[str, Tensor]:
    """Every per-case score of the protocol from one upsampling and one normalization of the maps.

    The same values as :func:`box_localization`, :func:`pointing_game` and :func:`mass_in_box` (boxes), or
    :func:`mask_localization`, :func:`mask_pointing_game` and :func:`mass_in_mask` (masks), computed together.

    Args:
        maps: (B, gh, gw) raw explanation maps (or maps already at the image size).
        boxes: one (n_i, 4) xyxy ground-truth tensor per case at ``image_size`` (box mode) ...
        masks: ... or (B, H, W) ground-truth masks, nonzero foreground (mask mode); exactly one of the two.
        image_size: (H, W) of the boxes; required in box mode (mask mode takes the masks' size).
        threshold: heatmap pixels strictly above it are hot.
        tolerance: pointing-game slack in pixels.
        validate_args: check shapes and options; False skips every check (inputs the caller built itself).

    Returns:
        Dict of (B,) float32 tensors: pixel_accuracy, iou, dice, precision, recall, pointing_game, mass_in_box.
    """
    if validate_args:
        _check_maps(maps)
        if (boxes is None) == (masks is None):
            raise ValueError("give exactly one of boxes (box mode) or masks (mask mode)")
        if masks is not None:
            _check_masks(masks, len(maps))
        elif boxes is not None:
            _check_boxes(boxes, len(maps))
        check_threshold(threshold)
        check_tolerance(tolerance)
    if masks is not None:
        size = _check_image_size(masks.shape[-2:])
        target_masks = masks != 0
    elif image_size is None or boxes is None:
        raise ValueError("image_size: give the (H, W) the boxes are at (box mode has no default size)")
    else:
        size = _check_image_size(image_size)
        target_masks = _boxes_to_mask(boxes, size)
    upsampled = _upsampled(maps, size)
    heatmaps = _normalized(maps, upsampled)
    target_masks = target_masks.to(heatmaps.device)
    if masks is not None:
        scores = scores_from_counts(*confusion_counts(heatmaps > threshold, target_masks))
    else:
        scores = _box_scores(heatmaps, target_masks, threshold)
    scores["pointing_game"] = _peak_hits(heatmaps, target_masks, tolerance)
    scores["mass_in_box"] = _mass_share(upsampled.clamp(min=0), target_masks)
    return scores


def mass_in_box(maps: Tensor, boxes: Sequence[Tensor], image_size: Sequence[int]) -> Tensor:
    """Relevance mass accuracy (Arras et al. 2022): the share of positive relevance inside the ground-truth boxes.

    Threshold-free, unlike the paper's scores: the raw map is upsampled like :func:`normalize_heatmaps` (bilinear,
    align_corners=False) but not min-max normalized, negative relevance is clamped to 0, and the score is the sum
    inside the union of the boxes (filled inclusively, like :func:`boxes_to_mask`) over the sum in the whole image.
    It is invariant to positive rescaling of the map. A map with no positive mass (all <= 0) and an image without
    boxes score 0.0, never NaN: such a map points nowhere, so it cannot be credited with pointing at the object.

    Args:
        maps: (B, gh, gw) raw explanation maps (or maps already at ``image_size``).
        boxes: one (n_i, 4) xyxy ground-truth tensor per image, inclusive ends, already at ``image_size``.
        image_size: (H, W) of the input images.

    Returns:
        (B,) float32 shares in [0, 1].

    Example:
        >>> maps = torch.tensor([[[3.0, 1.0], [0.0, -5.0]]])  # negative relevance does not count
        >>> mass_in_box(maps, [torch.tensor([[0, 0, 0, 0]])], image_size=(2, 2))
        tensor([0.7500])
        >>> mass_in_box(-maps.abs(), [torch.tensor([[0, 0, 1, 1]])], image_size=(2, 2))
        tensor([0.])
    """
    _check_maps(maps)
    _check_boxes(boxes, len(maps))
    relevance = _upsampled(maps, _check_image_size(image_size)).clamp(min=0)
    target_masks = boxes_to_mask(boxes, relevance.shape[-2:]).to(relevance.device)
    return _mass_share(relevance, target_masks)


def mass_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Relevance mass accuracy against ground-truth masks: the share of positive relevance on the foreground.

    The same definition as :func:`mass_in_box` with the mask's nonzero pixels as the region; no positive mass
    scores 0.0.

    Args:
        maps: (B, gh, gw) raw explanation maps (or maps already at the masks' size).
        masks: (B, H, W) ground-truth masks; nonzero is foreground.

    Returns:
        (B,) float32 shares in [0, 1].

    Example:
        >>> mass_in_mask(torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[0, 2]]]))
        tensor([0.7500])
    """
    _check_maps(maps)
    _check_masks(masks, len(maps))
    relevance = _upsampled(maps, _check_image_size(masks.shape[-2:])).clamp(min=0)
    return _mass_share(relevance, masks.to(relevance.device) != 0)


def removal_ranks(heatmaps: Tensor) -> Tensor:
    """The position at which each pixel is removed, for MoRF (highest first) and LeRF (lowest first).

    Pixels are ranked on ``heatmap + 1`` in float32, as the official ABPC code ranks them: the shift merges
    values closer than float32's spacing near 1, and merged values count as ties. Ties go to the lower flat
    index first in both orders (stable sorts), so the curves are deterministic.

    Args:
        heatmaps: (B, H, W) heatmaps.

    Returns:
        (B, 2, H * W) int64 ranks; index 0 along dim 1 is MoRF, 1 is LeRF. Removing k pixels removes rank < k.

    Example:
        >>> removal_ranks(torch.tensor([[[0.2, 0.9, 0.2]]]))
        tensor([[[1, 0, 2],
                 [0, 2, 1]]])
    """
    shifted = heatmaps.float().flatten(1) + 1.0  # (B, H * W)
    positions = torch.arange(shifted.shape[1], device=shifted.device).expand_as(shifted)
    ranks = []
    for descending in (True, False):
        order = shifted.sort(dim=1, descending=descending, stable=True).indices
        ranks.append(torch.empty_like(order).scatter_(1, order, positions))
    return torch.stack(ranks, dim=1)


def abpc(
    model: nn.Module, images: Tensor, heatmaps: Tensor, target: Tensor, *, steps: int = 11, batch_size: int = 64
) -> dict[str, Tensor]:
    """Area between perturbation curves: how much faster the target probability drops removing hot pixels first.

    For fractions f = linspace(0, 1, steps), k = int(H * W * f) pixels are zeroed in every channel of the
    (normalized) images: the k highest-heatmap pixels for MoRF, the k lowest for LeRF. Each curve records the
    softmax probability of the target class; its area is the mean over steps; abpc = area(LeRF) - area(MoRF).
    The perturbed copies go through the model in chunks of ``batch_size``, in eval mode without grad; the
    model's train/eval mode is restored afterwards.

    Args:
        model: any module mapping (N, C, H, W) images to (N, classes) logits.
        images: (B, C, H, W) normalized model inputs.
        heatmaps: (B, H, W) heatmaps at input resolution (used as given), or (B, gh, gw) raw maps (normalized
            with :func:`normalize_heatmaps` first).
        target: (B,) class index per image.
        steps: number of fractions from 0 to 1, both included.
        batch_size: perturbed images per forward pass.

    Returns:
        Dict with ``abpc`` (B,), ``lerf`` (B, steps) and ``morf`` (B, steps), float32.
    """
    heatmaps, target = _check_abpc_inputs(images, heatmaps, target, steps, batch_size)
    batch, _, height, width = images.shape
    device = images.device
    fractions = torch.linspace(0, 1, steps, dtype=torch.float64, device=device)
    removed_counts = (fractions * (height * width)).long()  # (steps,) k = int(H * W * f)
    ranks = removal_ranks(heatmaps)  # (B, 2, H * W)
    # one perturbed input per (image, curve, step), enumerated in this row-major order
    image_idx, curve_idx, step_idx = (
        grid.flatten()
        for grid in torch.meshgrid(
            torch.arange(batch, device=device),
            torch.arange(2, device=device),
            torch.arange(steps, device=device),
            indexing="ij",
        )
    )
    probabilities = []
    with eval_mode(model), torch.no_grad():
        for chunk in torch.arange(len(image_idx), device=device).split(batch_size):
            owner = image_idx[chunk]
            keep = ranks[owner, curve_idx[chunk]] >= removed_counts[step_idx[chunk], None]  # (n, H * W)
            perturbed = images[owner] * keep.view(-1, 1, height, width)  # (n, C, H, W)
            logits = model(perturbed).float()
            probabilities.append(logits.softmax(dim=-1).gather(1, target[owner, None])[:, 0])
    curves = torch.cat(probabilities).view(batch, 2, steps)  # [:, 0] MoRF, [:, 1] LeRF
    morf, lerf = curves.unbind(dim=1)
    return {"abpc": (lerf - morf).mean(dim=1), "lerf": lerf, "morf": morf}


def _upsampled(maps: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(B, H, W) float32 raw maps at the image size (bilinear, align_corners=False), not normalized."""
    maps = maps.detach().float()
    if tuple(maps.shape[-2:]) != image_size:
        maps = F.interpolate(maps[:, None], size=image_size, mode="bilinear", align_corners=False)[:, 0]
    return maps


def _normalized(maps: Tensor, upsampled: Tensor) -> Tensor:
    """Per-image min-max of `upsampled` (the raw `maps` at image size) to [0, 1]; constant maps become zeros."""
    raw = maps.detach().float()
    # decided before upsampling: interpolation rounding can give a constant map a spurious 1-ulp extent
    has_extent = raw.amax(dim=(1, 2), keepdim=True) > raw.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    low = upsampled.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    span = upsampled.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(has_extent & (span > 0), (upsampled - low) / span, 0.0)


def _box_scores(heatmaps: Tensor, target_masks: Tensor, threshold: float) -> dict[str, Tensor]:
    """The five scores of boxes drawn around the thresholded heatmaps against (B, H, W) ground-truth masks."""
    pred_masks = _boxes_to_mask(heatmap_boxes(heatmaps, threshold), _check_image_size(heatmaps.shape[-2:]))
    return scores_from_counts(*confusion_counts(pred_masks, target_masks.to(pred_masks.device)))


def _mass_share(relevance: Tensor, target_masks: Tensor) -> Tensor:
    """(B,) float32 share of each map's mass on its target pixels; 0.0 where the map has no mass at all."""
    relevance = relevance.double().flatten(1)  # (B, H * W); float64 sums: a 224 x 224 image has 50k terms
    inside = (relevance * target_masks.flatten(1)).sum(dim=1)
    total = relevance.sum(dim=1)
    return torch.where(total > 0, inside / total, 0.0).float()  # 0 / 0 is computed but never chosen


def _peak_hits(heatmaps: Tensor, target_masks: Tensor, tolerance: int) -> Tensor:
    """(B,) float32: the share of each heatmap's maxima that lie within ``tolerance`` pixels of a target pixel.

    Every tied maximum counts alike, so the result does not depend on scan order: it is the expected hit of a
    peak picked at random among the ties (1 or 0 when the maximum is unique).
    """
    flat = heatmaps.flatten(1)  # (B, H * W)
    peak_value = flat.amax(dim=1, keepdim=True)  # (B, 1)
    peaks = flat == peak_value  # (B, H * W) every tied maximum
    near = _dilated(target_masks.bool(), tolerance).flatten(1)  # (B, H * W) within tolerance of the target
    share = (peaks & near).sum(dim=1).float() / peaks.sum(dim=1).float()
    return torch.where(peak_value[:, 0] > 0, share, 0.0)  # a constant map normalizes to zeros: no peak


def _dilated(masks: Tensor, radius: int) -> Tensor:
    """(B, H, W) bool: the pixels within Euclidean distance `radius` of a True pixel of `masks`."""
    if radius == 0:
        return masks
    offsets = torch.arange(-radius, radius + 1, device=masks.device)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()  # (2r + 1, 2r + 1)
    reach = F.conv2d(masks.float()[:, None], disk[None, None], padding=radius)[:, 0]  # target pixels in reach
    return reach > 0.5


def _check_maps(maps: Tensor, name: str = "maps") -> None:
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"{name} must be a (B, H, W) tensor, got {got}")


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (H, W) with positive sides, got {tuple(image_size)}")
    return size[0], size[1]


def _check_boxes(boxes: Sequence[Tensor], batch: int) -> None:
    if isinstance(boxes, Tensor) or len(boxes) != batch:
        got: object = (
            f"a tensor of shape {tuple(boxes.shape)}" if isinstance(boxes, Tensor) else f"{len(boxes)} entries"
        )
        raise ValueError(f"boxes must be a list of one (n, 4) tensor per image ({batch} images), got {got}")
    for i, image_boxes in enumerate(boxes):
        if not isinstance(image_boxes, Tensor) or image_boxes.ndim != 2 or image_boxes.shape[1] != 4:
            got = tuple(image_boxes.shape) if isinstance(image_boxes, Tensor) else type(image_boxes).__name__
            raise ValueError(f"boxes[{i}] must be an (n, 4) xyxy tensor, got {got}")


def _check_masks(masks: Tensor, batch: int) -> None:
    if not isinstance(masks, Tensor) or masks.ndim != 3 or len(masks) != batch:
        got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks must be a ({batch}, H, W) tensor, one mask per map, got {got}")


def _check_abpc_inputs(
    images: Tensor, heatmaps: Tensor, target: Tensor, steps: int, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Validate the ABPC inputs; return heatmaps at input resolution and the target on the images' device."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        got: object = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {got}")
    batch, image_size = len(images), _check_image_size(images.shape[-2:])
    _check_maps(heatmaps, "heatmaps")
    if len(heatmaps) != batch:
        raise ValueError(f"heatmaps must hold one map per image ({batch}), got shape {tuple(heatmaps.shape)}")
    if not isinstance(target, Tensor) or target.shape != (batch,) or target.is_floating_point():
        got = (tuple(target.shape), target.dtype) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must be a ({batch},) integer tensor of class indices, got {got}")
    if steps < 2 or batch_size < 1:
        raise ValueError(f"steps must be >= 2 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    if tuple(heatmaps.shape[-2:]) != image_size:
        heatmaps = normalize_heatmaps(heatmaps, image_size)
    return heatmaps.to(images.device), target.to(images.device).long()
