"""Unlabelled images for predict / explain: every image file under a folder, searched recursively.

Items carry the image and its file path as `image_id`, no boxes, and target -1 (`UNLABELLED`). There is no train
split; "val", "test" and "predict" all serve the whole folder.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES
from pipeline.data.bad_samples import OnBadSample
from pipeline.data.decoding import IMAGE_EXTENSIONS, image_files
from pipeline.data.file_source import FileSource, RawSampleDataset, SampleRecord
from pipeline.data.source import LayoutError

UNLABELLED = -1


def folder_records(root: Path) -> list[SampleRecord]:
    """One unlabelled record per image file under `root`, sorted by path."""
    if not root.is_dir():
        raise LayoutError(f"image folder {root} is not a folder; set root to a folder of images")
    paths = image_files(root, recursive=True)
    if not paths:
        raise LayoutError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return [SampleRecord(str(path), str(path), UNLABELLED, NO_BOXES, NO_BOX_LABELS) for path in paths]


class ImageFolderDataset(RawSampleDataset):
    """Every image under a folder as an unlabelled `RawSample`, for explaining files without a dataset format.

    Args:
        root: the folder, searched recursively for image files.
        on_bad_sample: "error" raises on an image that does not decode; "skip" warns and yields None.
    """

    def __init__(self, root: str | Path, on_bad_sample: OnBadSample = "error"):
        super().__init__(folder_records(Path(root).expanduser()), on_bad_sample)


class FolderSource(FileSource):
    """A folder of unlabelled images as a source, for the predict / explain inputs of a data module.

    Args:
        root: the folder, searched recursively for image files.
        class_names: the model's class names, if known (the images carry no labels).
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "a folder of image files (searched recursively)"
    splits = ("val", "test", "predict")
    split_aliases = {"test": "val", "predict": "val"}  # one folder serves them all

    def __init__(self, root: str | Path, class_names: list[str] | None = None, on_bad_sample: OnBadSample = "error"):
        super().__init__(root, on_bad_sample)
        self.class_names = list(class_names or [])

    def _records(self, split: str) -> list[SampleRecord]:
        return folder_records(self.root)
