"""Two nodes x one process on one machine: two `torchrun --nnodes 2` launchers meeting at 127.0.0.1 (loopback only).

A short fit with the LocalizationCallback must give the single-process run's localization metrics, each
validation image scored once. The learning rate is 0, so both runs validate the same (seeded) weights.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench_fsdp import free_port
from tests.helpers.wandb_offline import history
from tests.lightning.test_ddp import BASE, REPO, SUBPROCESS_TIMEOUT, VAL_SIZE

FIT = [
    "fit", *BASE,
    "--data.source.init_args.val_size", VAL_SIZE,
    "--data.eval_batch_size", "1",  # the same kernels and shapes in both runs: differences are the synchronization's
    "--model.lr", "0",
    "--trainer.limit_train_batches", "2",
    "--trainer.accelerator", "cpu",
    "--trainer.devices", "1",
]  # fmt: skip


def environment() -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_SERVICE", "PL_"))}
    return {**inherited, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def localization(save_dir: Path) -> dict[str, float]:
    (run_dir,) = save_dir.glob("wandb/offline-run-*")
    (row,) = [row for row in history(run_dir) if "val/loc/agcam/cases" in row]
    return {key: value for key, value in row.items() if key.startswith("val/loc/") and isinstance(value, (int, float))}


@pytest.mark.ddp
@pytest.mark.slow
def test_two_nodes_on_localhost_score_each_image_once_with_single_process_metrics(tmp_path):
    single_dir, nodes_dir = tmp_path / "single", tmp_path / "nodes"
    single = [sys.executable, "-m", "pipeline", *FIT, "--trainer.logger.init_args.save_dir", str(single_dir)]
    port = free_port()
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "pipeline",
                *FIT,
                "--trainer.num_nodes",
                "2",
                "--trainer.strategy",
                "ddp",
                "--trainer.logger.init_args.save_dir",
                str(nodes_dir),
            ],  # fmt: skip
            cwd=REPO,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for node in (0, 1)
    ]
    completed = subprocess.run(single, cwd=REPO, env=environment(), capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for node, launcher in enumerate(launchers):
        output, _ = launcher.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert launcher.returncode == 0, output[-3000:]
        assert f"GLOBAL_RANK: {node}, MEMBER: {node + 1}/2" in output  # one process per node, two in all

    single_metrics, node_metrics = localization(single_dir), localization(nodes_dir)
    assert single_metrics["val/loc/agcam/cases"] + single_metrics["val/loc/agcam/skipped"] == int(VAL_SIZE)
    assert single_metrics["val/loc/agcam/cases"] > 0
    assert single_metrics.keys() == node_metrics.keys()
    for key, value in single_metrics.items():
        assert node_metrics[key] == pytest.approx(value, abs=1e-6), key
