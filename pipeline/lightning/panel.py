"""HeatmapPanel: a fixed set of validation images whose heatmaps are rendered and logged every epoch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from pipeline.inputs import InputConfig
from pipeline.lightning.run import run_folder, wandb_logger
from pipeline.metrics import heatmap_boxes, normalize_heatmaps
from pipeline.render import image_to_uint8, render_overlay, save_png


@dataclass
class PanelEntry:
    image: torch.Tensor  # (3, H, W) normalized, on CPU
    image_id: str
    label: int
    pred: int
    gt_boxes: torch.Tensor  # (n, 4) at input resolution
    maps: dict[str, torch.Tensor]  # method -> (gh, gw) raw map for `label`


class HeatmapPanel:
    """Collects `size` validation images each epoch (the same ones every epoch) and logs overlays: the images
    `choose` named, in its order (the callback names a class round-robin), else the first images of the epoch.

    With a W&B logger the overlays go to W&B as images with native, named box layers (ground truth and boxes
    from the thresholded heatmap); with any other logger they are written as PNGs under the run folder.
    """

    def __init__(self, size: int, threshold: float) -> None:
        self.size = size
        self.threshold = threshold
        self.entries: list[PanelEntry] = []
        self.wanted: dict[str, int] | None = None  # image id -> position in the panel

    def choose(self, image_ids: Sequence[str]) -> None:
        """Show these images (the first `size` of them, in this order) instead of the first ones of each epoch."""
        self.wanted = {image_id: position for position, image_id in enumerate(image_ids[: self.size])}

    def reset(self) -> None:
        self.entries = []

    @property
    def full(self) -> bool:
        return len(self.entries) >= (self.size if self.wanted is None else len(self.wanted))

    def add(
        self,
        images: torch.Tensor,
        image_ids: Sequence[str],
        labels: torch.Tensor,
        preds: torch.Tensor,
        gt_boxes: Sequence[torch.Tensor],
        maps: dict[str, torch.Tensor],
    ) -> None:
        """Keep images until the panel is full; `maps` holds each method's (B, gh, gw) maps for `labels`."""
        for i in range(len(images)):
            if self.full:
                break
            if self.wanted is not None and str(image_ids[i]) not in self.wanted:
                continue
            self.entries.append(
                PanelEntry(
                    image=images[i].detach().float().cpu(),
                    image_id=str(image_ids[i]),
                    label=int(labels[i]),
                    pred=int(preds[i]),
                    gt_boxes=gt_boxes[i].detach().cpu(),
                    maps={method: method_maps[i].detach().float().cpu() for method, method_maps in maps.items()},
                )
            )

    @rank_zero_only
    def log(
        self,
        trainer: pl.Trainer,
        stage: str,
        class_names: Sequence[str],
        input_config: InputConfig,
    ) -> None:
        """Render every entry for every method and hand the pictures to W&B, or write them as PNGs."""
        if not self.entries:
            return
        if self.wanted is not None:
            self.entries.sort(key=lambda entry: self.wanted[entry.image_id])
        logger = wandb_logger(trainer)
        methods = list(self.entries[0].maps)
        pictures: dict[str, list] = {method: [] for method in methods}
        for index, entry in enumerate(self.entries):
            image = image_to_uint8(entry.image, input_config.mean, input_config.std)
            caption = f"{class_names[entry.label]} -> {class_names[entry.pred]}"
            for method in methods:
                heatmap = normalize_heatmaps(entry.maps[method][None], image.shape[:2])
                pred_boxes = heatmap_boxes(heatmap, self.threshold)[0]
                if logger is not None:
                    picture = render_overlay(image, heatmap[0])
                    pictures[method].append(_wandb_image(picture, entry, pred_boxes, class_names, caption))
                else:
                    picture = render_overlay(image, heatmap[0], entry.gt_boxes, pred_boxes, caption=caption)
                    folder = run_folder(trainer) / "panels" / f"{stage}-epoch{trainer.current_epoch:03d}" / method
                    save_png(picture, folder / f"{index:02d}-{_safe_name(entry.image_id)}.png")
        if logger is not None:
            panels: dict[str, Any] = {f"{stage}/panel/{m}": images for m, images in pictures.items()}
            logger.log_metrics(panels, step=trainer.global_step)  # W&B logs a list of images as one panel


def _wandb_image(picture, entry: PanelEntry, pred_boxes: torch.Tensor, class_names: Sequence[str], caption: str):
    """A wandb.Image of the overlay with ground-truth and heatmap boxes as toggleable, named box layers."""
    import wandb

    labels = dict(enumerate(class_names))

    def layer(boxes: torch.Tensor, name: str) -> dict:
        box_data = [
            {
                "position": {"minX": int(x0), "minY": int(y0), "maxX": int(x1), "maxY": int(y1)},
                "domain": "pixel",
                "class_id": entry.label,
                "box_caption": f"{name}: {class_names[entry.label]}",
            }
            for x0, y0, x1, y1 in boxes.tolist()
        ]
        return {"box_data": box_data, "class_labels": labels}

    boxes = {"ground_truth": layer(entry.gt_boxes, "gt"), "heatmap": layer(pred_boxes, "heatmap")}
    return wandb.Image(picture, boxes=boxes, caption=f"{entry.image_id}: {caption}")


def _safe_name(image_id: str) -> str:
    """An image id (possibly a path) as a file-name fragment."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)[-60:]
