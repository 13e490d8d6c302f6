"""configs/fsdp.yaml on two CPU processes (gloo): Lightning's ModelParallelStrategy with fully_shard per block.

The learning rate is 0, so the sharded and the single-process run validate the same (seeded) weights: the
LocalizationCallback's metrics must be equal, the sharded checkpoint must hold one shard file per process, the
exported model.agcam the same weights, and the run must resume from its sharded last.ckpt.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.explained import read_explained
from tests.helpers.wandb_offline import history
from tests.lightning.test_ddp import BASE, REPO, SUBPROCESS_TIMEOUT

VAL_SIZE = "32"  # divisible by 2: under FSDP both processes must run the same number of batches
FIT = [
    "fit", *BASE,
    "--data.source.init_args.val_size", VAL_SIZE,
    "--data.eval_batch_size", "1",  # the same kernels and shapes in both runs: differences are the synchronization's
    "--model.lr", "0",
    "--trainer.limit_train_batches", "1",
    "--trainer.accelerator", "cpu",
]  # fmt: skip
FSDP = ["--config", str(REPO / "configs/fsdp.yaml")]


def run(save_dir: Path, *args: str) -> list[dict]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
    env = {**inherited, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "pipeline", *args, "--trainer.logger.init_args.save_dir", str(save_dir)]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run_dir,) = save_dir.glob("wandb/offline-run-*")
    return history(run_dir)


def localization(rows: list[dict]) -> dict[str, float]:
    (row,) = [row for row in rows if "val/loc/agcam/cases" in row]
    return {key: value for key, value in row.items() if key.startswith("val/loc/") and isinstance(value, (int, float))}


@pytest.mark.ddp
@pytest.mark.slow
def test_fsdp_fit_scores_like_one_process_saves_shards_exports_full_weights_and_resumes(tmp_path):
    single = localization(run(tmp_path / "single", *FIT, "--trainer.devices", "1"))
    sharded = localization(run(tmp_path / "fsdp", *FIT, *FSDP))
    assert single["val/loc/agcam/cases"] + single["val/loc/agcam/skipped"] == int(VAL_SIZE)
    assert single["val/loc/agcam/cases"] > 0
    assert single.keys() == sharded.keys()
    for key, value in single.items():
        assert sharded[key] == pytest.approx(value, abs=1e-6), key

    (last,) = tmp_path.glob("fsdp/agcam/*/checkpoints/last.ckpt")
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2  # one shard file per process
    (exported,) = tmp_path.glob("fsdp/agcam/*/model.agcam")
    (reference,) = tmp_path.glob("single/agcam/*/model.agcam")
    (_, tensors), (_, expected) = read_explained(exported), read_explained(reference)
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[name], expected[name]) for name in expected)

    resumed = run(tmp_path / "resumed", *FIT, *FSDP, "--ckpt_path", str(last), "--trainer.max_epochs", "2")
    epochs = [row["epoch"] for row in resumed if "val/loc/agcam/cases" in row]
    assert epochs == [1]  # only the second epoch ran, from the sharded checkpoint
