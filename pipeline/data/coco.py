"""COCO-format JSON for custom data: single- or multi-label classification with boxes.

One JSON file per split (`train_json`, `val_json`, `test_json`), each with::

    images:      [{"id", "file_name", "width", "height"}, ...]   file_name relative to image_root
    annotations: [{"id", "image_id", "category_id", "bbox": [x, y, width, height]}, ...]
    categories:  [{"id", "name"}, ...]

Category ids (any integers) map to class indices 0, 1, ... in increasing id order; every split's JSON must list
the same categories. Boxes become (x, y, x + width, y + height). Single-label: an image's label is the category of
its largest box, and only that category's boxes are kept, so that localization compares the map for the label
with its own boxes. An annotation without a `bbox` key is an image-level label: an image with only
such labels is kept (single-label: when they name one category) with no box, and counted `unboxed` by the metrics;
an image without any annotation has no label and is a bad sample. Multi-label: the target is the
multi-hot of the categories present (with or without a box); an image without annotations is kept with an
all-zero target. A JSON file
that does not parse is an error under either `on_bad_sample` (there is nothing left of the split to skip to). Every
bbox value must be a finite number (Python's json reads `Infinity` and `NaN`), and an image's `width` and `height`,
when given, positive integers; the image file's header gives the size of an image whose entry states neither.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES, annotated_size, annotation_number, usable_objects
from pipeline.data.bad_samples import BadSampleError, OnBadSample
from pipeline.data.decoding import Size, image_size
from pipeline.data.file_source import FileSource, SampleRecord
from pipeline.data.source import LayoutError

_COCO_KEYS = ("images", "annotations", "categories")
_BBOX_FIELDS = ("bbox x", "bbox y", "bbox width", "bbox height")


def _load_coco_json(path: Path) -> dict:
    """The parsed file, checked for COCO's three top-level lists."""
    if not path.is_file():
        raise LayoutError(f"COCOSource: annotation file {path} not found")
    try:
        data = json.loads(path.read_text())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer with too many digits
        raise ValueError(f"{path}: does not parse as JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in _COCO_KEYS):
        raise ValueError(f"{path}: a COCO JSON needs the lists {', '.join(_COCO_KEYS)} at its top level")
    return data


def _categories(data: dict, path: Path) -> list[tuple[int, str]]:
    """(id, name) of each category, in increasing id order."""
    try:
        categories = sorted((int(category["id"]), str(category["name"])) for category in data["categories"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    ids = [category_id for category_id, _ in categories]
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"{path}: categories must be non-empty with distinct ids, got ids {ids}")
    return categories


def _xyxy(annotation: dict, path: Path, where: str) -> list[float]:
    """An annotation's bbox [x, y, width, height] as [xmin, ymin, xmax, ymax], each a finite number."""
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != len(_BBOX_FIELDS):
        raise BadSampleError(path, f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, width, height = (annotation_number(value, field, path, where) for field, value in zip(_BBOX_FIELDS, bbox))
    return [x, y, x + width, y + height]


class COCOSource(FileSource):
    """COCO-format detection JSON read as classification with boxes (see the module docstring for the format).

    Args:
        image_root: the folder that the images' `file_name`s are relative to.
        train_json: the train split's JSON, or None if there is no train split.
        val_json: the val split's JSON, or None.
        test_json: the test split's JSON, or None.
        multi_label: multi-hot targets over all categories present, instead of one label per image.
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "the folder that the JSON's image file_names are relative to"
    root_argument = "image_root"

    def __init__(
        self,
        image_root: str | Path,
        train_json: str | Path | None = None,
        val_json: str | Path | None = None,
        test_json: str | Path | None = None,
        multi_label: bool = False,
        on_bad_sample: OnBadSample = "error",
    ):
        super().__init__(image_root, on_bad_sample)
        self.multi_label = multi_label
        json_paths = {"train": train_json, "val": val_json, "test": test_json}
        self._json_paths = {split: Path(path) for split, path in json_paths.items() if path}
        if not self._json_paths:
            raise ValueError("COCOSource: set at least one of train_json, val_json, test_json")
        self._categories_path = next(iter(self._json_paths.values()))
        self._categories = _categories(_load_coco_json(self._categories_path), self._categories_path)
        self.class_names = [name for _, name in self._categories]
        # looked up with whatever an annotation states as its category_id
        self._class_index: dict[object, int] = {cid: index for index, (cid, _) in enumerate(self._categories)}

    def _records(self, split: str) -> list[SampleRecord]:
        if split not in self._json_paths:
            raise ValueError(f"COCOSource: no JSON for split {split!r}; set {split}_json")
        json_path = self._json_paths[split]
        data = _load_coco_json(json_path)
        if _categories(data, json_path) != self._categories:
            raise ValueError(f"{json_path}: categories differ from those of {self._categories_path}")
        image_ids = {image.get("id") for image in data["images"] if isinstance(image, dict)}
        annotations_by_image: dict[object, list[dict]] = defaultdict(list)
        for position, annotation in enumerate(data["annotations"]):
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            if image_id in image_ids:
                annotations_by_image[image_id].append(annotation)
            else:
                problem = f"annotation {position}: image_id {image_id!r} is not among the images"
                self.bad_samples.reject(BadSampleError(json_path, problem))
        return self._index(data["images"], lambda image: self._record(image, annotations_by_image, json_path))

    def _record(self, image: dict, annotations_by_image: dict[object, list[dict]], json_path: Path) -> SampleRecord:
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(file_name, str):
            raise BadSampleError(json_path, f"image entry {image!r}: needs an 'id' and a 'file_name'")
        annotations = annotations_by_image.get(image.get("id"), [])
        boxed = [annotation for annotation in annotations if "bbox" in annotation]
        context = f"image {file_name}"
        image_path = self.root / file_name
        if not image_path.is_file():
            raise BadSampleError(image_path, f"image file not found (listed in {json_path})")
        size: Size | None = None  # read only for an image with boxes
        boxes, box_labels = NO_BOXES, NO_BOX_LABELS
        if boxed:
            size = self._size(image, image_path, json_path, context)
            categories: list[object] = [annotation.get("category_id") for annotation in boxed]
            boxes, box_labels, _ = usable_objects(
                json_path,
                categories,
                np.array(
                    [_xyxy(annotation, json_path, f"{context}, object {i}") for i, annotation in enumerate(boxed)],
                    np.float64,
                ).reshape(-1, 4),
                size,
                self._class_index,
                self.bad_samples,
                context=context,
            )
        labels_only = self._unboxed_labels([a for a in annotations if "bbox" not in a], json_path, context)
        target: int | np.ndarray
        if self.multi_label:
            target = np.zeros(self.num_classes, np.float32)
            target[box_labels] = 1.0
            target[labels_only] = 1.0
        else:
            if len(boxes):
                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                target = int(box_labels[np.argmax(areas)])
            elif len(set(labels_only)) == 1:
                target = labels_only[0]
            elif not labels_only:
                raise BadSampleError(
                    json_path,
                    f"{context}: no annotations, so no label (an annotation with a category_id and no bbox labels "
                    "an image without a box; or set multi_label)",
                )
            else:
                raise BadSampleError(
                    json_path, f"{context}: no box and {len(set(labels_only))} categories, so no single label"
                )
            boxes, box_labels = boxes[box_labels == target], box_labels[box_labels == target]
        return SampleRecord(str(image_path), file_name, target, boxes, box_labels, size)

    def _unboxed_labels(self, annotations: list[dict], json_path: Path, context: str) -> list[int]:
        """The class indices of annotations without a bbox: image-level labels (the image is scored `unboxed`)."""
        labels = []
        for annotation in annotations:
            category = annotation.get("category_id")
            if category not in self._class_index:
                self.bad_samples.reject(BadSampleError(json_path, f"{context}: category_id {category!r} is unknown"))
                continue
            labels.append(self._class_index[category])
        return labels

    @staticmethod
    def _size(image: dict, image_path: Path, json_path: Path, where: str) -> Size:
        """(width, height) from the JSON (positive integers), or from the image file when the JSON states neither."""
        width, height = image.get("width"), image.get("height")
        if width is None and height is None:
            return image_size(image_path)
        size = annotated_size(width, height, json_path, where=where)
        assert size is not None  # None only with zero_is_unknown: here a 0 is a BadSampleError
        return size
