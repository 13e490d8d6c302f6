"""DDP on CPU (two gloo processes): the same localization metrics and case counts as one process, panel logged once."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb

from pipeline.cli import main
from tests.helpers.wandb_offline import history

REPO = Path(__file__).resolve().parents[2]
BASE = ["--config", str(REPO / "configs/synthetic.yaml"), "--config", str(REPO / "tests/configs/tiny.yaml")]
SUBPROCESS_TIMEOUT = 1800  # seconds: generous, a busy 2-core CI machine is slow; only a hang should hit it
VAL_SIZE = "61"  # odd on purpose: two processes must not pad it with repeated samples


def run_in_subprocess(save_dir: Path, devices: int, *args: str) -> list[dict]:
    """`python -m pipeline ...` (Lightning's DDP launcher re-runs this command in a second process); W&B history."""
    command = [
        sys.executable, "-m", "pipeline", *args, *BASE,
        "--data.source.init_args.val_size", VAL_SIZE,
        "--trainer.accelerator", "cpu",
        "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.logger.init_args.save_dir", str(save_dir),
    ]  # fmt: skip
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
    env = {**inherited, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run_dir,) = save_dir.glob("wandb/offline-run-*")
    return history(run_dir)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_validation_equals_single_process(tmp_path):
    main(["fit", *BASE, "--trainer.logger.init_args.save_dir", str(tmp_path / "fit")])
    wandb.finish()
    (checkpoint,) = tmp_path.glob("fit/agcam/*/checkpoints/last.ckpt")

    # one image per batch in both runs: the same kernels see the same shapes, so no pixel can cross the threshold
    # through batch-size-dependent rounding, and any difference is the synchronization's
    one_per_batch = ["--ckpt_path", str(checkpoint), "--data.eval_batch_size", "1"]
    single = run_in_subprocess(tmp_path / "single", 1, "validate", *one_per_batch)
    double = run_in_subprocess(tmp_path / "ddp", 2, "validate", *one_per_batch)

    def localization(rows):
        (row,) = [row for row in rows if "val/loc/agcam/cases" in row]
        scalars = {key: value for key, value in row.items() if isinstance(value, (int, float))}
        return {key: value for key, value in scalars.items() if key.startswith("val/loc/")}

    single_metrics, ddp_metrics = localization(single), localization(double)
    assert single_metrics["val/loc/agcam/cases"] + single_metrics["val/loc/agcam/skipped"] == int(VAL_SIZE)
    assert single_metrics["val/loc/agcam/cases"] > 0
    assert single_metrics.keys() == ddp_metrics.keys()
    for key, value in single_metrics.items():
        assert ddp_metrics[key] == pytest.approx(value, abs=1e-6), key
    panel_rows = [row for row in double if "val/panel/agcam/count" in row]
    assert len(panel_rows) == 1 and panel_rows[0]["val/panel/agcam/count"] == 8  # rank zero only, once


@pytest.mark.ddp
@pytest.mark.slow
def test_guided_training_runs_under_ddp_in_mixed_precision(tmp_path):
    rows = run_in_subprocess(
        tmp_path, 2, "fit", "--model.guidance_weight", "auto", "--trainer.precision", "bf16-mixed",
        "--trainer.limit_train_batches", "3", "--trainer.log_every_n_steps", "1",
    )  # fmt: skip
    losses = [row["train/guidance_loss"] for row in rows if "train/guidance_loss" in row]
    assert losses and all(math.isfinite(loss) and loss >= 0.0 for loss in losses)  # context swap's cross-entropy
    weights = [row["train/guidance_weight"] for row in rows if "train/guidance_weight" in row]
    assert weights and all(1.0 <= weight <= 100.0 for weight in weights)  # the auto rule's bounds
    (epoch,) = [row for row in rows if "train/guided_images" in row]
    assert epoch["train/guided_images"] + epoch["train/unguided_images"] > 0
    assert any("val/loc/agcam/mass_in_box" in row for row in rows)


@pytest.mark.ddp
def test_ddp_bf16_callback_explains_from_the_validation_forward(tmp_path):
    def validate(devices: int, precision: str, mode: str) -> list[dict]:
        out = tmp_path / f"{devices}-{precision}-{mode}"
        out.mkdir()
        command = [sys.executable, "-m", "tests.helpers.ddp_validate", str(out), str(devices), precision, mode]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
        completed = subprocess.run(
            command, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        return [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]

    (today,) = validate(1, "32", "separate")  # the explainer's own forward after the validation step's
    assert today["forwards"] == 2 * today["batches"] == 32 and today["metrics"]["val/loc/agcam/cases"] > 0
    ranks = validate(2, "bf16-mixed", "record")
    assert len(ranks) == 2
    for rank in ranks:
        assert rank["forwards"] == rank["batches"] == 8  # one forward per batch on each process
        assert rank["metrics"].keys() == today["metrics"].keys()
        for key, value in today["metrics"].items():
            assert rank["metrics"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.ddp
@pytest.mark.slow
def test_sigterm_to_both_ddp_processes_saves_the_step_and_resumes_to_the_uninterrupted_end(tmp_path):
    """A scheduler's SIGTERM reaches every process of the job: both stop at the same step, one checkpoint is
    written, and resuming from it ends where an uninterrupted two-process fit ends."""
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1"]
    sigterm = ["--trainer.callbacks+=tests.helpers.interrupt.SignalAt", "--trainer.callbacks.step=2",
               "--trainer.callbacks.process_group=true"]  # fmt: skip

    def fit(save_dir: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "pipeline", "fit", *BASE, *short, "--trainer.accelerator", "cpu",
            "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.logger.init_args.save_dir",
            str(save_dir), *extra,
        ]  # fmt: skip
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
        env = {**inherited, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        return subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
            start_new_session=True,  # the signal goes to the job's process group, not to pytest's
        )  # fmt: skip

    def summary(save_dir: Path) -> dict:
        (path,) = save_dir.glob("agcam/*/summary.json")
        return json.loads(path.read_text())

    stopped = fit(tmp_path / "stopped", *sigterm)
    assert stopped.returncode == 128 + 15 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    (checkpoint,) = (tmp_path / "stopped").glob("agcam/*/checkpoints/preempted.ckpt")
    assert stopped.stdout.count("SIGTERM: stopped at epoch 0, step 2; saved") == 1  # rank zero says it, once
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2

    resumed = fit(tmp_path / "stopped", "--ckpt_path", str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = fit(tmp_path / "uninterrupted")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    ended, expected = summary(tmp_path / "stopped"), summary(tmp_path / "uninterrupted")
    assert ended["global_step"] == expected["global_step"] == 4
    val = {name: value for name, value in expected["metrics"].items() if name.startswith("val/")}
    assert len(val) > 5
    for name, value in val.items():
        assert ended["metrics"][name] == pytest.approx(value, abs=1e-6), name
