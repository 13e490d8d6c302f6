"""`agcam explain`: classify and explain image files: an overlay PNG, the raw map and one JSON row per explanation.

Heatmaps and boxes are at each file's own resolution: the raw map is upsampled to the original image, so boxes are
in the file's pixel coordinates. A file that does not decode is reported and skipped; the others are still written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.data.folder import UNLABELLED, folder_records
from pipeline.data.images import NO_BOX_LABELS, NO_BOXES, BadSampleError, load_rgb
from pipeline.data.source import RawSample
from pipeline.data.transforms import SampleTransform
from pipeline.explain import render_overlay, save_png
from pipeline.explained import ExplainedModel
from pipeline.metrics import heatmap_boxes, normalize_heatmaps

ROWS_FILE = "explanations.jsonl"


@dataclass
class ExplainReport:
    """What `explain_files` did: explanations written and files that could not be read, with the reason."""

    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def input_files(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Image files to explain with their output names: a file by its stem, a folder's images by relative path.

    Args:
        inputs: image files and folders (searched recursively, as the folder reader does).

    Returns:
        (file, output name without suffix) pairs; names made unique with a counter.
    """
    files = []
    for given in map(Path, inputs):
        if given.is_dir():
            files += [(Path(r.image_path), Path(r.image_path).relative_to(given)) for r in folder_records(given)]
        else:
            files.append((given, Path(given.name)))
    seen: dict[str, int] = {}
    named = []
    for path, relative in files:
        name = relative.with_suffix("").as_posix()
        seen[name] = seen.get(name, 0) + 1
        named.append((path, name if seen[name] == 1 else f"{name}-{seen[name]}"))
    return named


def explain_files(
    model: ExplainedModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "agcam",
    target: int | str | None = None,
    topk: int = 1,
    threshold: float | None = None,
    batch_size: int = 16,
) -> ExplainReport:
    """Explain every image in `inputs`; write `<name>.png` (overlay), `<name>.npy` (raw map) and a row each.

    Args:
        model: the explained model.
        inputs: image files and folders.
        out_dir: where the outputs go (`explanations.jsonl` holds the rows, one per explanation or failed file).
        method: one of pipeline.explain.METHODS.
        target: explain this class (name or index) instead of the predicted ones.
        topk: explain the K most probable classes (outputs `<name>.top<k>.*`); only 1 with `target`.
        threshold: heatmap threshold for the boxes; None takes the model card's.
        batch_size: images explained together.

    Returns:
        The report: explanations written, files that failed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if target is not None and topk != 1:
        raise ValueError("give either a target class or topk, not both")
    threshold = model.threshold if threshold is None else threshold
    target_index = None if target is None else model.class_index(target)
    files = input_files(inputs)
    report = ExplainReport()
    with (out_dir / ROWS_FILE).open("w") as rows, tqdm(total=len(files), desc="explain", unit="image") as progress:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            decoded = []
            for path, name in chunk:
                try:
                    decoded.append((path, name, load_rgb(path)))
                except BadSampleError as error:
                    tqdm.write(f"skipped {error}")
                    report.failed.append((str(path), error.reason))
                    rows.write(json.dumps({"file": str(path), "error": error.reason}) + "\n")
            if decoded:
                for row in _explain_batch(model, decoded, out_dir, method, target_index, topk, threshold):
                    rows.write(json.dumps(row) + "\n")
                    report.written += 1
            progress.update(len(chunk))
    return report


def _explain_batch(
    model: ExplainedModel,
    decoded: list[tuple[Path, str, np.ndarray]],
    out_dir: Path,
    method: str,
    target_index: int | None,
    topk: int,
    threshold: float,
) -> list[dict]:
    """Explain decoded (file, output name, RGB) images together; write their outputs and return their rows."""
    transform = SampleTransform(model.input_size, model.mean, model.std)
    images = torch.stack([transform(_unlabelled(rgb, path))["image"] for path, _, rgb in decoded])
    if target_index is not None:
        targets = torch.full((len(images), 1), target_index)
    else:
        targets = model.predict(images).probs.topk(min(topk, len(model.class_names)), dim=-1).indices  # (B, K)
    explanation = model.explain(images, targets, method)  # maps (B, K, gh, gw)
    rows = []
    for i, (path, name, rgb) in enumerate(decoded):
        for rank in range(targets.shape[1]):
            class_name = model.class_names[int(targets[i, rank])]
            score = float(explanation.scores[i, rank])
            stem = name if targets.shape[1] == 1 else f"{name}.top{rank + 1}"
            outputs = _write_explanation(
                out_dir, stem, rgb, explanation.maps[i, rank], f"{class_name} {score:.2f}", threshold
            )
            row = {"file": str(path), "rank": rank + 1, "class": class_name, "class_index": int(targets[i, rank])}
            rows.append({**row, "score": score, **outputs})
    return rows


def _unlabelled(rgb: np.ndarray, path: Path) -> RawSample:
    return RawSample(
        image=rgb, boxes=NO_BOXES.copy(), box_labels=NO_BOX_LABELS.copy(), target=UNLABELLED, image_id=str(path)
    )


def _write_explanation(
    out_dir: Path, stem: str, rgb: np.ndarray, raw_map: torch.Tensor, caption: str, threshold: float
) -> dict:
    """Write one explanation's overlay and raw map; return its boxes (largest first) and the files' names."""
    heatmap = normalize_heatmaps(raw_map[None], rgb.shape[:2])  # (1, H, W) at the file's resolution
    boxes = heatmap_boxes(heatmap, threshold)[0].tolist()
    boxes.sort(key=lambda box: (box[2] - box[0]) * (box[3] - box[1]), reverse=True)
    overlay = render_overlay(rgb, heatmap[0], pred_boxes=torch.tensor(boxes), caption=caption)
    overlay_path = save_png(overlay, out_dir / f"{stem}.png")
    map_path = out_dir / f"{stem}.npy"
    np.save(map_path, raw_map.detach().cpu().numpy())
    return {"boxes": boxes, "overlay": overlay_path.relative_to(out_dir).as_posix(), "map": f"{stem}.npy"}
