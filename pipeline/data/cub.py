"""CUB-200-2011 birds: single-label, 200 classes, one box per image, optional segmentation masks.

Expected layout under `root` (the `CUB_200_2011` folder)::

    classes.txt                              "<class_id> <NNN.Name>", class ids from 1
    images.txt                               "<image_id> <class folder>/<file>.jpg"
    image_class_labels.txt                   "<image_id> <class_id>"
    train_test_split.txt                     "<image_id> <1 train | 0 test>"
    bounding_boxes.txt                       "<image_id> <x> <y> <width> <height>", float pixels
    images/<class folder>/<file>.jpg
    segmentations/<class folder>/<file>.png  optional (use_masks=True): grayscale, >= 128 is the bird

Class names are those of classes.txt without the number prefix. Boxes become (x, y, x + width, y + height). CUB has
only the official train and test splits: "val" and "test" both read the test split. A box field that is not a finite
number is a bad sample; a width or height <= 0 makes a bad (empty) box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.annotations import annotation_number, usable_objects
from pipeline.data.bad_samples import BadSampleError, OnBadSample
from pipeline.data.decoding import image_size
from pipeline.data.file_source import FileSource, SampleRecord
from pipeline.data.source import LayoutError

_MASK_THRESHOLD = 128  # segmentation gray level from which a pixel is bird (at least half the annotators)
_BIRD_MASK = (np.arange(256) >= _MASK_THRESHOLD).astype(np.uint8)  # gray level -> object id 1 (the one box)
_SPLIT_FLAGS = {"train": "1", "test": "0"}
_BOX_FIELDS = ("x", "y", "width", "height")


def _read_table(path: Path) -> dict[str, list[str]]:
    """First column -> the other columns, for CUB's space-separated text files (checked per image later)."""
    if not path.is_file():
        raise LayoutError(f"CUBSource: {path} not found; set root to {CUBSource.layout}")
    rows = (line.split() for line in path.read_text().splitlines())
    return {row[0]: row[1:] for row in rows if row}


def _class_name(text: str) -> str:
    """The name without its number prefix: "001.Black_footed_Albatross" -> "Black_footed_Albatross"."""
    number, dot, name = text.partition(".")
    return name if dot and number.isdigit() else text


class CUBSource(FileSource):
    """CUB-200-2011 (see the module docstring for the layout).

    Args:
        root: the `CUB_200_2011` folder.
        use_masks: add the `segmentations/` masks (1 = bird).
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "the CUB_200_2011 folder holding images.txt, classes.txt, bounding_boxes.txt and images/"
    split_aliases = {"val": "test"}

    def __init__(self, root: str | Path, use_masks: bool = False, on_bad_sample: OnBadSample = "error"):
        super().__init__(root, on_bad_sample)
        self.use_masks = use_masks
        classes = _read_table(self.root / "classes.txt")
        self.class_names = [_class_name(" ".join(fields)) for fields in classes.values()]
        self._class_index = {class_id: index for index, class_id in enumerate(classes)}
        self._images = _read_table(self.root / "images.txt")
        self._labels = _read_table(self.root / "image_class_labels.txt")
        self._boxes = _read_table(self.root / "bounding_boxes.txt")
        self._split_ids = self._assign_splits(_read_table(self.root / "train_test_split.txt"))

    def _assign_splits(self, split_flags: dict[str, list[str]]) -> dict[str, list[str]]:
        """Split name -> image ids; an image without a valid flag is bad (once, here, not once per split)."""
        split_ids: dict[str, list[str]] = {split: [] for split in _SPLIT_FLAGS}
        splits_by_flag = {flag: split for split, flag in _SPLIT_FLAGS.items()}
        for image_id in self._images:
            flag = split_flags.get(image_id, [])
            if flag[:1] and flag[0] in splits_by_flag:
                split_ids[splits_by_flag[flag[0]]].append(image_id)
            else:
                problem = f"image {image_id}: expected a 1 (train) or 0 (test) flag, got {flag or 'no line'}"
                self.bad_samples.reject(BadSampleError(self.root / "train_test_split.txt", problem))
        return split_ids

    def _records(self, split: str) -> list[SampleRecord]:
        return self._index(self._split_ids[split], self._record)

    def _record(self, image_id: str) -> SampleRecord:
        relative_path = Path(" ".join(self._images[image_id]))
        image_path = self.root / "images" / relative_path
        labels_path, boxes_path = self.root / "image_class_labels.txt", self.root / "bounding_boxes.txt"
        class_id = self._labels.get(image_id, [])
        if len(class_id) != 1:
            raise BadSampleError(labels_path, f"image {image_id}: expected one class id, got {class_id or 'no line'}")
        if class_id[0] not in self._class_index:
            raise BadSampleError(labels_path, f"image {image_id}: class id {class_id[0]} is not in classes.txt")
        box_fields = self._boxes.get(image_id, [])
        if len(box_fields) != len(_BOX_FIELDS):
            found = box_fields or "no line"
            raise BadSampleError(boxes_path, f"image {image_id}: expected 'x y width height', got {found}")
        where = f"image {image_id}"
        x, y, width, height = (
            annotation_number(value, name, boxes_path, where) for name, value in zip(_BOX_FIELDS, box_fields)
        )
        size = image_size(image_path)
        boxes, box_labels, _ = usable_objects(
            boxes_path,
            class_id,
            np.array([[x, y, x + width, y + height]]),
            size,
            self._class_index,
            self.bad_samples,
            context=f"image {image_id}",
        )
        mask_path = None
        if self.use_masks:
            mask_path = self.root / "segmentations" / relative_path.with_suffix(".png")
            if not mask_path.is_file():
                raise BadSampleError(mask_path, "mask file not found (use_masks=True)")
        return SampleRecord(
            image_path=str(image_path),
            image_id=image_path.stem,
            target=int(box_labels[0]),
            boxes=boxes,
            box_labels=box_labels,
            image_size=size,
            mask_path=None if mask_path is None else str(mask_path),
            mask_object_ids=_BIRD_MASK if self.use_masks else None,
        )
