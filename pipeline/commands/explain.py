"""`agcam explain`: classify and explain image files: an overlay PNG, the raw map and one JSON row per explanation.

Files are read through the dataset readers (`pipeline.data.folder`), so decoding and its errors are those of
training. Heatmaps and boxes are at each file's own resolution: the raw map is upsampled to the original image, so
boxes are in the file's pixel coordinates. A file that does not decode is reported and skipped; the others are
still written. Every output path is decided, and checked against the inputs and existing files, before anything
is written; each image's files are written atomically and its row appended at once, so `--resume` can go on after
an interruption.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import numpy as np
import torch
from tqdm import tqdm

from pipeline.commands.outputs import refuse_existing
from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES
from pipeline.data.bad_samples import BadSampleError
from pipeline.data.file_source import RawSampleDataset, SampleRecord
from pipeline.data.folder import UNLABELLED, folder_records
from pipeline.data.source import RawSample
from pipeline.data.transforms import SampleTransform
from pipeline.explain import check_methods
from pipeline.explained import ExplainedModel
from pipeline.files import atomic_write, os_error_naming, write_text
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
    refuse_existing(paths, overwrite, alternative="pass --resume to keep the images an earlier run finished")


def explain_files(
    model: ExplainedModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    request: ExplainRequest,
    overwrite: bool = False,
    resume: bool = False,
) -> ExplainReport:
    """Explain every image in `inputs`; write `<name>.png` (overlay), `<name>.npy` (raw map) and a row each.

    Each image's PNG and NPY are written atomically and then its rows are appended to `explanations.jsonl` and
    flushed, so an interrupted or failed run keeps every image it finished; `resume` goes on from there.

    Args:
        model: the explained model.
        inputs: image files and folders.
        out_dir: where the outputs go (`explanations.jsonl` holds the rows, one per explanation or failed file).
        request: method, target or top-k, threshold, batch size.
        overwrite: replace outputs of an earlier run (inputs are never replaced).
        resume: keep the finished images of an earlier run into `out_dir` (their rows and files), explain the rest.

    Returns:
        The report: explanations written (finished earlier ones not counted), files that failed.
    """
    out_dir = Path(out_dir)
    records, names = input_records(inputs)
    targets_per_image = 1 if request.target is not None else min(request.topk, len(model.class_names))
    stems = output_stems(names, targets_per_image)
    rows_path = out_dir / ROWS_FILE
    kept_rows = finished_rows(rows_path, out_dir) if resume else []
    finished = {row["overlay"].removesuffix(".png") for row in kept_rows}
    todo = [index for index in range(len(records)) if not set(stems[index]) <= finished]
    paths = [out_dir / f"{stem}{suffix}" for index in todo for stem in stems[index] for suffix in OUTPUT_SUFFIXES]
    check_outputs(inputs, records, out_dir, ([] if resume else [rows_path]) + paths, overwrite or resume)
    if resume:  # the finished rows only: a torn last line or an earlier failure's row would be repeated
        write_text(rows_path, "".join(json.dumps(row, allow_nan=False) + "\n" for row in kept_rows))
    dataset = RawSampleDataset(records)
    transform = SampleTransform(model.input_config)
    report = ExplainReport()
    with os_error_naming(rows_path):
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = rows_path.open("a" if resume else "w")
    try:
        with rows, tqdm(total=len(todo), desc="explain", unit="image") as progress:
            for start in range(0, len(todo), request.batch_size):
                decoded: list[tuple[RawSample, list[str]]] = []
                for index in todo[start : start + request.batch_size]:
                    try:
                        sample = dataset[index]  # on_bad_sample="error": raises BadSampleError, never None
                        decoded.append((cast(RawSample, sample), stems[index]))
                    except BadSampleError as error:
                        tqdm.write(f"skipped {error}", file=sys.stderr)
                        report.failed.append((error.path, error.reason))
                        _append_row(rows, rows_path, {"file": error.path, "error": error.reason})
                if decoded:
                    for image_rows in _explain_batch(model, decoded, out_dir, request, transform, targets_per_image):
                        for row in image_rows:
                            _append_row(rows, rows_path, row)
                        report.written += len(image_rows)
                progress.update(min(request.batch_size, len(todo) - start))
    except BaseException as error:
        kept = len(kept_rows) + report.written
        if not kept and not report.failed:
            rows_path.unlink(missing_ok=True)  # no empty rows file left behind
        elif isinstance(error, OSError) and error.errno is not None:
            problem = f"{error.strerror}; the {kept} explanation(s) finished are kept: rerun with --resume for the rest"
            raise type(error)(error.errno, problem, error.filename) from error
        raise
    return report


def finished_rows(rows_path: Path, out_dir: Path) -> list[dict]:
    """The rows of an earlier run whose overlay and map files exist (failed files and a torn last line dropped)."""
    if not rows_path.is_file():
        return []
    kept = []
    for line in rows_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill interrupted
        if not isinstance(row, dict):
            continue  # not a row this command writes
        outputs = [row.get("overlay"), row.get("map")]
        if all(isinstance(name, str) and (out_dir / name).is_file() for name in outputs):
            kept.append(row)
    return kept


def _append_row(rows: IO[str], rows_path: Path, row: dict) -> None:
    """One JSON row, flushed to the file at once: a later failure or kill does not lose it."""
    with os_error_naming(rows_path):
        rows.write(json.dumps(row, allow_nan=False) + "\n")
        rows.flush()


def _explain_batch(
    model: ExplainedModel,
    decoded: list[tuple[RawSample, list[str]]],
    out_dir: Path,
    request: ExplainRequest,
    transform: SampleTransform,
    targets_per_image: int,
) -> Iterator[list[dict]]:
    """Explain decoded (raw sample, output stems) images together; write each image's outputs, then yield its rows."""
    images = torch.stack([transform(sample)["image"] for sample, _ in decoded])
    if request.target is not None:
        targets = torch.full((len(images), 1), request.target)
    else:
        targets = model.predict(images).probs.topk(targets_per_image, dim=-1).indices  # (B, K)
    explanation = model.explain(images, targets, request.method)  # maps (B, K, gh, gw)
    for i, (sample, image_stems) in enumerate(decoded):
        rows = []
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
        yield rows


def _write_explanation(
    out_dir: Path, stem: str, rgb: np.ndarray, raw_map: torch.Tensor, caption: str, threshold: float
) -> dict:
    """Write one explanation's overlay and raw map; return its boxes (largest first) and the files' names."""
    heatmap = normalize_heatmaps(raw_map[None], rgb.shape[:2])  # (1, H, W) at the file's resolution
    boxes = heatmap_boxes(heatmap, threshold)[0].tolist()
    boxes.sort(key=lambda box: (box[2] - box[0]) * (box[3] - box[1]), reverse=True)
    overlay = render_overlay(rgb, heatmap[0], pred_boxes=torch.tensor(boxes), caption=caption)
    overlay_path = save_png(overlay, out_dir / f"{stem}.png")
    with atomic_write(out_dir / f"{stem}.npy") as file:
        np.save(file, raw_map.detach().cpu().numpy())
    return {"boxes": boxes, "overlay": overlay_path.relative_to(out_dir).as_posix(), "map": f"{stem}.npy"}
