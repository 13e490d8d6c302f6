"""Pascal VOC 2012 (multi-label, 20 classes), and the PASCAL-style XML annotations that ImageNet shares.

Expected layout under `root` (the `VOC2012` folder of VOCdevkit)::

    JPEGImages/<id>.jpg
    Annotations/<id>.xml                       one per image: size, objects with name, difficult, bndbox
    ImageSets/Main/{train,val}.txt             one <id> per line; the split
    ImageSets/Segmentation/{train,val}.txt     the split when use_masks=True
    SegmentationObject/<id>.png                optional, palette PNG: object i of the XML has index i (1-based)

Images are keyed by the annotation's file stem, as the ImageSets lists are; the XML's `<filename>` is not trusted
(it can name another file). Boxes keep the file's 1-based pixel coordinates (xmin, ymin, xmax, ymax, all inclusive).
Every coordinate must be a finite number and a stated size positive integers; a size of 0 means "not recorded" (the
size is then read from the image), as some tools write it.
The target is the (20,) multi-hot of the classes of the kept boxes, so every class it marks has boxes to localize;
`difficult` objects are left out unless `include_difficult`, and an image whose objects are all difficult is kept,
with no boxes and an all-zero target. "test" reads ImageSets/Main/test.txt where there is one (VOC 2007; VOC 2012's
test annotations are not public).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.annotations import annotated_size, annotation_number, usable_objects
from pipeline.data.bad_samples import BadSampleError, OnBadSample
from pipeline.data.decoding import Size, image_size
from pipeline.data.file_source import FileSource, SampleRecord
from pipeline.data.source import LayoutError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class VOCObject:
    """One `<object>` of a PASCAL-style annotation."""

    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax as written
    difficult: bool


@dataclass(frozen=True)
class VOCAnnotation:
    """A PASCAL-style XML annotation: the image size it states (None if absent or zero) and its objects."""

    size: Size | None
    objects: list[VOCObject]


def read_voc_xml(path: Path) -> VOCAnnotation:
    """Parse a PASCAL VOC / ImageNet CLS-LOC annotation, or raise `BadSampleError` naming the file and the field.

    Numbers are returned as written (checked finite, not yet checked against the image: `usable_objects` does that).
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise BadSampleError(path, "annotation file not found") from None
    except OSError as error:
        raise BadSampleError(path, f"annotation file cannot be read ({error.strerror})") from None
    except ET.ParseError as error:
        raise BadSampleError(path, f"XML does not parse ({error})") from None
    size = None
    if root.find("size") is not None:
        fields = ("<size/width>", "<size/height>")
        width, height = (root.findtext(f"size/{side}") for side in ("width", "height"))
        size = annotated_size(width, height, path, fields, zero_is_unknown=True)
    objects = []
    for position, element in enumerate(root.iterfind("object")):
        where = f"object {position}"
        name = (element.findtext("name") or "").strip()
        if not name:
            raise BadSampleError(path, f"{where}: <name> is missing")
        xmin, ymin, xmax, ymax = (
            annotation_number(element.findtext(f"bndbox/{field}"), f"<bndbox/{field}>", path, where)
            for field in _BOX_FIELDS
        )
        difficult = element.findtext("difficult", "0").strip() == "1"
        objects.append(VOCObject(name, (xmin, ymin, xmax, ymax), difficult))
    return VOCAnnotation(size, objects)


class VOCSource(FileSource):
    """Pascal VOC: multi-label classification with per-class boxes (see the module docstring for the layout).

    Args:
        root: the `VOC2012` folder (holding JPEGImages/, Annotations/, ImageSets/).
        include_difficult: keep objects marked `difficult` (boxes and labels); by default they are left out.
        use_masks: add `SegmentationObject` masks (object k = box k-1); the splits then come from
            ImageSets/Segmentation, whose images all have masks.
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "the VOC2012 folder holding JPEGImages/, Annotations/ and ImageSets/Main/"
    class_names = list(VOC_CLASSES)
    multi_label = True

    def __init__(
        self,
        root: str | Path,
        include_difficult: bool = False,
        use_masks: bool = False,
        on_bad_sample: OnBadSample = "error",
    ):
        super().__init__(root, on_bad_sample)
        self.include_difficult = include_difficult
        self.use_masks = use_masks
        self._class_index = {name: index for index, name in enumerate(VOC_CLASSES)}

    def _records(self, split: str) -> list[SampleRecord]:
        split_list = self.root / "ImageSets" / ("Segmentation" if self.use_masks else "Main") / f"{split}.txt"
        if not split_list.is_file():
            raise LayoutError(f"VOCSource: no {split!r} list at {split_list}; set root to {self.layout}")
        image_ids = [line.split()[0] for line in split_list.read_text().splitlines() if line.strip()]
        return self._index(image_ids, self._record)

    def _record(self, image_id: str) -> SampleRecord:
        image_path = self.root / "JPEGImages" / f"{image_id}.jpg"
        annotation_path = self.root / "Annotations" / f"{image_id}.xml"
        annotation = read_voc_xml(annotation_path)
        if not image_path.is_file():
            raise BadSampleError(image_path, "image file not found (the image is listed and annotated)")
        size = annotation.size or image_size(image_path)
        positions = [i for i, obj in enumerate(annotation.objects) if self.include_difficult or not obj.difficult]
        boxes, box_labels, kept = usable_objects(
            annotation_path,
            [annotation.objects[i].name for i in positions],
            np.array([annotation.objects[i].box for i in positions], np.float64).reshape(-1, 4),
            size,
            self._class_index,
            self.bad_samples,
            positions=positions,
        )
        target = np.zeros(self.num_classes, np.float32)
        target[box_labels] = 1.0
        mask_path, mask_object_ids = None, None
        if self.use_masks:
            mask_path = self.root / "SegmentationObject" / f"{image_id}.png"
            if not mask_path.is_file():
                raise BadSampleError(mask_path, "mask file not found (use_masks=True)")
            # values not looked up here (0 background, 255 object boundaries, left-out objects) read as 0
            mask_object_ids = np.zeros(256, np.uint8)
            mask_object_ids[kept + 1] = np.arange(1, len(kept) + 1)
        return SampleRecord(
            image_path=str(image_path),
            image_id=image_id,
            target=target,
            boxes=boxes,
            box_labels=box_labels,
            image_size=size,
            mask_path=None if mask_path is None else str(mask_path),
            mask_object_ids=mask_object_ids,
        )
