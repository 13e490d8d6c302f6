"""What a split holds, counted from its index without decoding a pixel: images, classes, boxes, bad files, sizes.

`agcam data` prints it for every split; the run summary and W&B state it for the splits a run uses, so a split
without boxes says that localization was not scored instead of a metric going missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.data.source import ImageSource


@dataclass
class SplitInventory:
    """Counts of one split, from its index (file-based sources) or its generator (the shapes data).

    Attributes:
        split: the split's name.
        images: samples indexed.
        with_boxes: samples with at least one box; None when the source cannot tell without decoding.
        class_counts: samples per class index (multi-label: per present class).
        bad: (file, reason) of what indexing this split dropped under `on_bad_sample: skip`.
        sizes: (width, height) of the samples whose size was read (images with boxes: headers only).
    """

    split: str
    images: int
    with_boxes: int | None
    class_counts: list[int]
    bad: list[tuple[str, str]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def unboxed(self) -> int | None:
        return None if self.with_boxes is None else self.images - self.with_boxes

    def localization_note(self) -> str:
        """One sentence on whether this split's localization is scored, e.g. for the run summary and W&B."""
        if self.with_boxes is None:
            return f"{self.split}: {self.images} images"
        if self.with_boxes == 0:
            return (
                f"{self.split}: {self.images} images, 0 with boxes: localization not scored "
                "(heatmap panels still show; ABPC needs no boxes: set abpc_images on LocalizationCallback)"
            )
        if self.unboxed:
            return (
                f"{self.split}: {self.images} images, {self.with_boxes} with boxes: localization scored on those, "
                f"{self.unboxed} unboxed"
            )
        return f"{self.split}: {self.images} images, all with boxes"

    def size_range(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """((min width, min height), (max width, max height)) over `sizes`, or None when no size was read."""
        if not self.sizes:
            return None
        widths, heights = zip(*self.sizes)
        return (min(widths), min(heights)), (max(widths), max(heights))

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready values (no sizes list, no file list: their count and range)."""
        counts = asdict(self)
        counts.pop("sizes")
        counts["bad"] = len(self.bad)
        counts["unboxed"] = self.unboxed
        return counts


def split_inventory(source: ImageSource, split: str) -> SplitInventory:
    """Index `split` of `source` (if not done yet) and count it; nothing is decoded.

    `bad` lists what this call's indexing dropped: index a split here first to see all of its bad files.
    """
    skipped_before = len(getattr(source, "skipped", []))
    dataset = source.dataset(split)
    bad = list(getattr(source, "skipped", [])[skipped_before:])
    class_counts = [0] * source.num_classes
    records = getattr(dataset, "records", None)
    if records is None:  # a generated dataset: every sample has boxes (the shapes data draws them)
        for index in range(len(dataset)):
            class_counts[dataset.id_and_class(index)[1]] += 1
        return SplitInventory(split, len(dataset), len(dataset), class_counts, bad)
    with_boxes = 0
    sizes = []
    for record in records:
        if hasattr(record.target, "shape"):
            for label in record.target.nonzero()[0].tolist():
                class_counts[label] += 1
        elif record.target >= 0:
            class_counts[record.target] += 1
        with_boxes += len(record.boxes) > 0
        if record.image_size is not None:
            sizes.append(record.image_size)
    return SplitInventory(split, len(records), with_boxes, class_counts, bad, sizes)
