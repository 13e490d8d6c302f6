"""A user's own data through the CLI: class folders (with a side file of boxes or none), bad layouts, `agcam data`."""

import json
from pathlib import Path

import pytest
import wandb

from pipeline.cli import main
from pipeline.commands.cli import run_command
from tests.helpers.datasets import write_class_folders, write_class_tree, write_hf
from tests.helpers.wandb_offline import read_records

REPO = Path(__file__).resolve().parents[2]
IMAGEFOLDER = ["--config", str(REPO / "configs/synthetic.yaml"), "--data", str(REPO / "configs/data/imagefolder.yaml")]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: (root / "train").mkdir(), "{root}/train has no class folders: expected {root}/train/<class>"),
        (lambda root: None, "{root} has no train/ or val/ folder: expected {root}/train/<class>/<images>"),
    ],
)
def test_an_unreadable_layout_is_one_line_before_any_run_folder(tmp_path, capsys, make, expected):
    root, runs = tmp_path / "data", tmp_path / "runs"
    root.mkdir()
    make(root)
    args = ["--data.source.init_args.root", str(root), "--trainer.logger.init_args.save_dir", str(runs)]
    with pytest.raises(SystemExit) as exited:
        main(["fit", *IMAGEFOLDER, *args])
    assert exited.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("agcam: error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(f"agcam: error: {expected.format(root=root)}")
    assert not runs.exists() and not (Path.cwd() / "wandb").exists()


def fit_summary(tmp_path: Path, *args: str) -> dict:
    """`agcam fit` on the tiny test model with the given data arguments; its summary.json."""
    tiny = ["--config", str(REPO / "tests/configs/tiny.yaml")]
    main(["fit", *IMAGEFOLDER[:2], *tiny, *args, "--data.num_workers", "0", "--data.batch_size", "8",
          "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])  # fmt: skip
    wandb.finish()
    (summary,) = (tmp_path / "runs").glob("**/summary.json")
    return json.loads(summary.read_text())


@pytest.mark.slow
def test_box_less_val_split_says_localization_is_not_scored_and_still_draws_panels(tmp_path, capsys):
    write_class_tree(tmp_path / "data", classes=3, per_class=3, boxed=False)
    summary = fit_summary(
        tmp_path, "--data", str(REPO / "configs/data/imagefolder.yaml"),
        "--data.source.init_args.root", str(tmp_path / "data"), "--config", str(REPO / "configs/csv.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    )  # fmt: skip
    note = "val: 9 images, 0 with boxes: localization not scored"
    assert summary["data"]["val"]["note"].startswith(note) and summary["data"]["val"]["unboxed"] == 9
    assert note in capsys.readouterr().out
    assert summary["metrics"]["val/loc/agcam/unboxed"] == 9 and summary["metrics"]["val/loc/agcam/cases"] == 0
    assert len(list((tmp_path / "runs").glob("**/panels/val-epoch000/agcam/*.png"))) == 8


@pytest.mark.slow
def test_hugging_face_dataset_on_disk_fits_for_an_epoch(tmp_path):
    pytest.importorskip("datasets")
    root = write_hf(tmp_path / "hf")
    summary = fit_summary(
        tmp_path, "--data", str(REPO / "configs/data/hf.yaml"), "--data.source.init_args.path", str(root)
    )
    assert summary["epochs"] == 1 and summary["global_step"] == 1  # 6 train rows, batch 8
    assert summary["data"]["val"] == {
        "images": 6, "with_boxes": 2, "unboxed": 4,
        "note": "val: 6 images, 2 with boxes: localization scored on those, 4 unboxed",
    }  # fmt: skip
    metrics = summary["metrics"]
    assert metrics["val/loc/agcam/cases"] + metrics["val/loc/agcam/skipped"] == 2
    assert metrics["val/loc/agcam/unboxed"] == 4
    (run_file,) = Path(summary["wandb_run_dir"]).glob("run-*.wandb")
    stated = {
        update.key: json.loads(update.value_json)
        for record in read_records(run_file)
        if record.WhichOneof("record_type") == "summary"
        for update in record.summary.update
    }
    assert stated["data/val/note"] == summary["data"]["val"]["note"] and stated["data/val/unboxed"] == 4


def test_data_command_reports_every_split_and_names_bad_files(tmp_path, capsys):
    write_class_folders(tmp_path, "jsonl")
    metadata = tmp_path / "val" / "metadata.jsonl"
    missing = [{"file_name": f"cat/missing{i}.jpg", "objects": {"bbox": [[1, 1, 4, 4]]}} for i in range(7)]
    metadata.write_text(metadata.read_text() + "".join(json.dumps(row) + "\n" for row in missing))
    (tmp_path / "train" / "dog" / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")  # kept: read fails later
    code = run_command(["data", "--data", str(REPO / "configs/data/imagefolder.yaml"),
                        "--data.source.init_args.root", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2
    assert "train: 5 images" in out and "val: 3 images" in out
    assert "classes: 3, images per class 1 (fox) .. 2 (dog)" in out  # the broken link counts until it is read
    assert "boxes: 3 images, 2 with boxes: localization scored on those, 1 unboxed" in out
    assert "width 60..80 px, height 50..90 px" in out  # headers of the two boxed val images
    assert "bad: 7" in out and "cat/missing0.jpg is not an image under" in out and "... and 2 more" in out
    assert "test: no test split: expected" in out
    clean = run_command(["data", "--data", str(REPO / "configs/data/shapes.yaml"), "--splits", "[val]"])
    assert clean == 0 and "val: 512 images" in capsys.readouterr().out
