"""One tiny `agcam fit` per real dataset format, through the CLI with the shipped dataset configs, on fixtures
written in each format's on-disk layout: it trains, validates, explains every (image, class) case of the val split
with AG-CAM, and the labels and classes reach the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.data.voc import VOC_CLASSES
from tests.helpers.datasets import (
    COCO_CATEGORIES,
    CUB_CLASSES,
    IMAGENET_SYNSETS,
    FixtureSample,
    write_coco,
    write_cub,
    write_imagenet,
    write_voc,
)

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LOCALIZATION = "val/loc/agcam"
LOCALIZATION_SCORES = ("pixel_accuracy", "iou", "dice", "precision", "recall", "pointing_game")
TINY_RUN = [
    "--model.model_name=vit_tiny_patch16_224",
    "--model.pretrained=false",
    "--model.model_kwargs={img_size: 32, patch_size: 8, embed_dim: 64, depth: 2, num_heads: 2}",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.num_workers=0",
    "--data.batch_size=4",
    "--data.eval_batch_size=2",  # several val batches: the localization counts add up across them
]


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset config, the fixture it runs on, and what the fit must show."""

    config: str
    write: Callable[[Path], dict[str, FixtureSample]]
    source_args: Callable[[Path], list[str]]  # CLI overrides pointing the source at the fixture root
    val_split: str  # the fixture split that validation reads
    class_names: list[str]  # in class-index order
    multi_label: bool = False


def root_at(root: Path) -> list[str]:
    return [f"--data.source.init_args.root={root}"]


def coco_files_at(root: Path) -> list[str]:
    return [
        f"--data.source.init_args.image_root={root / 'images'}",
        f"--data.source.init_args.train_json={root / 'annotations' / 'train.json'}",
        f"--data.source.init_args.val_json={root / 'annotations' / 'val.json'}",
    ]


FORMATS = {
    "imagenet": DatasetFormat(
        "imagenet.yaml", write_imagenet, root_at, "val", [names for _, names in IMAGENET_SYNSETS]
    ),
    "voc": DatasetFormat("voc.yaml", write_voc, root_at, "val", list(VOC_CLASSES), multi_label=True),
    # CUB has train/test only: validation reads the test split
    "cub": DatasetFormat("cub.yaml", write_cub, root_at, "test", [name.split(".")[1] for name in CUB_CLASSES]),
    # categories in increasing id order
    "coco": DatasetFormat(
        "coco.yaml",
        write_coco,
        coco_files_at,
        "val",
        [c["name"] for c in sorted(COCO_CATEGORIES, key=lambda c: c["id"])],
    ),
}


def expected_cases(samples: dict[str, FixtureSample], split: str, multi_label: bool) -> int:
    """Localization cases of a split: one per image (its label), or one per (image, present non-difficult class)."""
    split_samples = [sample for sample in samples.values() if sample.split == split]
    if multi_label:
        return sum(len({obj.label for obj in sample.objects if not obj.difficult}) for sample in split_samples)
    return len(split_samples)


def fit(tmp_path: Path, dataset: DatasetFormat, logger_args: list[str]) -> tuple[dict, dict]:
    """Write the fixture, run `agcam fit` on it, and return the run's summary.json and its last checkpoint."""
    root = tmp_path / "dataset"
    samples = dataset.write(root)
    args = [
        "fit",
        f"--config={CONFIGS / 'synthetic.yaml'}",
        f"--data={CONFIGS / 'data' / dataset.config}",
        *logger_args,
        *dataset.source_args(root),
        *TINY_RUN,
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    main(args)
    (summary_path,) = (tmp_path / "run").rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    checkpoint = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    summary["expected_cases"] = expected_cases(samples, dataset.val_split, dataset.multi_label)
    return summary, checkpoint


def check_fit(summary: dict, checkpoint: dict, dataset: DatasetFormat) -> None:
    """The run trained, explained every val case, and carried the dataset's classes and label mode to the model."""
    metrics = summary["metrics"]
    assert summary["epochs"] == 1 and summary["global_step"] >= 1
    assert summary["skipped_samples"] == 0
    assert {"train/loss", "val/loss", "val/acc"} <= set(metrics)
    localized = metrics[f"{LOCALIZATION}/cases"] + metrics[f"{LOCALIZATION}/skipped"]
    assert localized == summary["expected_cases"] > 0
    assert metrics[f"{LOCALIZATION}/unboxed"] == 0
    scored = metrics[f"{LOCALIZATION}/cases"] > 0  # means exist only over correctly classified cases, never as NaN
    for score in LOCALIZATION_SCORES:
        assert (f"{LOCALIZATION}/{score}" in metrics) is scored
        assert not scored or 0.0 <= metrics[f"{LOCALIZATION}/{score}"] <= 1.0
    hparams = checkpoint["hyper_parameters"]
    assert hparams["class_names"] == dataset.class_names
    assert hparams["num_classes"] == len(dataset.class_names)
    assert hparams["multi_label"] is dataset.multi_label
    assert checkpoint["state_dict"]["model.head.weight"].shape[0] == len(dataset.class_names)


def csv_logger(tmp_path: Path) -> list[str]:
    return [f"--config={CONFIGS / 'csv.yaml'}", f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}"]


@pytest.mark.parametrize("name", ["imagenet", "cub", "coco"])
def test_single_label_dataset_fits_and_localizes_every_val_image(tmp_path: Path, name: str) -> None:
    dataset = FORMATS[name]
    summary, checkpoint = fit(tmp_path, dataset, csv_logger(tmp_path))
    check_fit(summary, checkpoint, dataset)
    assert "val/mAP" not in summary["metrics"]


def test_voc_fits_multi_label_and_localizes_each_present_class(tmp_path: Path) -> None:
    """The default W&B logger (offline) and the multi-label path: BCE, mAP, one case per present class."""
    dataset = FORMATS["voc"]
    summary, checkpoint = fit(tmp_path, dataset, [f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}"])
    check_fit(summary, checkpoint, dataset)
    assert 0.0 <= summary["metrics"]["val/mAP"] <= 1.0
    # BCE per class of a barely trained model is about log(2); cross-entropy over 20 classes would be about 3
    assert summary["metrics"]["val/loss"] < 1.0
    assert summary["wandb_run_dir"] is not None
