"""`agcam fit` end to end on the shapes data: summary, offline W&B history, checkpoints, resume, bad configs."""

import json
import re
from pathlib import Path

import pytest
import torch
import wandb

from pipeline.cli import main
from tests.helpers.wandb_offline import history, metric_by_epoch

REPO = Path(__file__).resolve().parents[2]
BASE = ["--config", str(REPO / "configs/synthetic.yaml"), "--config", str(REPO / "tests/configs/tiny.yaml")]


def fit(tmp_path: Path, *extra: str) -> dict:
    """Run `agcam fit` on the tiny config with W&B offline under tmp_path; return its summary.json."""
    main(["fit", *BASE, "--trainer.logger.init_args.save_dir", str(tmp_path), *extra])
    wandb.finish()  # flush the offline run file (a CLI process does this at exit)
    summaries = sorted(tmp_path.glob("agcam/*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(summaries[-1].read_text())


@pytest.mark.slow
def test_fit_writes_summary_checkpoints_and_offline_wandb_history(tmp_path, capsys):
    summary = fit(tmp_path, "--trainer.max_epochs", "2")

    assert summary["epochs"] == 2 and summary["global_step"] == 2 * 8  # 256 images / batch 32
    assert Path(summary["last_checkpoint"]).name == "last.ckpt" and Path(summary["best_checkpoint"]).is_file()
    last = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert last["global_step"] == summary["global_step"]  # the final state, whichever epoch was best
    metrics = summary["metrics"]
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert metrics["val/loc/agcam/cases"] + metrics["val/loc/agcam/skipped"] == 64  # every val image is one case
    assert "val/loc/agcam/iou" in metrics or metrics["val/loc/agcam/cases"] == 0
    assert "Run finished after 2 epochs" in capsys.readouterr().out

    rows = history(Path(summary["wandb_run_dir"]))
    assert set(metric_by_epoch(rows, "val/acc")) == {0, 1}
    assert set(metric_by_epoch(rows, "val/loc/agcam/cases")) == {0, 1}
    panels = [row for row in rows if "val/panel/agcam/count" in row]
    assert [row["val/panel/agcam/count"] for row in panels] == [8, 8]  # the panel, once per epoch
    assert all(row["val/panel/agcam/_type"] == "images/separated" for row in panels)
    captions = [row["val/panel/agcam/captions"] for row in panels]
    assert [c.split(":")[0] for c in captions[0]] == [c.split(":")[0] for c in captions[1]]  # the same images
    assert any("train/loss" in row for row in rows)


@pytest.mark.slow
def test_resume_continues_epoch_step_optimizer_scheduler_and_wandb_run(tmp_path):
    first = fit(tmp_path, "--trainer.max_epochs", "1")
    steps_per_epoch = first["global_step"]
    resumed = fit(tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", first["last_checkpoint"])

    assert resumed["epochs"] == 2 and resumed["global_step"] == 2 * steps_per_epoch
    # the resumed process trained the second epoch only: its own W&B records start at the checkpoint's step
    first_id = Path(first["wandb_run_dir"]).name.split("-")[-1]
    resumed_dir = Path(resumed["wandb_run_dir"])
    assert resumed_dir != Path(first["wandb_run_dir"])
    assert re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{first_id}(-\d+)?", resumed_dir.name)  # the same W&B run id
    resumed_rows = history(resumed_dir)
    trained_steps = [row["trainer/global_step"] for row in resumed_rows if "train/loss" in row]
    assert trained_steps and min(trained_steps) >= steps_per_epoch
    assert set(metric_by_epoch(resumed_rows, "val/acc")) == {1}
    # optimizer and scheduler state came back: AdamW counts steps per parameter, the schedule its steps;
    # fresh ones would stand at one epoch's worth
    checkpoint = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 * steps_per_epoch and checkpoint["wandb_run_id"] == first_id
    optimizer_steps = {float(state["step"]) for state in checkpoint["optimizer_states"][0]["state"].values()}
    assert optimizer_steps == {2.0 * steps_per_epoch}
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 2 * steps_per_epoch


@pytest.mark.slow
def test_csv_logger_instead_of_wandb_writes_metrics_and_panel_pngs(tmp_path):
    csv_config = tmp_path / "csv.yaml"
    csv_config.write_text(
        "trainer:\n  logger:\n    class_path: pytorch_lightning.loggers.CSVLogger\n"
        f"    init_args:\n      save_dir: {tmp_path}\n      name: csvrun\n"
    )
    main(["fit", *BASE, "--config", str(csv_config)])
    (metrics_file,) = tmp_path.glob("csvrun/version_0/metrics.csv")
    header = metrics_file.read_text().splitlines()[0].split(",")
    assert {"val/loc/agcam/cases", "val/loc/agcam/skipped", "val/acc"} <= set(header)
    pngs = sorted(tmp_path.glob("csvrun/version_0/panels/val-epoch000/agcam/*.png"))
    assert len(pngs) == 8
    assert not list(tmp_path.glob("wandb"))


def test_unknown_model_name_fails_before_training_with_a_suggestion(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *BASE, "--model.model_name", "vit_tiny_patch16_2244", "--trainer.logger", "false"])
    assert exit_info.value.code == 2
    assert re.search(r"Unknown timm model 'vit_tiny_patch16_2244'.*vit_tiny_patch16_224", capsys.readouterr().err)


@pytest.mark.parametrize(
    "setting, message",
    [
        (["--model.model_name=resnet18", "--model.model_kwargs={}"], "'resnet18' cannot be explained"),
        (["--model.guidance_weight=autoo"], "guidance_weight must be a number >= 0 or 'auto', got 'autoo'"),
        (["--model.guidance_weight=-1"], "guidance_weight must be a number >= 0 or 'auto', got -1"),
    ],
)
def test_a_refused_setting_is_one_line_naming_it(tmp_path, capsys, setting, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *BASE, *setting, "--trainer.logger=false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("agcam fit: error: ") and message in err


def test_missing_local_weights_file_is_named(tmp_path, capsys):
    missing = tmp_path / "weights.safetensors"
    with pytest.raises(SystemExit) as exit_info:  # an OS error: one line, exit code 2
        main(["fit", *BASE, "--model.weights_path", str(missing), "--trainer.logger", "false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "weights.safetensors' does not exist" in err


def test_unreadable_config_key_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *BASE, "--model.learning_rate", "0.1"])
    assert "learning_rate" in capsys.readouterr().err


def test_resuming_from_a_file_that_is_no_checkpoint_names_it_before_anything_is_built(tmp_path, capsys):
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:  # one line, exit code 2
        main(["fit", *BASE, "--trainer.logger.init_args.save_dir", str(tmp_path), "--ckpt_path", str(foreign)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"agcam fit: error: {foreign}: not a checkpoint")
    assert not list(tmp_path.glob("agcam/*"))  # no run folder, no W&B run


def test_a_sharded_checkpoint_with_a_damaged_meta_file_is_named_in_one_line(tmp_path, capsys):
    sharded = tmp_path / "last.ckpt"  # ModelParallelStrategy's layout: a folder of shards and meta.pt
    sharded.mkdir()
    (sharded / "meta.pt").write_bytes(b"\x80\x02 not a pickle")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *BASE, "--trainer.logger.init_args.save_dir", str(tmp_path), "--ckpt_path", str(sharded)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"agcam fit: error: {sharded / 'meta.pt'}: ") and "Traceback" not in err


def test_the_training_help_points_to_the_offline_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "Explained checkpoints: agcam {export,explain,evaluate} --help" in capsys.readouterr().out
