"""Boxes kept in a side file beside the images of a split: `metadata.jsonl` (Hugging Face `imagefolder`) or a CSV.

Both name images by `file_name`, relative to the folder that holds the side file (the split folder), and give boxes
in pixels of the image as stored:

- `metadata.jsonl`, one JSON object per line, the Hub's convention (COCO's box order)::

      {"file_name": "cat/001.jpg", "objects": {"bbox": [[x, y, width, height], ...], "categories": [k, ...]}}

  `objects.category` is read as well as `objects.categories` (both are in use); each entry is a class index or a
  class name, and may be left out (the image's own class). An empty or missing `objects` means no box. A box
  becomes (x, y, x + width, y + height).
- a CSV with the header `file_name,xmin,ymin,xmax,ymax` and an optional `label` column (index or name), one row per
  box; an image with several boxes has several rows. Corners are kept as written.

Either way the corners are then treated like every other reader's: scaled to the model input and filled
inclusively (docs/datasets.md, "Boxes from a side file", has a worked example). Every number must be finite; what the
box rules of `pipeline.data.annotations` reject (degenerate, outside the image) is a bad sample naming the side
file and the line or row.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.annotations import annotation_number
from pipeline.data.bad_samples import BadSampleError, BadSamplePolicy

METADATA_JSONL = "metadata.jsonl"
BOXES_CSV = "boxes.csv"
SIDE_FILES = (METADATA_JSONL, BOXES_CSV)
_CSV_COLUMNS = ("file_name", "xmin", "ymin", "xmax", "ymax")
_BBOX_FIELDS = ("bbox x", "bbox y", "bbox width", "bbox height")

Category = int | str | None  # a class index, a class name, or None: the image's own class


@dataclass
class ImageBoxes:
    """What a side file says about one image: its boxes (xyxy pixels), their categories, where each was written."""

    boxes: list[list[float]] = field(default_factory=list)
    categories: list[Category] = field(default_factory=list)
    places: list[str] = field(default_factory=list)  # "line 3", "row 7": for messages
    first_place: str = ""


def _key(file_name: str) -> str:
    """A file_name as the split folder's relative path, in one spelling ("./a\\b.jpg" and "a/b.jpg" alike)."""
    return Path(os.path.normpath(file_name.replace("\\", "/"))).as_posix()


def category_name(category: Category, class_names: list[str]) -> str | None:
    """A category as a class name (an index into `class_names`, or a name); None: the image's own class."""
    if isinstance(category, int):
        if not 0 <= category < len(class_names):
            return f"index {category} (of {len(class_names)} classes)"
        return class_names[category]
    return category


def _category(value: object, path: Path, where: str) -> Category:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise BadSampleError(path, f"{where}: a category is a class index or a class name, got {value!r}")
    return int(value)


def read_metadata_jsonl(path: Path, policy: BadSamplePolicy) -> dict[str, ImageBoxes]:
    """file_name -> its boxes, from a Hugging Face `imagefolder` metadata.jsonl; bad lines go to `policy`."""
    images: dict[str, ImageBoxes] = {}
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"line {line_number}"
            try:
                _add_jsonl_line(images, line, path, where)
            except BadSampleError as error:
                policy.reject(error)
    return images


def _add_jsonl_line(images: dict[str, ImageBoxes], line: str, path: Path, where: str) -> None:
    try:
        entry = json.loads(line)
    except ValueError as error:
        raise BadSampleError(path, f"{where}: not a JSON object ({error})") from None
    file_name = entry.get("file_name") if isinstance(entry, dict) else None
    if not isinstance(file_name, str) or not file_name:
        raise BadSampleError(path, f'{where}: needs a "file_name" (the image, relative to {path.parent})')
    key = _key(file_name)
    if key in images:
        raise BadSampleError(path, f"{where}: {file_name} is listed twice (first on {images[key].first_place})")
    objects = entry.get("objects") or {}
    if not isinstance(objects, dict):
        raise BadSampleError(path, f'{where}: "objects" must be {{"bbox": [[x, y, w, h], ...], ...}}')
    bboxes = objects.get("bbox") or []
    categories = objects.get("categories", objects.get("category"))
    if categories is None:
        categories = [None] * len(bboxes)
    if not isinstance(bboxes, list) or not isinstance(categories, list) or len(categories) != len(bboxes):
        raise BadSampleError(path, f"{where}: objects.bbox and objects.categories must be lists of equal length")
    image = images[key] = ImageBoxes(first_place=where)
    for position, (bbox, category) in enumerate(zip(bboxes, categories)):
        place = f"{where}, object {position}"
        if not isinstance(bbox, list) or len(bbox) != len(_BBOX_FIELDS):
            raise BadSampleError(path, f"{place}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, width, height = (annotation_number(v, name, path, place) for name, v in zip(_BBOX_FIELDS, bbox))
        image.boxes.append([x, y, x + width, y + height])
        image.categories.append(_category(category, path, place))
        image.places.append(place)


def read_boxes_csv(path: Path, policy: BadSamplePolicy) -> dict[str, ImageBoxes]:
    """file_name -> its boxes, from a `file_name,xmin,ymin,xmax,ymax[,label]` CSV; bad rows go to `policy`."""
    images: dict[str, ImageBoxes] = {}
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not set(_CSV_COLUMNS) <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected the header {','.join(_CSV_COLUMNS)}[,label], got {reader.fieldnames}")
        for row in reader:
            where = f"row {reader.line_num}"
            try:
                file_name = row["file_name"]
                if not file_name:
                    raise BadSampleError(path, f"{where}: file_name is empty")
                box = [annotation_number(row[name], name, path, where) for name in _CSV_COLUMNS[1:]]
                label = (row.get("label") or "").strip()
                category = int(label) if label.lstrip("-").isdigit() else (label or None)
            except BadSampleError as error:
                policy.reject(error)
                continue
            image = images.setdefault(_key(file_name), ImageBoxes(first_place=where))
            image.boxes.append(box)
            image.categories.append(category)
            image.places.append(where)
    return images


def read_box_file(path: Path, policy: BadSamplePolicy) -> dict[str, ImageBoxes]:
    """The boxes of a metadata.jsonl (by its .jsonl suffix) or a CSV."""
    if path.suffix.lower() == ".jsonl":
        return read_metadata_jsonl(path, policy)
    return read_boxes_csv(path, policy)
