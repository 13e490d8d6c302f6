"""LocalizationCallback on class-ordered data: max_images covers every class, the same images every epoch; the panel
spreads over classes; max_batches says when it truncates; per-class results reach summary.json and a CSV."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from pipeline.data import ClassFolderSource
from pipeline.data.selection import class_round_robin
from pipeline.lightning import LocalizationCallback, RunSummary, ViTClassifier, ViTDataModule
from tests.helpers.datasets import write_class_tree
from tests.helpers.ddp_selection import MAX_IMAGES, RecordingCallback

REPO = Path(__file__).resolve().parents[2]

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


def class_tree_run(tmp_path, callback, **trainer_options):
    write_class_tree(tmp_path / "data", classes=4, per_class=4)
    source = ClassFolderSource(tmp_path / "data")
    data = ViTDataModule(source, batch_size=8, eval_batch_size=4, num_workers=0)
    model = ViTClassifier("vit_tiny_patch16_224", 4, class_names=source.class_names, model_kwargs=TINY_VIT)
    options = dict(max_epochs=2, limit_train_batches=1, accelerator="cpu", enable_progress_bar=False)
    options.update(enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    options.update(trainer_options)
    trainer = pl.Trainer(callbacks=[callback, RunSummary()], **options)
    trainer.fit(model, data)
    return trainer


def test_max_images_covers_every_class_the_same_images_every_epoch_and_the_panel_spreads(tmp_path):
    callback = RecordingCallback(max_images=8, panel_size=4)
    trainer = class_tree_run(tmp_path, callback, logger=pl.loggers.CSVLogger(tmp_path, name="run"))
    first, second = callback.explained_per_epoch
    assert sorted(first) == sorted(second) and len(first) == 8  # chosen once
    assert sorted(image_id.split("/")[0] for image_id in first) == [f"class_{k}" for k in range(4) for _ in "ab"]
    panel_classes = [entry.image_id.split("/")[0] for entry in callback.panel.entries]
    assert panel_classes == ["class_0", "class_1", "class_2", "class_3"]  # round-robin, not the first 4 images
    assert trainer.callback_metrics["val/loc/agcam/cases"] + trainer.callback_metrics["val/loc/agcam/skipped"] == 8

    summary = RunSummary.collect(trainer)
    assert summary["data"]["val"] == {
        "images": 16, "with_boxes": 16, "unboxed": 0, "note": "val: 16 images, all with boxes"
    }  # fmt: skip
    per_class = summary["per_class"]["val"]["agcam"]
    assert sum(row["cases"] for row in per_class.values()) == trainer.callback_metrics["val/loc/agcam/cases"]
    with (tmp_path / "run" / "version_0" / "val_per_class.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {row["epoch"] for row in rows} == {"0", "1"} and {row["method"] for row in rows} == {"agcam"}
    last_epoch = {row["class"]: float(row["iou"]) for row in rows if row["epoch"] == "1"}
    assert last_epoch == pytest.approx({name: scores["iou"] for name, scores in per_class.items()})


def test_max_batches_warns_that_it_truncates_the_split(tmp_path):
    callback = RecordingCallback(max_batches=1, panel_size=0)
    with pytest.warns(UserWarning, match="max_batches=1 explains 1 of 4 validation batches"):
        class_tree_run(tmp_path, callback, max_epochs=1, logger=False)
    assert [image_id.split("/")[0] for image_id in callback.explained_per_epoch[0]] == ["class_0"] * 4


def test_selection_is_a_seeded_class_round_robin():
    classes = [0] * 6 + [1] * 3 + [2] * 1
    order = class_round_robin(classes, seed=3)
    assert sorted(order) == list(range(10)) and order == class_round_robin(classes, seed=3)
    assert [classes[i] for i in order[:3]] == [0, 1, 2] and [classes[i] for i in order[3:5]] == [0, 1]
    assert order != class_round_robin(classes, seed=4)


def test_max_images_and_max_batches_exclude_each_other():
    with pytest.raises(ValueError, match="give max_images or max_batches, not both"):
        LocalizationCallback(max_images=4, max_batches=2)
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        LocalizationCallback(max_images=0)


@pytest.mark.ddp
@pytest.mark.slow
def test_max_images_is_split_between_ddp_processes_without_overlap(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
    command = [sys.executable, "-m", "tests.helpers.ddp_selection", str(tmp_path)]
    completed = subprocess.run(
        command, cwd=REPO, env={**environment, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=1800
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert rank0[0] == rank0[1] and rank1[0] == rank1[1]  # the same images every epoch
    assert not set(rank0[0]) & set(rank1[0])  # disjoint
    explained = sorted(rank0[0] + rank1[0])
    assert len(explained) == MAX_IMAGES
    assert {image_id.split("/")[0] for image_id in explained} == {f"class_{k}" for k in range(4)}
    records = ClassFolderSource(tmp_path / "data").dataset("val").records
    order = class_round_robin([record.target for record in records])
    assert explained == sorted(records[index].image_id for index in order[:MAX_IMAGES])  # what one process picks
