"""Lightning checkpoint files: atomic hashed writes, and one-line errors for files that are not whole checkpoints."""

import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from pipeline.checkpoints import CONTENT_HASH_KEY, CheckpointError, load_checkpoint_file, save_checkpoint_file
from pipeline.cli import main
from tests.helpers.checkpoints import tiny_lightning_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", str(REPO / "configs/synthetic.yaml"), "--config", str(REPO / "tests/configs/tiny.yaml")]


@pytest.fixture
def run_checkpoints(tmp_path) -> Path:
    """A run's checkpoint folder: last.ckpt of a tiny ViTClassifier (as `agcam fit` writes it) and an older one."""
    folder = tmp_path / "run" / "checkpoints"
    tiny_lightning_checkpoint(folder / "best-epoch00.ckpt")
    os.utime(folder / "best-epoch00.ckpt", (1, 1))  # older than last.ckpt
    tiny_lightning_checkpoint(folder / "last.ckpt")
    return folder


def damaged(source: Path, how: str) -> Path:
    """A copy of `source` beside it, damaged: truncated, garbage, empty, or a 4 KiB region zeroed inside a tensor."""
    target = source.with_name(f"{how}.ckpt")
    data = bytearray(source.read_bytes())
    if how == "truncated":
        data = data[: len(data) * 6 // 10]
    elif how == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif how == "empty":
        data = bytearray()
    elif how == "zeroed":  # 4 KiB inside the largest tensor: the archive stays readable, the values change
        with zipfile.ZipFile(source) as archive:
            largest = max(archive.infolist(), key=lambda info: info.file_size)
        name_length, extra_length = struct.unpack_from("<HH", data, largest.header_offset + 26)
        start = largest.header_offset + 30 + name_length + extra_length + 1024
        data[start : start + 4096] = bytes(4096)
    target.write_bytes(bytes(data))
    return target


def test_a_checkpoint_round_trips_with_its_content_hash(run_checkpoints):
    raw = torch.load(run_checkpoints / "last.ckpt", weights_only=True)
    assert len(raw[CONTENT_HASH_KEY]) == 64
    loaded = load_checkpoint_file(run_checkpoints / "last.ckpt", required=("state_dict", "hyper_parameters"))
    assert CONTENT_HASH_KEY not in loaded and loaded["global_step"] == 16
    assert not [p for p in run_checkpoints.iterdir() if p.suffix != ".ckpt"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_checkpoint_whole(run_checkpoints, monkeypatch):
    before = (run_checkpoints / "last.ckpt").read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left") as error:
        save_checkpoint_file({"state_dict": {"w": torch.ones(3)}}, run_checkpoints / "last.ckpt")
    assert error.value.filename == str(run_checkpoints / "last.ckpt")
    assert (run_checkpoints / "last.ckpt").read_bytes() == before
    assert sorted(p.name for p in run_checkpoints.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("truncated", "truncated or damaged archive"),
        ("garbage", "not a checkpoint"),
        ("empty", "the file is empty"),
        ("zeroed", "damaged: its content no longer matches the hash"),
    ],
)
def test_a_damaged_checkpoint_is_named_with_the_problem_and_the_other_checkpoints(run_checkpoints, how, problem):
    bad = damaged(run_checkpoints / "last.ckpt", how)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(bad)
    message = str(error.value)
    assert message.startswith(f"{bad}: {problem}")
    assert message.endswith(f"other checkpoints in {run_checkpoints}: last.ckpt, best-epoch00.ckpt")
    assert "weights_only=False" not in message and "\n" not in message


def test_agcam_export_and_fit_refuse_a_damaged_checkpoint_in_one_line(run_checkpoints, tmp_path, capsys):
    bad = damaged(run_checkpoints / "last.ckpt", "garbage")
    for argv in (
        ["export", "--ckpt_path", str(bad), "--out", str(tmp_path / "model.agcam")],
        ["fit", *TINY, "--trainer.logger", "false", "--ckpt_path", str(bad)],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"agcam {argv[0]}: error: {bad}: not a checkpoint") and "\n" not in err
        assert "weights_only=False" not in err
    assert not (tmp_path / "model.agcam").exists()


def test_fit_names_a_checkpoint_without_training_state_and_one_of_another_model(run_checkpoints, tmp_path, capsys):
    weights_only = run_checkpoints / "weights.ckpt"
    checkpoint = load_checkpoint_file(run_checkpoints / "last.ckpt")
    save_checkpoint_file({key: checkpoint[key] for key in ("state_dict", "hyper_parameters")}, weights_only)
    with pytest.raises(SystemExit):
        main(["fit", *TINY, "--trainer.logger", "false", "--ckpt_path", str(weights_only)])
    assert "it lacks optimizer_states, loops" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # the checkpoint's 4 classes, data with 6
        main(["fit", *TINY, "--trainer.logger", "false", "--data.source.init_args.num_classes", "6", "--ckpt_path",
              str(run_checkpoints / "last.ckpt")])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "last.ckpt: was written for another model or config: model.head.weight [4, 64] in the checkpoint, " in err
    assert "[6, 64] in the model" in err and "\n" not in err
