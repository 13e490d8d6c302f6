"""What every file-based reader shares: decoding images, checking boxes, and the bad-sample policy.

A reader indexes a split into `SampleRecord`s (paths and annotations, nothing decoded); `RawSampleDataset` decodes
them on access. `on_bad_sample` decides what a problem does:

- "error" (default): raise `BadSampleError`, whose message names the file and the problem (from a DataLoader
  worker, PyTorch re-raises it as a RuntimeError that quotes the original, file name included).
- "skip": warn (`BadSampleWarning`, naming the file), drop what is broken and record `(file, reason)` in the source's
  `skipped` list. Found while indexing: the sample or box is dropped. Found while decoding: the item is `None`,
  for the collate function to drop and count.

Every number an annotation states goes through `annotation_number` (a finite number, or a bad sample naming the
field) and every image size through `annotated_size` (positive integers): an `inf` coordinate or a negative width is
never clipped or ignored into something plausible. A box that is partly outside its image is clipped to it and
recorded in `clipped` under either policy; a box with a coordinate that is not finite, with xmin >= xmax or
ymin >= ymax, or entirely outside the image, is a bad box. A dropped box takes its object with it (its class no longer
counts for the image's label), and a sample that had objects but keeps none is dropped.
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from pipeline.data.source import SPLITS, ImageSource, RawSample

OnBadSample = Literal["error", "skip"]
Size = tuple[int, int]  # (width, height) in pixels
Key = TypeVar("Key")  # how an annotation names a class, or any item a reader indexes

logger = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" (32-bit int) is read as a 16-bit range
_TRANSPARENT_BACKGROUND = (255, 255, 255, 255)  # transparent pixels are shown on white, as image viewers do

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # compared lower-case

NO_BOXES = np.zeros((0, 4), np.float32)  # shared by every record without boxes; samples get copies
NO_BOX_LABELS = np.zeros(0, np.int64)
NO_BOXES.flags.writeable = NO_BOX_LABELS.flags.writeable = False


class BadSampleError(ValueError):
    """A sample (image or annotation file) that cannot be used, with the file and the reason.

    Args:
        path: the file at fault.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class BadSampleWarning(UserWarning):
    """A sample, or one of its boxes, dropped under `on_bad_sample: skip`."""


def warn_skipped(error: BadSampleError) -> None:
    """Say that `error`'s sample is skipped, naming the file."""
    warnings.warn(f"skipped {error}", BadSampleWarning, stacklevel=3)


class BadSamplePolicy:
    """Applies `on_bad_sample` while a source indexes its splits, and remembers what it dropped and clipped.

    Args:
        on_bad_sample: "error" raises the first problem; "skip" warns, drops and records it.
    """

    def __init__(self, on_bad_sample: OnBadSample = "error"):
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.skipped: list[tuple[str, str]] = []
        self.clipped: list[tuple[str, str]] = []

    def reject(self, error: BadSampleError) -> None:
        """Raise `error`, or (skip) warn and record it; the caller then leaves the sample or box out."""
        if self.on_bad_sample == "error":
            raise error
        warn_skipped(error)
        self.skipped.append((error.path, error.reason))

    def note_clipped(self, path: str | Path, reason: str) -> None:
        """Record a box clipped to its image (kept, so it is counted but not an error)."""
        logger.info("clipped %s: %s", path, reason)
        self.clipped.append((str(path), reason))


def _to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded PIL image of any mode."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray8 = ((gray * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 65535 * 255)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, _TRANSPARENT_BACKGROUND)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.array(image.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, or raise `BadSampleError` naming the file and the problem.

    Grayscale, palette (with transparency), alpha, CMYK and 16-bit images are converted; transparent pixels become
    white. EXIF orientation is not applied: annotations refer to the pixels as stored.
    """
    try:
        with Image.open(path) as image:
            image.load()
            rgb = _to_rgb(image)
    except FileNotFoundError:
        raise BadSampleError(path, "image file not found") from None
    except Image.UnidentifiedImageError:
        raise BadSampleError(path, "not an image file (no decoder recognises its content)") from None
    except Exception as error:  # every decoder failure (truncated, corrupt, too large) is a bad file
        raise BadSampleError(path, f"image cannot be decoded ({type(error).__name__}: {error})") from error
    return rgb


def image_size(path: str | Path) -> Size:
    """(width, height) from the image file's header, or `BadSampleError` if it is missing or not an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise BadSampleError(path, "image file not found") from None
    except Exception as error:
        raise BadSampleError(path, f"not a readable image ({type(error).__name__}: {error})") from error


def load_mask(path: str | Path, object_ids: np.ndarray) -> np.ndarray:
    """(H, W) uint8 object mask: each pixel's value in the PNG (palette index or gray level) looked up in `object_ids`.

    Args:
        path: a mask PNG.
        object_ids: (256,) uint8, file value -> object id (box index + 1, 0 for background).
    """
    try:
        with Image.open(path) as mask:
            values = np.asarray(mask if mask.mode in ("P", "L") else mask.convert("L"))
    except FileNotFoundError:
        raise BadSampleError(path, "mask file not found") from None
    except Exception as error:
        raise BadSampleError(path, f"mask cannot be decoded ({type(error).__name__}: {error})") from error
    return object_ids[values]


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files (by extension, any case) in `folder`, or under it with `recursive`, sorted by path."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates if path.suffix.lower() in IMAGE_EXTENSIONS)


def _format_box(box: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"


def _prefixed(where: str, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


def annotation_number(value: object, field: str, path: str | Path, where: str = "") -> float:
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


@dataclass(frozen=True, slots=True, eq=False)
class SampleRecord:
    """Where one sample's files are and what its annotation says, as indexed; nothing decoded yet.

    Attributes:
        image_path: the image file.
        image_id: the sample's stable name (see `RawSample`).
        target: class index, or (num_classes,) float32 multi-hot.
        boxes: (n, 4) float32 xyxy in pixels of the image, already checked and clipped.
        box_labels: (n,) int64.
        image_size: (width, height) the boxes refer to; the decoded image must match. None: not checked.
        mask_path: an object-mask PNG, or None.
        mask_object_ids: (256,) uint8 lookup from the mask file's values to object ids (box index + 1).
    """

    image_path: str
    image_id: str
    target: int | np.ndarray
    boxes: np.ndarray
    box_labels: np.ndarray
    image_size: Size | None = None
    mask_path: str | None = None
    mask_object_ids: np.ndarray | None = None


class RawSampleDataset(Dataset):
    """Decodes indexed records into `RawSample`s; a file that fails to decode raises, or is skipped as None.

    Args:
        records: the split's samples, as a reader indexed them.
        on_bad_sample: "error" raises `BadSampleError`; "skip" warns and returns None for the collate to drop.
    """

    def __init__(self, records: Sequence[SampleRecord], on_bad_sample: OnBadSample = "error"):
        self.records = list(records)
        self.on_bad_sample = on_bad_sample

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> RawSample | None:
        record = self.records[index]
        try:
            return self._decode(record)
        except BadSampleError as error:
            if self.on_bad_sample == "error":
                raise
            warn_skipped(error)
            return None

    @staticmethod
    def _decode(record: SampleRecord) -> RawSample:
        image = load_rgb(record.image_path)
        height, width = image.shape[:2]
        if record.image_size is not None and record.image_size != (width, height):
            annotated_width, annotated_height = record.image_size
            raise BadSampleError(
                record.image_path,
                f"image is {width}x{height} but its annotation says {annotated_width}x{annotated_height}",
            )
        sample = RawSample(
            image=image,
            boxes=record.boxes.copy(),
            box_labels=record.box_labels.copy(),
            target=record.target.copy() if isinstance(record.target, np.ndarray) else record.target,
            image_id=record.image_id,
        )
        if record.mask_path is not None:
            mask = load_mask(record.mask_path, record.mask_object_ids)
            if mask.shape != (height, width):
                mask_height, mask_width = mask.shape
                raise BadSampleError(record.mask_path, f"mask is {mask_width}x{mask_height}, image {width}x{height}")
            sample["mask"] = mask
        return sample


class FileSource(ImageSource):
    """A dataset format read from files under `root`: checks the root and split names, indexes each split once.

    Subclasses set `layout` (where root should point, for error messages) and implement `_records`.

    Args:
        root: the dataset's folder.
        on_bad_sample: "error" or "skip" (see the module docstring).
    """

    layout: str = "the dataset folder"
    root_argument: str = "root"  # the constructor argument that names the folder, for error messages
    splits: tuple[str, ...] = SPLITS
    split_aliases: Mapping[str, str] = {}  # a split served by another, e.g. {"test": "val"}

    def __init__(self, root: str | Path, on_bad_sample: OnBadSample = "error"):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{type(self).__name__}: {self.root} is not a folder; set {self.root_argument} to {self.layout}"
            )
        self.bad_samples = BadSamplePolicy(on_bad_sample)
        self._datasets: dict[str, RawSampleDataset] = {}

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of every sample or box dropped so far under `on_bad_sample: skip`."""
        return self.bad_samples.skipped

    @property
    def clipped(self) -> list[tuple[str, str]]:
        """(file, reason) of every box clipped to its image so far."""
        return self.bad_samples.clipped

    def dataset(self, split: str) -> RawSampleDataset:
        """The split's samples, indexed on first use; ValueError for an unknown or empty split."""
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: unknown split {split!r}; choose one of {list(self.splits)}")
        split = self.split_aliases.get(split, split)
        if split not in self._datasets:
            records = self._records(split)
            if not records:
                skipped = f" ({len(self.skipped)} skipped so far, see the warnings)" if self.skipped else ""
                raise ValueError(
                    f"{type(self).__name__}: split {split!r} under {self.root} has no usable samples{skipped}; "
                    f"check that it holds {self.layout}"
                )
            self._datasets[split] = RawSampleDataset(records, self.bad_samples.on_bad_sample)
        return self._datasets[split]

    def _index(self, items: Iterable[Key], make_record: Callable[[Key], SampleRecord]) -> list[SampleRecord]:
        """`make_record` of every item, leaving out (under skip) those that raise `BadSampleError`."""
        records = []
        for item in items:
            try:
                records.append(make_record(item))
            except BadSampleError as error:
                self.bad_samples.reject(error)
        return records

    @abstractmethod
    def _records(self, split: str) -> list[SampleRecord]:
        """Index `split` (already checked and de-aliased)."""
