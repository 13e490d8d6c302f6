"""DDP on CPU (two gloo processes): the same localization metrics and case counts as one process, panel logged once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
from wandb_offline import history

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
BASE = ["--config", str(REPO / "configs/synthetic.yaml"), "--config", str(REPO / "tests/configs/tiny.yaml")]
VAL_SIZE = "61"  # odd on purpose: two processes must not pad it with repeated samples


def validate_in_subprocess(save_dir: Path, checkpoint: str, devices: int) -> dict:
    """`python -m pipeline validate` (Lightning's DDP launcher re-runs this command in a second process)."""
    command = [
        sys.executable, "-m", "pipeline", "validate", *BASE,
        "--ckpt_path", checkpoint,
        "--data.source.init_args.val_size", VAL_SIZE,
        "--trainer.accelerator", "cpu",
        "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.logger.init_args.save_dir", str(save_dir),
    ]  # fmt: skip
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
    env = {**inherited, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run_dir,) = save_dir.glob("wandb/offline-run-*")
    return history(run_dir)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_validation_equals_single_process(tmp_path):
    main(["fit", *BASE, "--trainer.logger.init_args.save_dir", str(tmp_path / "fit")])
    wandb.finish()
    (checkpoint,) = tmp_path.glob("fit/agcam/*/checkpoints/last.ckpt")

    single = validate_in_subprocess(tmp_path / "single", str(checkpoint), devices=1)
    double = validate_in_subprocess(tmp_path / "ddp", str(checkpoint), devices=2)

    def localization(rows):
        (row,) = [row for row in rows if "val/loc/agcam/cases" in row]
        return {key: value for key, value in row.items() if key.startswith("val/loc/")}

    single_metrics, ddp_metrics = localization(single), localization(double)
    assert single_metrics["val/loc/agcam/cases"] + single_metrics["val/loc/agcam/skipped"] == int(VAL_SIZE)
    assert single_metrics["val/loc/agcam/cases"] > 0
    assert single_metrics.keys() == ddp_metrics.keys()
    for key, value in single_metrics.items():
        assert ddp_metrics[key] == pytest.approx(value, abs=1e-6), key
    panel_rows = [row for row in double if "val/panel/agcam/count" in row]
    assert len(panel_rows) == 1 and panel_rows[0]["val/panel/agcam/count"] == 8  # rank zero only, once
