"""W&B offline helpers: write failures become one error, and artifacts are staged inside the run folder."""

import errno
import logging
import os

import pytest

import pipeline.lightning.cli
from pipeline.cli import main
from pipeline.lightning.wandb_offline import WriteFailures, stage_in_run_folder


class FullDiskStream:
    def write(self, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass


def test_wandb_debug_log_failures_are_kept_quietly_and_raised_once(tmp_path, capsys, monkeypatch):
    log = tmp_path / "wandb" / "offline-run-1" / "logs" / "debug.log"  # where W&B keeps it
    handler = logging.FileHandler(log, delay=True)
    handler.stream = FullDiskStream()
    logger = logging.getLogger("wandb")
    logger.addHandler(handler)
    try:
        failures = WriteFailures()
        failures.attach()
        logger.error("a message W&B logs while the disk is full")
    finally:
        logger.removeHandler(handler)
    assert "Logging error" not in capsys.readouterr().err
    with pytest.raises(OSError, match="W&B logging failed .No space left on device.; the checkpoints are valid"):
        failures.raise_if_any()
    assert failures.path == str(log)

    def fit_that_fails(*args, **kwargs):
        failures.raise_if_any()

    monkeypatch.setattr(pipeline.lightning.cli, "run_lightning_cli", fit_that_fails)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("W&B logging failed") == 1  # said once, with the file
    problem = "W&B logging failed (No space left on device); the checkpoints are valid"
    assert err == f"agcam fit: error: {log}: {problem}\n"


def test_an_artifact_file_is_staged_in_the_run_folder_and_outlives_a_rewrite(tmp_path):
    model = tmp_path / "run" / "model.agcam"
    model.parent.mkdir()
    model.write_bytes(b"first export")
    staged = stage_in_run_folder(model, model.parent, "model-step8.agcam")
    assert staged.parent == model.parent / "wandb-artifacts" and os.path.samefile(staged, model)  # no second copy
    replacement = model.with_name("new")
    replacement.write_bytes(b"second export")
    os.replace(replacement, model)  # how model.agcam is rewritten (atomically) by a resumed fit
    assert staged.read_bytes() == b"first export"


def test_without_hard_links_the_artifact_is_copied_whole(tmp_path, monkeypatch):
    model = tmp_path / "run" / "model.agcam"
    model.parent.mkdir()
    model.write_bytes(b"export")

    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    staged = stage_in_run_folder(model, model.parent, "model-step8.agcam")
    assert staged.read_bytes() == b"export" and not os.path.samefile(staged, model)
    assert sorted(path.name for path in staged.parent.iterdir()) == ["model-step8.agcam"]  # no temporary left
