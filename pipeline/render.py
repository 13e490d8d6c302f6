"""Pictures of explanations: a heatmap blended over its image, with ground-truth and predicted boxes, as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.files import atomic_write

GT_COLOR = (0, 255, 0)  # RGB
PRED_COLOR = (255, 64, 64)


def image_to_uint8(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo normalization of a (3, H, W) model input: an (H, W, 3) uint8 RGB array for display."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    pixels = (image.detach().float().cpu() * std_t + mean_t).clamp(0, 1) * 255
    return pixels.round().byte().permute(1, 2, 0).numpy()


def render_overlay(
    image: np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    gt_boxes: torch.Tensor | np.ndarray | None = None,
    pred_boxes: torch.Tensor | np.ndarray | None = None,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
    caption: str | None = None,
) -> np.ndarray:
    """Blend a [0, 1] heatmap (H, W) over an (H, W, 3) uint8 RGB image; draw xyxy boxes (GT green, predicted red).

    Args:
        image: the picture, (H, W, 3) uint8 RGB (see `image_to_uint8`).
        heatmap: normalized heatmap at the image's resolution.
        gt_boxes: optional (n, 4) ground-truth boxes in pixels.
        pred_boxes: optional (m, 4) boxes derived from the heatmap.
        alpha: weight of the colour map in the blend.
        colormap: an OpenCV colour map id.
        caption: optional text written in the top-left corner (e.g. predicted class and score).

    Returns:
        (H, W, 3) uint8 RGB array.
    """
    heat = np.asarray(torch.as_tensor(heatmap, dtype=torch.float32).cpu())
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match image shape {image.shape[:2]}")
    colored = cv2.cvtColor(cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), colormap), cv2.COLOR_BGR2RGB)
    picture = cv2.addWeighted(colored, alpha, image, 1 - alpha, 0)
    thickness = max(1, round(min(image.shape[:2]) / 160))
    for boxes, color in ((gt_boxes, GT_COLOR), (pred_boxes, PRED_COLOR)):
        for x0, y0, x1, y1 in np.asarray(torch.as_tensor(boxes).cpu() if boxes is not None else []).reshape(-1, 4):
            cv2.rectangle(picture, (int(x0), int(y0)), (int(x1), int(y1)), color, thickness)
    if caption:
        scale = max(0.3, min(image.shape[:2]) / 400)
        (_, text_height), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness + 2)
        origin = (2, text_height + 2)  # the text's baseline, so its top stays inside the picture
        for color, width in (((0, 0, 0), thickness + 2), ((255, 255, 255), thickness)):  # outlined for contrast
            cv2.putText(picture, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, width, cv2.LINE_AA)
    return picture


def save_png(picture: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 RGB array as PNG atomically, creating the folder."""
    path = Path(path)
    with atomic_write(path) as file:
        Image.fromarray(picture).save(file, format="PNG")
    return path


def render_atlas(
    means: torch.Tensor,
    images: torch.Tensor,
    class_names: Sequence[str],
    tile: int = 96,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """One row of tiles, one per class: its (gh, gw) mean heatmap in [0, 1], upsampled, captioned "name (n)".

    A class without images is a grey tile. Returns an (tile, tile * C, 3) uint8 RGB array.
    """
    tiles = []
    for mean, count, name in zip(means.float().cpu(), images.tolist(), class_names):
        if count:
            heat = (np.clip(mean.numpy(), 0, 1) * 255).astype(np.uint8)
            heat = cv2.resize(heat, (tile, tile), interpolation=cv2.INTER_NEAREST)
            picture = cv2.cvtColor(cv2.applyColorMap(heat, colormap), cv2.COLOR_BGR2RGB)
        else:
            picture = np.full((tile, tile, 3), 128, np.uint8)
        caption = f"{name} ({count})"
        for color, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(picture, caption, (2, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3, color, width, cv2.LINE_AA)
        picture[:, -1] = 255  # a white line between tiles
        tiles.append(picture)
    return np.concatenate(tiles, axis=1)
