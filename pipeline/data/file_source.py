"""The file-source base: a reader indexes a split into `SampleRecord`s, `RawSampleDataset` decodes them on access.

A record holds paths and annotations, nothing decoded; `on_bad_sample` (see `pipeline.data.bad_samples`) decides
what a problem found while indexing or decoding does.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from pipeline.data.annotations import Key
from pipeline.data.bad_samples import BadSampleError, BadSamplePolicy, OnBadSample, warn_skipped
from pipeline.data.decoding import Size, load_mask, load_rgb
from pipeline.data.source import SPLITS, ImageSource, LayoutError, RawSample


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

    def id_and_class(self, index: int) -> tuple[str, int | None]:
        """Sample `index`'s image id and class (multi-label: its first present class, None if none), undecoded."""
        record = self.records[index]
        if isinstance(record.target, np.ndarray):
            present = np.flatnonzero(record.target > 0.5)
            return record.image_id, int(present[0]) if len(present) else None
        return record.image_id, None if record.target < 0 else int(record.target)

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
            assert record.mask_object_ids is not None  # a record sets both or neither
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
            raise LayoutError(
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
            self._datasets[split] = self._dataset(split, records)
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

    def _dataset(self, split: str, records: list[SampleRecord]) -> RawSampleDataset:
        """The dataset that decodes `split`'s records (image files; a source that stores images otherwise overrides)."""
        return RawSampleDataset(records, self.bad_samples.on_bad_sample)

    @abstractmethod
    def _records(self, split: str) -> list[SampleRecord]:
        """Index `split` (already checked and de-aliased)."""
