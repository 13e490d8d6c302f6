"""`agcam fit` interrupted: kill -9, SIGUSR1 to the process group, SLURM requeue, SIGTERM, two fits in one save_dir.

The interrupted runs are real `python -m pipeline fit` processes; the resumed runs must end exactly where the
uninterrupted run (the same config, in this process) ends: every validation metric within 1e-6, the
LocalizationWatch history, one W&B run id with a continuous `_step`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb
import yaml

from pipeline.cli import main
from pipeline.explained import read_card
from pipeline.lightning.wandb_offline import read_records
from tests.helpers.wandb_offline import history

REPO = Path(__file__).resolve().parents[2]
BASE = ["--config", str(REPO / "configs/synthetic.yaml"), "--config", str(REPO / "tests/configs/tiny.yaml")]
BASE += ["--trainer.max_epochs", "2", "--trainer.num_sanity_val_steps", "0"]
BASE += ["--data.source.init_args.train_size", "128"]  # 4 steps per epoch, 8 in all
BASE += ["--trainer.callbacks+=pipeline.lightning.LocalizationWatch"]
INTERRUPT = "tests.helpers.interrupt"

pytestmark = pytest.mark.slow


def fit_here(save_dir: Path, *extra: str) -> dict:
    """`agcam fit` in this process; its summary.json."""
    main(["fit", *BASE, "--trainer.logger.init_args.save_dir", str(save_dir), *extra])
    wandb.finish()
    newest = max(save_dir.glob("agcam/*/summary.json"), key=lambda path: path.stat().st_mtime_ns)
    return json.loads(newest.read_text())


def process_env() -> dict[str, str]:
    """This environment without this process's W&B service (a child would log through it and share its runs)."""
    env = {name: value for name, value in os.environ.items() if name != "WANDB_SERVICE"}
    return env | {"PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}


def fit_process(save_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`python -m pipeline fit` as its own process group (as a scheduler starts a job)."""
    env = process_env()
    argv = [sys.executable, "-m", "pipeline", "fit", *BASE, "--trainer.logger.init_args.save_dir", str(save_dir)]
    return subprocess.run(
        [*argv, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, start_new_session=True
    )


def val_metrics(summary: dict) -> dict[str, float]:
    return {name: value for name, value in summary["metrics"].items() if name.startswith("val/")}


def watch_history(checkpoint: Path) -> list[float]:
    """LocalizationWatch's (accuracy, localization) per validation epoch in `checkpoint`, flattened."""
    callbacks = torch.load(checkpoint, weights_only=True)["callbacks"]
    (state,) = [state for key, state in callbacks.items() if key.startswith("LocalizationWatch")]
    return [value for pair in state["history"] for value in pair]


def assert_same_run_end(resumed: dict, uninterrupted: dict) -> None:
    assert resumed["global_step"] == uninterrupted["global_step"] == 8
    expected = val_metrics(uninterrupted)
    assert set(val_metrics(resumed)) == set(expected) and len(expected) > 5
    for name, value in val_metrics(resumed).items():
        assert value == pytest.approx(expected[name], abs=1e-6), name
    assert watch_history(Path(resumed["last_checkpoint"])) == pytest.approx(
        watch_history(Path(uninterrupted["last_checkpoint"])), abs=1e-6
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return fit_here(tmp_path_factory.mktemp("uninterrupted"))


def test_kill_9_after_an_epoch_then_resume_gives_the_uninterrupted_run(uninterrupted, tmp_path):
    killed = fit_process(tmp_path, f"--trainer.callbacks+={INTERRUPT}.KillAt", "--trainer.callbacks.epoch=1")
    assert killed.returncode == -9
    (last,) = tmp_path.glob("agcam/*/checkpoints/last.ckpt")
    resumed = fit_here(tmp_path, "--ckpt_path", str(last))

    assert_same_run_end(resumed, uninterrupted)
    assert len(watch_history(Path(resumed["last_checkpoint"]))) == 2 * 2  # the epoch before the kill is kept
    # provenance: which validation the summary's metrics are, which checkpoint model.agcam holds (the card agrees)
    assert resumed["metrics_from"] == {"epoch": 1, "global_step": 8}
    exported = resumed["explained_checkpoint"]
    source = read_card(exported["path"])["validation"]["checkpoint"]
    assert exported["kind"] == "best" and Path(exported["from"]).name == source["file"]
    assert (exported["epoch"], exported["global_step"]) == (source["epoch"], source["global_step"])
    run_folder = last.parents[1]
    assert resumed["run_folder"] == str(run_folder) and (run_folder / "config.yaml").is_file()

    # one W&B run id, two offline folders that `wandb sync` joins in start order: `_step` goes on where it stopped
    first, second = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_folder.name}"))
    (killed_file,) = first.glob("run-*.wandb")  # no exit record: the writer was killed too
    killed_steps = [
        json.loads(item.value_json)
        for record in read_records(killed_file)
        if record.WhichOneof("record_type") == "history"
        for item in record.history.item
        if item.nested_key == ["_step"] or item.key == "_step"
    ]
    rows = history(second)
    steps = [row["_step"] for row in rows]
    assert killed_steps and steps[0] == max(killed_steps) + 1 and steps == sorted(set(steps))
    assert min(row["trainer/global_step"] for row in rows if "train/loss" in row) == 4  # the resumed epoch's steps
    assert [row["epoch"] for row in rows if "val/acc" in row] == [1]  # the resumed epoch's validation, once
    assert resumed["wandb_run_dir"] == str(second)


def test_sigusr1_to_the_process_group_mid_epoch_saves_the_step_and_resumes_to_the_uninterrupted_end(
    uninterrupted, tmp_path
):
    stopped = fit_process(
        tmp_path,
        "--data.num_workers=2",  # the workers get the signal too
        f"--trainer.callbacks+={INTERRUPT}.SignalAt",
        "--trainer.callbacks.step=6",
        "--trainer.callbacks.signal_name=SIGUSR1",
        "--trainer.callbacks.process_group=true",
    )
    (checkpoint,) = tmp_path.glob("agcam/*/checkpoints/preempted.ckpt")

    assert stopped.returncode == 128 + 10
    assert f"SIGUSR1: stopped at epoch 1, step 6; saved {checkpoint}. Resume with: agcam fit " in stopped.stdout
    assert "Traceback" not in stopped.stderr and "DataLoader worker" not in stopped.stderr
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 6 and saved["ViTDataModule"] == {"epoch": 1, "samples": 2 * 32}
    resumed = fit_here(tmp_path, "--ckpt_path", str(checkpoint))  # in the main process this time
    assert_same_run_end(resumed, uninterrupted)  # the rest of epoch 1 saw exactly the samples it would have


def test_slurm_requeue_checkpoint_stays_in_its_run_folder(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    monkeypatch.chdir(tmp_path)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "agcam", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0"}
    slurm |= {"SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    short = ["--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1"]
    usr1 = [f"--trainer.callbacks+={INTERRUPT}.SignalAt", "--trainer.callbacks.step=2"]
    fit_here(tmp_path / "runs", *short, *usr1, "--trainer.callbacks.signal_name=SIGUSR1")  # Lightning requeues

    run_folder = tmp_path / "runs" / "agcam" / "slurm-4242"
    assert torch.load(run_folder / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 2
    assert not list(tmp_path.glob("*.ckpt"))  # never the current directory
    caplog.clear()
    requeued = fit_here(tmp_path / "runs", *short)  # the same job again (the requeue) finds it in its run folder
    assert f"Restoring states from the checkpoint path at {run_folder}/hpc_ckpt_1.ckpt" in caplog.text
    assert requeued["run_folder"] == str(run_folder) and requeued["global_step"] == 4

    for name in slurm:
        monkeypatch.delenv(name)
    caplog.clear()
    unrelated = fit_here(tmp_path / "runs", *short)  # the same command outside that job: nothing restored
    assert Path(unrelated["run_folder"]).name != "slurm-4242" and "Restoring states" not in caplog.text


def test_two_fits_at_once_in_one_save_dir_and_sigterm_to_one_of_them(tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]
    argv = [sys.executable, "-m", "pipeline", "fit", *BASE, *short, f"--trainer.logger.init_args.save_dir={tmp_path}"]
    sigterm = [f"--trainer.callbacks+={INTERRUPT}.SignalAt", "--trainer.callbacks.step=2"]
    runs = [
        subprocess.Popen(
            [*argv, f"--model.lr={lr}", *extra], cwd=REPO, env=process_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        for lr, extra in (("0.001", []), ("0.002", sigterm))
    ]  # fmt: skip
    (finished_out, finished_err), (stopped_out, stopped_err) = (run.communicate(timeout=600) for run in runs)

    assert runs[0].returncode == 0, finished_err
    assert runs[1].returncode == 128 + 15 and "Traceback" not in stopped_err
    (checkpoint,) = tmp_path.glob("agcam/*/checkpoints/preempted.ckpt")
    assert f"SIGTERM: stopped at epoch 0, step 2; saved {checkpoint}. Resume with: agcam fit " in stopped_out
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2
    assert not (checkpoint.parents[1] / "summary.json").exists()  # stopped, not finished
    configs = sorted(tmp_path.glob("agcam/*/config.yaml"))  # one per run, each with its own settings
    assert sorted(yaml.safe_load(config.read_text())["model"]["lr"] for config in configs) == [0.001, 0.002]
    assert not (tmp_path / "config.yaml").exists()


def test_ctrl_c_saves_the_step_and_says_how_to_resume(tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1"]
    sigint = [f"--trainer.callbacks+={INTERRUPT}.SignalAt", "--trainer.callbacks.step=2",
              "--trainer.callbacks.signal_name=SIGINT"]  # fmt: skip
    stopped = fit_process(tmp_path, *short, *sigint)

    assert stopped.returncode == 128 + 2 and "Traceback" not in stopped.stderr
    (checkpoint,) = tmp_path.glob("agcam/*/checkpoints/preempted.ckpt")
    assert f"SIGINT: stopped at epoch 0, step 2; saved {checkpoint}. Resume with: agcam fit " in stopped.stdout
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 2
