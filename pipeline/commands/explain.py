"""`agcam explain`: classify and explain image files: an overlay PNG, the raw map and one JSON row per explanation.

Files are read through the dataset readers (`pipeline.data.folder`), so decoding and its errors are those of
training. Heatmaps and boxes are at each file's own resolution: the raw map is upsampled to the original image, so
boxes are in the file's pixel coordinates. A file that does not decode is reported and skipped; the others are
still written. Every output path is decided, and checked against the inputs and existing files, before anything
is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.commands.outputs import refuse_existing
from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES
from pipeline.data.bad_samples import BadSampleError
from pipeline.data.file_source import RawSampleDataset, SampleRecord
from pipeline.data.folder import UNLABELLED, folder_records
from pipeline.data.transforms import SampleTransform
from pipeline.explain import check_methods
from pipeline.explained import ExplainedModel
from pipeline.metrics import check_threshold, heatmap_boxes, normalize_heatmaps
from pipeline.render import render_overlay, save_png

ROWS_FILE = "explanations.jsonl"
OUTPUT_SUFFIXES = (".png", ".npy")


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain about each image: the method, and either one target class or the top-k classes."""

    method: str = "agcam"
    target: int | None = None
    topk: int = 1
    threshold: float = 0.5
    batch_size: int = 16

    def __post_init__(self) -> None:
        check_methods([self.method], name="method")
        for name in ("topk", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.target is not None and self.topk != 1:
            raise ValueError("give either a target class or topk, not both")
        check_threshold(self.threshold)


@dataclass
class ExplainReport:
    """What `explain_files` did: explanations written and files that could not be read, with the reason."""

    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def input_records(inputs: Sequence[str | Path]) -> tuple[list[SampleRecord], list[str]]:
    """The image files to explain, as unlabelled records, with their output names (no suffix, unique).

    Args:
        inputs: image files and folders (searched recursively, as the folder reader does).

    Returns:
        (records, names): a file is named by its stem, a folder's images by their path relative to the folder.
    """
    records, relatives = [], []
    for given in map(Path, inputs):
        if given.is_dir():
            folder = folder_records(given)
            records += folder
            relatives += [Path(record.image_path).relative_to(given) for record in folder]
        elif given.is_file():
            records.append(SampleRecord(str(given), str(given), UNLABELLED, NO_BOXES, NO_BOX_LABELS))
            relatives.append(Path(given.name))
        else:
            raise FileNotFoundError(f"{given}: no such image file or folder")
    seen: dict[str, int] = {}
    names = []
    for relative in relatives:
        name = relative.with_suffix("").as_posix()
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return records, names


def output_stems(names: Sequence[str], targets_per_image: int) -> list[list[str]]:
    """Per image, the stem of each of its explanations (`<name>` or `<name>.top<k>`)."""
    if targets_per_image == 1:
        return [[name] for name in names]
    return [[f"{name}.top{rank}" for rank in range(1, targets_per_image + 1)] for name in names]


def check_outputs(inputs: Sequence[str | Path], records: Sequence[SampleRecord], out_dir: Path, paths: list[Path],
                  overwrite: bool) -> None:  # fmt: skip
    """Refuse an output folder inside an input folder, an output that is an input, or (without overwrite) any
    output that exists already; all before anything is written."""
    resolved_out = out_dir.resolve()
    for given in map(Path, inputs):
        if given.is_dir() and resolved_out.is_relative_to(given.resolve()):
            raise ValueError(
                f"--out {out_dir} lies inside the input folder {given}: its overlays would be read as images next "
                "time and could replace input files; choose a folder outside it"
            )
    input_paths = {Path(record.image_path).resolve() for record in records}
    clashes = [path for path in paths if path.resolve() in input_paths]
    if clashes:
        raise ValueError(f"{clashes[0]} is an input image and would be overwritten; choose another --out")
    refuse_existing(paths, overwrite)


def explain_files(
    model: ExplainedModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    request: ExplainRequest,
    overwrite: bool = False,
) -> ExplainReport:
    """Explain every image in `inputs`; write `<name>.png` (overlay), `<name>.npy` (raw map) and a row each.

    Args:
        model: the explained model.
        inputs: image files and folders.
        out_dir: where the outputs go (`explanations.jsonl` holds the rows, one per explanation or failed file).
        request: method, target or top-k, threshold, batch size.
        overwrite: replace outputs of an earlier run (inputs are never replaced).

    Returns:
        The report: explanations written, files that failed.
    """
    out_dir = Path(out_dir)
    records, names = input_records(inputs)
    targets_per_image = 1 if request.target is not None else min(request.topk, len(model.class_names))
    stems = output_stems(names, targets_per_image)
    paths = [out_dir / ROWS_FILE] + [
        out_dir / f"{stem}{suffix}" for row in stems for stem in row for suffix in OUTPUT_SUFFIXES
    ]
    check_outputs(inputs, records, out_dir, paths, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = RawSampleDataset(records)
    transform = SampleTransform(model.input_config)
    report = ExplainReport()
    with (out_dir / ROWS_FILE).open("w") as rows, tqdm(total=len(records), desc="explain", unit="image") as progress:
        for start in range(0, len(records), request.batch_size):
            decoded = []
            for index in range(start, min(start + request.batch_size, len(records))):
                try:
                    decoded.append((dataset[index], stems[index]))
                except BadSampleError as error:
                    tqdm.write(f"skipped {error}", file=sys.stderr)
                    report.failed.append((error.path, error.reason))
                    rows.write(json.dumps({"file": error.path, "error": error.reason}) + "\n")
            if decoded:
                for row in _explain_batch(model, decoded, out_dir, request, transform, targets_per_image):
                    rows.write(json.dumps(row, allow_nan=False) + "\n")
                    report.written += 1
            progress.update(min(request.batch_size, len(records) - start))
    return report


def _explain_batch(
    model: ExplainedModel,
    decoded: list[tuple[dict, list[str]]],
    out_dir: Path,
    request: ExplainRequest,
    transform: SampleTransform,
    targets_per_image: int,
) -> list[dict]:
    """Explain decoded (raw sample, output stems) images together; write their outputs and return their rows."""
    images = torch.stack([transform(sample)["image"] for sample, _ in decoded])
    if request.target is not None:
        targets = torch.full((len(images), 1), request.target)
    else:
        targets = model.predict(images).probs.topk(targets_per_image, dim=-1).indices  # (B, K)
    explanation = model.explain(images, targets, request.method)  # maps (B, K, gh, gw)
    rows = []
    for i, (sample, image_stems) in enumerate(decoded):
        for rank, stem in enumerate(image_stems):
            class_name = model.class_names[int(targets[i, rank])]
            score = float(explanation.scores[i, rank])
            caption = f"{class_name} {score:.2f}"
            outputs = _write_explanation(
                out_dir, stem, sample["image"], explanation.maps[i, rank], caption, request.threshold
            )
            row = {
                "file": sample["image_id"],
                "rank": rank + 1,
                "class": class_name,
                "class_index": int(targets[i, rank]),
            }
            rows.append({**row, "score": score, **outputs})
    return rows


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
