"""Hugging Face datasets on disk (the optional `hf` extra, `pip install -e ".[hf]"`): single-label, boxes optional.

`path` is a folder written by `DatasetDict.save_to_disk` (one sub-folder per split), by `Dataset.save_to_disk` (one
split: name it with `split_names`), or holding parquet files named by split (`train.parquet`, `train-00000-of-00002
.parquet`, or the Hub's `data/train-*.parquet`). Nothing is downloaded and nothing under `path` is written (parquet
files are converted into the Hugging Face cache, as `datasets` does).

Columns (names configurable): an image column (`datasets.Image`), a label column (`ClassLabel`: its names are the
class names, in its order), and optionally an objects column in the Hub's detection convention, per row
`{"bbox": [[x, y, width, height], ...], "category": [k, ...]}` (`categories` is read too; a list of
`{"bbox", "category"}` dicts as well). A box becomes (x, y, x + width, y + height); a category is a class index (or
name) and must be the row's label, as in `pipeline.data.class_folders`. A row without objects is kept unboxed. Only
rows with boxes have their image header read while indexing; images are decoded when a batch needs them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES, annotation_number, usable_objects
from pipeline.data.bad_samples import BadSampleError, OnBadSample
from pipeline.data.decoding import Size, rgb_from_pil
from pipeline.data.file_source import FileSource, RawSampleDataset, SampleRecord
from pipeline.data.source import LayoutError, RawSample

DEFAULT_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}
_BBOX_FIELDS = ("bbox x", "bbox y", "bbox width", "bbox height")


def _load(path: Path) -> dict[str, Any]:
    """The splits under `path` as {name: datasets.Dataset}: a save_to_disk folder or parquet files."""
    try:
        import datasets
    except ImportError:
        raise LayoutError(
            f"{path}: reading Hugging Face datasets needs the `datasets` library: pip install -e '.[hf]'"
        ) from None
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
    parquet = sorted(path.glob("*.parquet")) + sorted(path.glob("data/*.parquet"))
    if not parquet:
        raise LayoutError(
            f"{path} holds no Hugging Face dataset: expected a save_to_disk folder (dataset_dict.json or state.json) "
            "or parquet files named by split (train.parquet, data/train-00000-of-00001.parquet, ...)"
        )
    by_split: dict[str, list[str]] = {}
    for file in parquet:
        by_split.setdefault(file.name.split("-")[0].split(".")[0], []).append(str(file))
    return {split: datasets.Dataset.from_parquet(files) for split, files in by_split.items()}


class HFDatasetSource(FileSource):
    """A Hugging Face dataset saved to disk or as parquet (see the module docstring).

    Args:
        path: the folder.
        image_column: the column of images.
        label_column: the ClassLabel column of class indices.
        objects_column: the column of boxes (`bbox` as [x, y, w, h] pixels, `category`); None: no boxes.
        split_names: our split -> the dataset's split name, where they differ (default: train; validation, val or
            valid; test). A single `Dataset.save_to_disk` folder has one split, named "".
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "a folder written by save_to_disk, or holding parquet files named by split"
    root_argument = "path"

    def __init__(
        self,
        path: str | Path,
        image_column: str = "image",
        label_column: str = "label",
        objects_column: str | None = "objects",
        split_names: dict[str, str] | None = None,
        on_bad_sample: OnBadSample = "error",
    ):
        super().__init__(path, on_bad_sample)
        self.image_column, self.label_column, self.objects_column = image_column, label_column, objects_column
        self._splits = _load(self.root)
        self._rows: dict[str, Any] = {}
        self.split_names = self._match_splits(split_names or {})
        first = self._splits[next(iter(self.split_names.values()))]
        for column in (image_column, label_column):
            if column not in first.column_names:
                raise LayoutError(f"{self.root}: no column {column!r}; the columns are {first.column_names}")
        label_feature = first.features[label_column]
        if not hasattr(label_feature, "names"):
            raise LayoutError(
                f"{self.root}: column {label_column!r} is {label_feature}, expected a ClassLabel (its names are the "
                "class names); cast it with dataset.class_encode_column"
            )
        self.class_names = list(label_feature.names)

    def _match_splits(self, split_names: Mapping[str, str]) -> dict[str, str]:
        """Our split -> the dataset's, for the splits present; a LayoutError when train and val are both missing."""
        matched = {}
        for split, candidates in DEFAULT_SPLIT_NAMES.items():
            names = [split_names[split]] if split in split_names else list(candidates)
            present = [name for name in names if name in self._splits]
            if split in split_names and not present:
                raise LayoutError(f"{self.root}: no split {split_names[split]!r}; it has {sorted(self._splits)}")
            if present:
                matched[split] = present[0]
        if not matched:
            raise LayoutError(
                f"{self.root}: splits {sorted(self._splits)}, none of train/validation/test; map them with split_names"
            )
        return matched

    def _records(self, split: str) -> list[SampleRecord]:
        if split not in self.split_names:
            raise LayoutError(f"{self.root}: no {split} split (it has {sorted(self._splits)}); see split_names")
        import datasets

        name = self.split_names[split]
        rows = self._splits[name].cast_column(self.image_column, datasets.Image(decode=False))
        labels = rows[self.label_column]
        objects = rows[self.objects_column] if self.objects_column in rows.column_names else [None] * len(rows)
        self._rows[split] = rows  # handed to the split's dataset by `_dataset`
        return self._index(
            range(len(rows)), lambda index: self._record(rows, split, index, labels[index], objects[index])
        )

    def _dataset(self, split: str, records: list[SampleRecord]) -> RawSampleDataset:
        return HFRowsDataset(records, self._rows.pop(split), self.image_column, self.bad_samples.on_bad_sample)

    def _record(self, rows: Any, split: str, index: int, label: Any, objects: Any) -> SampleRecord:
        where = f"{split} row {index}"
        if not isinstance(label, int) or not 0 <= label < len(self.class_names):
            raise BadSampleError(self.root, f"{where}: label {label!r} is not a class index")
        bboxes, categories = _boxes_and_categories(objects, self.root, where)
        image_id = f"{split}/{index:06d}"
        if not bboxes:
            return SampleRecord(image_id, image_id, label, NO_BOXES, NO_BOX_LABELS)
        for position, category in enumerate(categories):
            named = (
                self.class_names[category]
                if isinstance(category, int) and 0 <= category < self.num_classes
                else category
            )
            if category is not None and named != self.class_names[label]:
                raise BadSampleError(
                    self.root, f"{where}, object {position}: category {category!r} is not the row's label"
                )
        size = _header_size(rows[index][self.image_column], self.root, where)
        boxes, box_labels, _ = usable_objects(
            self.root, [label] * len(bboxes), np.array(bboxes, np.float64).reshape(-1, 4), size, {label: label},
            self.bad_samples, context=where,
        )  # fmt: skip
        return SampleRecord(image_id, image_id, label, boxes, box_labels, size)


class HFRowsDataset(RawSampleDataset):
    """Records whose images are in a `datasets.Dataset` column (bytes or a path), decoded on access."""

    def __init__(self, records: list[SampleRecord], rows: Any, image_column: str, on_bad_sample: OnBadSample):
        super().__init__(records, on_bad_sample)
        self.rows = rows
        self.image_column = image_column
        self._row_of = {record.image_id: int(record.image_id.rpartition("/")[2]) for record in records}

    def _decode(self, record: SampleRecord) -> RawSample:  # type: ignore[override]
        image = _open(self.rows[self._row_of[record.image_id]][self.image_column], record.image_id)
        height, width = image.shape[:2]
        if record.image_size is not None and record.image_size != (width, height):
            raise BadSampleError(record.image_id, f"image is {width}x{height}, its header said {record.image_size}")
        return RawSample(
            image=image,
            boxes=record.boxes.copy(),
            box_labels=record.box_labels.copy(),
            target=record.target,
            image_id=record.image_id,
        )


def _open(cell: dict, where: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image cell ({"bytes", "path"}), or BadSampleError naming the row."""
    try:
        source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
        with Image.open(source) as image:
            image.load()
            return rgb_from_pil(image)
    except Exception as error:
        raise BadSampleError(where, f"image cannot be decoded ({type(error).__name__}: {error})") from error


def _header_size(cell: dict, path: Path, where: str) -> Size:
    try:
        source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
        with Image.open(source) as image:
            return image.size
    except Exception as error:
        raise BadSampleError(path, f"{where}: not a readable image ({type(error).__name__}: {error})") from error


def _boxes_and_categories(objects: Any, path: Path, where: str) -> tuple[list[list[float]], list[Any]]:
    """[x, y, w, h] boxes as xyxy and their categories, from a dict of lists or a list of dicts (None: none)."""
    if not objects:
        return [], []
    if isinstance(objects, list):  # [{"bbox": [...], "category": k}, ...]
        bboxes = [item.get("bbox") for item in objects]
        categories = [item.get("category", item.get("categories")) for item in objects]
    else:
        bboxes = objects.get("bbox") or []
        categories = objects.get("category", objects.get("categories")) or [None] * len(bboxes)
    if len(categories) != len(bboxes):
        raise BadSampleError(path, f"{where}: objects have {len(bboxes)} bbox and {len(categories)} category entries")
    boxes = []
    for position, bbox in enumerate(bboxes):
        place = f"{where}, object {position}"
        if not isinstance(bbox, list | tuple) or len(bbox) != len(_BBOX_FIELDS):
            raise BadSampleError(path, f"{place}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, width, height = (annotation_number(v, name, path, place) for name, v in zip(_BBOX_FIELDS, bbox))
        boxes.append([x, y, x + width, y + height])
    return boxes, categories
