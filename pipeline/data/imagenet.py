"""ImageNet ILSVRC 2012: class folders for training, val images with boxes for localization (single-label).

Expected layout under `root`, flat or as the ILSVRC / Kaggle download has it::

    LOC_synset_mapping.txt                 "<wnid> <names>" per line; line order is the class order timm uses
    train/<wnid>/*.JPEG                    or Data/CLS-LOC/train/<wnid>/, ILSVRC/Data/CLS-LOC/train/<wnid>/
    val/*.JPEG                             or Data/CLS-LOC/val/, ILSVRC/Data/CLS-LOC/val/; or val/<wnid>/*.JPEG
    Annotations/CLS-LOC/val/<image>.xml    or ILSVRC/Annotations/CLS-LOC/val/: PASCAL-style, <name> is the wnid
    LOC_val_solution.csv                   ImageId,PredictionString ("wnid xmin ymin xmax ymax", repeated)

Class names are the mapping's text after the wnid. Val boxes come from the XML files when their folder exists and
from the CSV otherwise (`val_boxes` picks one); coordinates are kept as written, and each must be a finite number.
A val image's label is the class of its boxes, which must agree (and agree with its folder, when val is sorted into
`val/<wnid>/` folders). A val image in a class folder without an XML file or a CSV row is kept with its folder's
label and no box (counted `unboxed` by the metrics); a flat val image without boxes has no label and is a bad
sample. Train images carry no boxes (the train XMLs are not read). "test" is served by val: ILSVRC's test labels are
not public.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES, annotation_number, usable_objects
from pipeline.data.bad_samples import BadSampleError, OnBadSample
from pipeline.data.decoding import Size, image_files, image_size
from pipeline.data.file_source import FileSource, SampleRecord
from pipeline.data.source import LayoutError
from pipeline.data.voc import read_voc_xml

SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"
_IMAGE_DIRS = ("{split}", "Data/CLS-LOC/{split}", "ILSVRC/Data/CLS-LOC/{split}")
_VAL_XML_DIRS = ("Annotations/CLS-LOC/val", "ILSVRC/Annotations/CLS-LOC/val")
_CSV_FIELDS_PER_BOX = 5  # wnid xmin ymin xmax ymax
_CSV_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")

# image file -> (annotation file, wnid of each box, (n, 4) boxes, image size), or None when it has no boxes
ValBoxReader = Callable[[Path], tuple[Path, list[str], np.ndarray, Size] | None]


def read_synset_mapping(path: Path) -> tuple[list[str], list[str]]:
    """(wnids, class names) in file order from LOC_synset_mapping.txt."""
    if not path.is_file():
        raise LayoutError(f"ImageNetSource: {path} not found; it gives the class order ('<wnid> <names>' lines)")
    wnids, names = [], []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not (wnid.startswith("n") and wnid[1:].isdigit()):
            raise ValueError(f"{path}:{line_number}: expected '<wnid> <names>', got {line!r}")
        if wnid in wnids:
            raise ValueError(f"{path}:{line_number}: synset {wnid} is listed twice")
        wnids.append(wnid)
        names.append(name.strip() or wnid)
    if not wnids:
        raise ValueError(f"{path}: no synsets listed")
    return wnids, names


class ImageNetSource(FileSource):
    """ImageNet ILSVRC 2012 classification with val boxes (see the module docstring for the layout).

    Args:
        root: the folder holding LOC_synset_mapping.txt and the images.
        val_boxes: where val boxes come from: "xml" (Annotations/CLS-LOC/val), "csv" (LOC_val_solution.csv), or
            "auto": the XML folder if there is one, else the CSV.
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "the ImageNet folder holding LOC_synset_mapping.txt, train/<wnid>/ and val/ (or ILSVRC/Data/CLS-LOC/)"
    split_aliases = {"test": "val"}

    def __init__(
        self,
        root: str | Path,
        val_boxes: Literal["auto", "xml", "csv"] = "auto",
        on_bad_sample: OnBadSample = "error",
    ):
        super().__init__(root, on_bad_sample)
        self.val_boxes = val_boxes
        self.wnids, self.class_names = read_synset_mapping(self.root / SYNSET_MAPPING)
        self._class_index = {wnid: index for index, wnid in enumerate(self.wnids)}

    def _records(self, split: str) -> list[SampleRecord]:
        image_dir = self._find_dir([pattern.format(split=split) for pattern in _IMAGE_DIRS], f"{split} images")
        if split == "train":
            return self._index(image_files(image_dir, recursive=True), self._train_record)
        read_boxes = self._val_box_reader()
        return self._index(
            image_files(image_dir, recursive=True), lambda path: self._val_record(path, image_dir, read_boxes)
        )

    def _find_dir(self, candidates: list[str], what: str) -> Path:
        """The first of `candidates` (relative to root) that is a folder."""
        for candidate in candidates:
            if (self.root / candidate).is_dir():
                return self.root / candidate
        raise LayoutError(f"ImageNetSource: no {what} under {self.root}; expected one of {candidates}")

    def _train_record(self, image_path: Path) -> SampleRecord:
        wnid = image_path.parent.name
        if wnid not in self._class_index:
            raise BadSampleError(image_path, f"its folder {wnid!r} is not a synset in {SYNSET_MAPPING}")
        return SampleRecord(str(image_path), image_path.stem, self._class_index[wnid], NO_BOXES, NO_BOX_LABELS)

    def _val_record(self, image_path: Path, image_dir: Path, read_boxes: ValBoxReader) -> SampleRecord:
        """A val image's label from its boxes' class, or from its `val/<wnid>/` folder; without boxes the folder
        label keeps it (unboxed), and a flat val image without boxes has no label at all."""
        folder_label = None if image_path.parent == image_dir else self._train_record(image_path).target
        found = read_boxes(image_path)
        if found is None:
            if folder_label is None:
                raise BadSampleError(
                    image_path, "no boxes for this val image, so no label (in val/<wnid>/ it is kept, unboxed)"
                )
            return SampleRecord(str(image_path), image_path.stem, folder_label, NO_BOXES, NO_BOX_LABELS)
        annotation_path, wnids, boxes, size = found
        boxes, box_labels, _ = usable_objects(
            annotation_path, wnids, boxes, size, self._class_index, self.bad_samples, context=image_path.stem
        )
        labels = sorted(set(box_labels.tolist()) | ({folder_label} if folder_label is not None else set()))
        if len(labels) != 1:
            found_classes = ", ".join(self.wnids[label] for label in labels) or "none"
            raise BadSampleError(
                annotation_path,
                f"{image_path.stem}: a val image needs boxes of exactly one class, found {found_classes}"
                + (" (its folder's class included)" if folder_label is not None else ""),
            )
        return SampleRecord(
            str(image_path), image_path.stem, labels[0], boxes, box_labels, size if len(boxes) else None
        )

    def _val_box_reader(self) -> ValBoxReader:
        """Read val boxes from the XML folder or the CSV, as `val_boxes` says."""
        has_xml = any((self.root / xml_dir).is_dir() for xml_dir in _VAL_XML_DIRS)
        if self.val_boxes == "xml" or (self.val_boxes == "auto" and has_xml):
            xml_dir = self._find_dir(list(_VAL_XML_DIRS), "val XML annotations")
            return lambda image_path: _xml_boxes(xml_dir / f"{image_path.stem}.xml", image_path)
        csv_path = self.root / VAL_SOLUTION
        if not csv_path.is_file():
            raise LayoutError(
                f"ImageNetSource: no val boxes under {self.root}; expected {VAL_SOLUTION} or one of {_VAL_XML_DIRS}"
            )
        rows = _read_val_solution(csv_path)
        return lambda image_path: _csv_boxes(rows, csv_path, image_path)


def _xml_boxes(annotation_path: Path, image_path: Path) -> tuple[Path, list[str], np.ndarray, Size] | None:
    """An image's boxes from its CLS-LOC XML; None when it has no XML."""
    if not annotation_path.is_file():
        return None
    annotation = read_voc_xml(annotation_path)
    boxes = np.array([obj.box for obj in annotation.objects], np.float64).reshape(-1, 4)
    return annotation_path, [obj.name for obj in annotation.objects], boxes, annotation.size or image_size(image_path)


def _read_val_solution(csv_path: Path) -> dict[str, str]:
    """ImageId -> PredictionString from LOC_val_solution.csv (parsed per image, so a bad row skips one image)."""
    with csv_path.open(newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: expected the header ImageId,PredictionString, got {reader.fieldnames}")
        return {row["ImageId"]: row["PredictionString"] or "" for row in reader}


def _csv_boxes(
    rows: dict[str, str], csv_path: Path, image_path: Path
) -> tuple[Path, list[str], np.ndarray, Size] | None:
    """An image's boxes from its LOC_val_solution.csv row (None: no row); the size comes from the image's header."""
    if image_path.stem not in rows:
        return None
    fields = rows[image_path.stem].split()
    if len(fields) % _CSV_FIELDS_PER_BOX:
        raise BadSampleError(
            csv_path,
            f"row {image_path.stem}: PredictionString is not 'wnid xmin ymin xmax ymax'... ({len(fields)} fields)",
        )
    boxes = []
    for start in range(0, len(fields), _CSV_FIELDS_PER_BOX):
        where = f"row {image_path.stem}, box {start // _CSV_FIELDS_PER_BOX}"
        coordinates = zip(_CSV_BOX_FIELDS, fields[start + 1 : start + _CSV_FIELDS_PER_BOX])
        boxes.append([annotation_number(value, name, csv_path, where) for name, value in coordinates])
    return csv_path, fields[::_CSV_FIELDS_PER_BOX], np.array(boxes, np.float64).reshape(-1, 4), image_size(image_path)
