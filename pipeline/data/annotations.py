"""Annotation rules: every number an annotation states, every image size, every box, checked the same way.

Every number an annotation states goes through `annotation_number` (a finite number, or a bad sample naming the
field) and every image size through `annotated_size` (positive integers): an `inf` coordinate or a negative width is
never clipped or ignored into something plausible. A box that is partly outside its image is clipped to it and
recorded in `clipped` under either policy; a box with a coordinate that is not finite, with xmin >= xmax or
ymin >= ymax, or entirely outside the image, is a bad box. A dropped box takes its object with it (its class no longer
counts for the image's label), and a sample that had objects but keeps none is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.data.bad_samples import BadSampleError, BadSamplePolicy
from pipeline.data.decoding import Size

Key = TypeVar("Key")  # how an annotation names a class, or any item a reader indexes

NO_BOXES = np.zeros((0, 4), np.float32)  # shared by every record without boxes; samples get copies
NO_BOX_LABELS = np.zeros(0, np.int64)
NO_BOXES.flags.writeable = NO_BOX_LABELS.flags.writeable = False


def _format_box(box: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"


def _prefixed(where: str, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


def annotation_number(value: Any, field: str, path: str | Path, where: str = "") -> float:
    """A number as an annotation states it (text or a JSON number), or `BadSampleError` naming the field.

    `float()` alone would let "inf" and "nan" through, which clipping then turns into plausible boxes.

    Args:
        value: the field's content (None when the field is missing).
        field: the field as the format names it, e.g. "<bndbox/xmax>" or "bbox width".
        path: the annotation file, for the message.
        where: which object or row, e.g. "object 2".
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadSampleError(path, _prefixed(where, f"{field} is missing or not a number ({value!r})")) from None
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise BadSampleError(path, _prefixed(where, f"{field} is not a finite number ({value!r})"))
    return number


def annotated_size(
    width: object,
    height: object,
    path: str | Path,
    fields: tuple[str, str] = ("width", "height"),
    where: str = "",
    zero_is_unknown: bool = False,
) -> Size | None:
    """The (width, height) an annotation states, each a positive integer, or `BadSampleError` naming the field.

    A wrong size is not ignored: the decoded image is checked against it, and boxes are clipped to it.

    Args:
        width, height: the fields' contents (text or JSON numbers).
        path: the annotation file, for the message.
        fields: how the format names the two fields.
        where: which image, when `path` describes many.
        zero_is_unknown: a 0 means "not recorded" (PASCAL VOC): the result is then None, to read from the image.
    """
    size = []
    for value, field in zip((width, height), fields):
        number = annotation_number(value, field, path, where)
        if not (number > 0 or (zero_is_unknown and number == 0)) or not number.is_integer():
            raise BadSampleError(path, _prefixed(where, f"{field} must be a positive integer, got {number:g}"))
        size.append(int(number))
    return None if 0 in size else (size[0], size[1])


def _fit_box(box: np.ndarray, size: Size, where: str, path: Path, policy: BadSamplePolicy) -> np.ndarray:
    """The float64 `box` clipped to the image, as float32 (a change is recorded); bad if not finite, empty, outside."""
    if not np.isfinite(box).all():  # before clipping, which would turn inf into the image border
        raise BadSampleError(path, f"{where}: box {_format_box(box)} has a coordinate that is not a finite number")
    xmin, ymin, xmax, ymax = box
    if not (xmin < xmax and ymin < ymax):
        raise BadSampleError(path, f"{where}: degenerate box {_format_box(box)}, needs xmin < xmax and ymin < ymax")
    width, height = size
    clipped = np.clip(box, 0, [width, height, width, height])
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise BadSampleError(path, f"{where}: box {_format_box(box)} lies outside the {width}x{height} image")
    fitted = clipped.astype(np.float32)
    if not (fitted[0] < fitted[2] and fitted[1] < fitted[3]):
        raise BadSampleError(path, f"{where}: degenerate box {_format_box(box)} once rounded to float32")
    if not np.array_equal(clipped, box):
        policy.note_clipped(path, f"{where}: box {_format_box(box)} clipped to {_format_box(fitted)}")
    return fitted


def usable_objects(
    path: Path,
    classes: Sequence[Key],
    boxes: np.ndarray,
    size: Size,
    class_index: Mapping[Key, int],
    policy: BadSamplePolicy,
    context: str = "",
    positions: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The objects of one annotation that have a known class and a box on the image; `policy` rejects the rest.

    Args:
        path: the annotation (or image) file, for messages.
        classes: each object's class as the annotation names it (a name, synset id, category id, ...).
        boxes: (n, 4) xyxy in pixels of the image, as stated (kept in float64 until checked, so that a huge value
            is not first rounded to float32 inf).
        size: (width, height) of the image the boxes refer to.
        class_index: annotation class -> class index.
        policy: what to do with an unusable object.
        context: which sample, when `path` is a file shared by many (e.g. "image 12").
        positions: each object's position in the annotation, when only some of its objects are passed in
            (default 0, 1, ...).

    Returns:
        boxes (k, 4) float32 clipped to the image, box_labels (k,) int64, and the kept objects' positions (k,) in
        the annotation. Raises `BadSampleError` when there were objects and none is usable.
    """
    positions = range(len(classes)) if positions is None else positions
    kept_boxes, kept_labels, kept_positions = [], [], []
    for position, name, box in zip(positions, classes, np.asarray(boxes, np.float64), strict=True):
        where = f"{context}, object {position}" if context else f"object {position}"
        try:
            if name not in class_index:
                raise BadSampleError(path, f"{where}: class {name!r} is not in the class list")
            kept_boxes.append(_fit_box(box, size, where, path, policy))
        except BadSampleError as error:
            policy.reject(error)
            continue
        kept_labels.append(class_index[name])
        kept_positions.append(position)
    if len(classes) and not kept_boxes:
        raise BadSampleError(path, f"{context + ': ' if context else ''}no usable object left, so no sample")
    if not kept_boxes:
        return NO_BOXES, NO_BOX_LABELS, NO_BOX_LABELS
    return np.stack(kept_boxes), np.array(kept_labels, np.int64), np.array(kept_positions, np.int64)
