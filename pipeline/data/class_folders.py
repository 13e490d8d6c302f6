"""Class folders (torchvision's `ImageFolder` layout, timm's default): single-label, boxes optional.

Expected layout under `root`::

    train/<class>/**/<image>         any image extension, any case; hidden files and folders are ignored
    val/<class>/**/<image>           (or validation/, valid/)
    test/<class>/**/<image>          optional
    <split>/metadata.jsonl           optional boxes, Hugging Face `imagefolder` convention, or
    <split>/boxes.csv                file_name,xmin,ymin,xmax,ymax[,label] (see `pipeline.data.box_files`)

Symlinked class folders and image files are followed (with a guard against symlink loops). The classes are the sorted
names of the class folders found in any split (the torchvision/timm rule), or the `classes` given, which fixes their
order or takes a subset; a class folder that one split has and another lacks is named in a warning, and a class
folder outside `classes` is named and left out. An image's label is its class folder; a side-file box whose category
names another class is a bad box. An image without a side-file row is kept with no box: trained, scored for accuracy
and counted `unboxed` by the localization metrics. Only images with boxes have their header read (for the image size
the boxes are checked against); nothing else is opened while indexing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from pipeline.data.annotations import NO_BOX_LABELS, NO_BOXES, usable_objects
from pipeline.data.bad_samples import BadSampleError, OnBadSample
from pipeline.data.box_files import SIDE_FILES, ImageBoxes, category_name, read_box_file
from pipeline.data.decoding import image_paths, image_size, sub_folders
from pipeline.data.file_source import FileSource, SampleRecord
from pipeline.data.source import LayoutError

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


class ClassFolderSource(FileSource):
    """Images sorted into one folder per class, per split, with optional side-file boxes (see the module docstring).

    Args:
        root: the folder holding train/, val/ (and test/).
        classes: the class names in the order of the model's outputs; None: the sorted class folder names of all
            splits. A subset leaves the other folders out (named in a warning).
        box_file: per split, "auto" (metadata.jsonl or boxes.csv if the split folder holds one), "none" (no boxes),
            or a file name in each split folder (.jsonl: the Hugging Face convention; else CSV).
        on_bad_sample: "error" or "skip" (see `pipeline.data.bad_samples`).
    """

    layout = "a folder holding train/<class>/<images> and val/<class>/<images>"

    def __init__(
        self,
        root: str | Path,
        classes: list[str] | None = None,
        box_file: str = "auto",
        on_bad_sample: OnBadSample = "error",
    ):
        super().__init__(root, on_bad_sample)
        self.box_file = box_file
        self.split_dirs = self._split_dirs()
        folders = {split: self._class_folders(split_dir) for split, split_dir in self.split_dirs.items()}
        found = sorted(set().union(*folders.values()))
        if classes is not None and not classes:
            raise ValueError("ClassFolderSource: classes is empty; leave it out to use every class folder")
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError(f"ClassFolderSource: classes lists a name twice: {classes}")
        self.class_names = list(classes) if classes is not None else found
        if len(self.class_names) < 2:
            raise LayoutError(
                f"{self.root}: one class only ({self.class_names}); expected two or more class folders per split"
            )
        self._class_index = {name: index for index, name in enumerate(self.class_names)}
        self._warn_class_mismatch(folders)

    def _split_dirs(self) -> dict[str, Path]:
        """split -> its folder, for the splits present; a LayoutError when neither train nor val is there."""
        split_dirs = {}
        for split, names in SPLIT_FOLDERS.items():
            present = [self.root / name for name in names if (self.root / name).is_dir()]
            if len(present) > 1:
                raise LayoutError(f"{self.root} has {' and '.join(map(str, present))}: keep one folder for {split}")
            if present:
                split_dirs[split] = present[0]
        if not split_dirs:
            raise LayoutError(
                f"{self.root} has no train/ or val/ folder: expected {self.root}/train/<class>/<images> "
                f"and {self.root}/val/<class>/<images>"
            )
        return split_dirs

    @staticmethod
    def _class_folders(split_dir: Path) -> list[str]:
        folders = sub_folders(split_dir)
        if not folders:
            raise LayoutError(f"{split_dir} has no class folders: expected {split_dir}/<class>/<images>")
        return folders

    def _warn_class_mismatch(self, folders: dict[str, list[str]]) -> None:
        """Name every class a split lacks, and every folder that is not a class; never re-index silently."""
        for split, names in folders.items():
            missing = [name for name in self.class_names if name not in names]
            extra = [name for name in names if name not in self._class_index]
            if missing:
                warnings.warn(
                    f"{self.split_dirs[split]} has no folder for class(es) {missing}: {split} has no images of them",
                    UserWarning,
                    stacklevel=3,
                )
            if extra:
                warnings.warn(
                    f"{self.split_dirs[split]}: folder(s) {extra} are not in classes; their images are left out",
                    UserWarning,
                    stacklevel=3,
                )

    def _records(self, split: str) -> list[SampleRecord]:
        if split not in self.split_dirs:
            folders = " or ".join(f"{self.root}/{name}" for name in SPLIT_FOLDERS[split])
            raise LayoutError(f"no {split} split: expected {folders}/<class>/<images>")
        split_dir = self.split_dirs[split]
        side_file = self._side_file(split_dir)
        rows = read_box_file(side_file, self.bad_samples) if side_file else {}
        records = []
        for class_name, label in self._class_index.items():
            if not (split_dir / class_name).is_dir():
                continue
            prefix = len(str(split_dir)) + 1
            for image_path in image_paths(split_dir / class_name, recursive=True):  # strings: 10**6 files add up
                image_id = image_path[prefix:].replace(os.sep, "/")
                boxed = rows.pop(image_id, None)
                try:
                    records.append(self._record(image_path, image_id, label, boxed, side_file))
                except BadSampleError as error:
                    self.bad_samples.reject(error)
        for file_name, boxed in rows.items():  # rows no image of this split matched
            assert side_file is not None  # rows come from the side file
            if not self._left_out_on_purpose(split_dir / file_name):
                self.bad_samples.reject(
                    BadSampleError(side_file, f"{boxed.first_place}: {file_name} is not an image under {split_dir}")
                )
        return records

    def _side_file(self, split_dir: Path) -> Path | None:
        if self.box_file == "none":
            return None
        if self.box_file != "auto":
            path = split_dir / self.box_file
            if not path.is_file():
                raise LayoutError(f"{path} not found: box_file names a file in each split folder")
            return path
        present = [split_dir / name for name in SIDE_FILES if (split_dir / name).is_file()]
        if len(present) > 1:
            raise LayoutError(f"{split_dir} has both {SIDE_FILES}: keep one, or set box_file to the one to read")
        return present[0] if present else None

    def _left_out_on_purpose(self, path: Path) -> bool:
        """A row for an image whose class folder `classes` leaves out."""
        return path.is_file() and path.parent.name not in self._class_index

    def _record(
        self, image_path: str, image_id: str, label: int, boxed: ImageBoxes | None, side_file: Path | None
    ) -> SampleRecord:
        if boxed is None or not boxed.boxes:
            return SampleRecord(image_path, image_id, label, NO_BOXES, NO_BOX_LABELS)
        assert side_file is not None  # boxes come from the side file
        positions = []
        for position, (category, place) in enumerate(zip(boxed.categories, boxed.places)):
            named = category_name(category, self.class_names)
            if named is not None and named != self.class_names[label]:
                reason = f"{place}: category {category!r} is not the image's class {self.class_names[label]!r}"
                self.bad_samples.reject(BadSampleError(side_file, f"{image_id}: {reason}"))
            else:
                positions.append(position)
        if not positions:
            raise BadSampleError(side_file, f"{image_id}: no usable box left, so no sample")
        size = image_size(image_path)
        boxes, box_labels, _ = usable_objects(
            side_file,
            [label] * len(positions),
            np.array([boxed.boxes[p] for p in positions], np.float64).reshape(-1, 4),
            size,
            {label: label},
            self.bad_samples,
            context=image_id,
            positions=positions,
        )
        return SampleRecord(image_path, image_id, label, boxes, box_labels, size)
