"""Hugging Face datasets on disk (save_to_disk and parquet): ClassLabel names, hand-computed boxes, columns, splits."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.data import BadSampleError, HFDatasetSource, LayoutError
from tests.helpers.datasets import HF_CLASSES as CLASSES
from tests.helpers.datasets import write_hf

datasets = pytest.importorskip("datasets")


@pytest.mark.parametrize("parquet", [False, True])
def test_class_names_from_the_classlabel_and_boxes_as_xyxy(tmp_path, parquet):
    source = HFDatasetSource(write_hf(tmp_path / "hf", parquet=parquet))
    assert source.class_names == CLASSES and source.split_names == {"train": "train", "val": "validation"}
    val = source.dataset("val")
    records = val.records
    assert [record.target for record in records] == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(records[0].boxes, [[2, 3, 12.5, 11], [20, 1, 26, 7]])  # x + w, y + h
    assert records[0].image_size == (40, 28) and records[2].image_size is None  # headers of boxed rows only
    assert [len(record.boxes) for record in records] == [2, 1, 0, 0, 0, 0]  # unboxed rows kept
    sample = val[3]
    assert sample["image"].shape == (28, 46, 3) and sample["image"][0, 0].tolist() == [90, 90, 160]


def test_column_names_and_split_names_are_configurable(tmp_path):
    root = write_hf(tmp_path / "hf", image="img", label="fruit", objects="boxes", val_name="dev")
    with pytest.raises(LayoutError, match=re.escape("no column 'image'")):
        HFDatasetSource(root)
    source = HFDatasetSource(
        root, image_column="img", label_column="fruit", objects_column="boxes", split_names={"val": "dev"}
    )
    assert len(source.dataset("val")) == 6 and len(source.dataset("val").records[0].boxes) == 2
    without_boxes = HFDatasetSource(root, image_column="img", label_column="fruit", objects_column=None)
    assert without_boxes.split_names == {"train": "train"}
    assert all(len(record.boxes) == 0 for record in without_boxes.dataset("train").records)


def test_unreadable_layouts_and_bad_rows(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="holds no Hugging Face dataset: expected a save_to_disk folder"):
        HFDatasetSource(tmp_path / "empty")
    root = write_hf(tmp_path / "hf")
    with pytest.raises(LayoutError, match=re.escape("no test split")):
        HFDatasetSource(root).dataset("test")
    rows = datasets.load_from_disk(str(root))
    bad = rows["train"].map(lambda row, i: {"objects": {"bbox": [[30.0, 0, 4, 4]], "category": [1]}} if i == 0 else row,
                            with_indices=True)  # fmt: skip
    datasets.DatasetDict({"train": bad}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(BadSampleError, match=re.escape("train row 0, object 0: category 1 is not the row's label")):
        HFDatasetSource(tmp_path / "bad").dataset("train")
    source = HFDatasetSource(tmp_path / "bad", on_bad_sample="skip")
    with pytest.warns(UserWarning, match="train row 0"):
        assert len(source.dataset("train")) == 5 and len(source.skipped) == 1
