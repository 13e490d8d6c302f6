"""A full disk (ENOSPC): every command ends with one line naming the path, leaves no half-written file, and the
retry is not refused. The disk is a tiny tmpfs; where mounting is not permitted (Linux, not root), fsync fails the
same way once the folder's pages are used up."""

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline.files
from pipeline.cli import main
from pipeline.data import SyntheticShapes
from pipeline.render import save_png
from tests.helpers.checkpoints import tiny_lightning_checkpoint
from tests.helpers.explained import tiny_explained_file

REPO = Path(__file__).resolve().parents[2]
TINY = [str(REPO / "configs/synthetic.yaml"), str(REPO / "tests/configs/tiny.yaml")]


class Disk:
    """A folder on a filesystem of `size` bytes; `grow()` makes room (the retry after the user freed space)."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self.monkeypatch = folder, monkeypatch
        self.mounted = False

    def fill(self, size: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.folder)]
        self.mounted = subprocess.run(mount, capture_output=True).returncode == 0
        if not self.mounted:  # no permission to mount: files synced into the folder use up its free pages
            real_fsync, free = pipeline.files.os.fsync, int(size[:-1]) * 1024 ** {"k": 1, "m": 2}[size[-1]]

            def full_fsync(descriptor: int) -> None:
                nonlocal free
                if Path(os.readlink(f"/proc/self/fd/{descriptor}")).is_relative_to(self.folder):
                    pages = -(-os.fstat(descriptor).st_size // 4096) * 4096  # tmpfs gives every file whole pages
                    if pages > free:
                        raise OSError(errno.ENOSPC, "No space left on device")
                    free -= pages
                real_fsync(descriptor)

            self.monkeypatch.setattr(pipeline.files.os, "fsync", full_fsync)

    def grow(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.folder)], check=True)
        else:
            self.monkeypatch.undo()

    def files(self) -> list[Path]:
        return sorted(path for path in self.folder.rglob("*") if path.is_file())


@pytest.fixture
def disk(tmp_path, monkeypatch) -> Iterator[Disk]:
    disk = Disk(tmp_path / "disk", monkeypatch)
    yield disk
    if disk.mounted:
        subprocess.run(["umount", "-l", str(disk.folder)], check=True)


def one_error_line(argv: list[str], capsys, code: int = 2) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()  # progress bars before it, then the one line
    assert [line for line in lines if line.startswith("agcam")] == lines[-1:]
    return lines[-1]


def no_partial_files(disk: Disk) -> None:
    assert not [path for path in disk.files() if path.name.endswith(".partial") or path.stat().st_size == 0]


def test_export_on_a_full_disk(disk, tmp_path, capsys):
    checkpoint = tiny_lightning_checkpoint(tmp_path / "last.ckpt")
    disk.fill("64k")  # the tiny model's weights are ~400 kB
    out = disk.folder / "model.agcam"
    err = one_error_line(["export", "--ckpt_path", str(checkpoint), "--out", str(out)], capsys)
    assert err == f"agcam export: error: {out}: No space left on device"
    assert disk.files() == []
    disk.grow()
    main(["export", "--ckpt_path", str(checkpoint), "--out", str(out)])  # the retry is not refused
    assert out.stat().st_size > 100_000


def test_evaluate_on_a_full_disk_writes_neither_file(disk, tmp_path, capsys):
    model = tiny_explained_file(tmp_path / "tiny.agcam")
    argv = ["evaluate", "--model", str(model), "--data", *TINY, "--methods", "agcam", "--out", str(disk.folder)]
    disk.fill("4k")  # one page: the JSON fits, the CSV does not
    err = one_error_line(argv, capsys)
    assert err.startswith(f"agcam evaluate: error: {disk.folder}/evaluation.") and err.endswith(
        "No space left on device"
    )
    assert disk.files() == []
    disk.grow()
    main(argv)
    assert json.loads((disk.folder / "evaluation.json").read_text())["methods"]["agcam"]["cases"] >= 0


def test_explain_on_a_full_disk_keeps_finished_images_and_resumes(disk, tmp_path, capsys):
    model = tiny_explained_file(tmp_path / "tiny.agcam")
    shapes = SyntheticShapes(6, image_size=48, num_classes=4, seed=5)
    images = [save_png(shapes[i]["image"], tmp_path / "images" / f"shape{i}.png") for i in range(6)]
    argv = ["explain", "--model", str(model), str(tmp_path / "images"), "--out", str(disk.folder), "--batch_size", "2"]
    disk.fill("24k")  # a few images' PNG, NPY and rows (a page each), not six
    err = one_error_line(argv, capsys)
    assert err.startswith(f"agcam explain: error: {disk.folder}/") and "No space left on device" in err
    no_partial_files(disk)
    assert "finished are kept: rerun with --resume for the rest" in err
    rows = [json.loads(line) for line in (disk.folder / "explanations.jsonl").read_text().splitlines()]
    assert rows and all((disk.folder / row["overlay"]).is_file() for row in rows)
    assert "pass --resume" in one_error_line(argv, capsys)  # a plain retry would redo them: it names the way on
    disk.grow()
    main([*argv, "--resume"])
    rows = [json.loads(line) for line in (disk.folder / "explanations.jsonl").read_text().splitlines()]
    assert sorted(Path(row["file"]).name for row in rows) == sorted(path.name for path in images)  # each once
    assert all((disk.folder / row["overlay"]).is_file() and (disk.folder / row["map"]).is_file() for row in rows)


def test_fit_on_a_full_disk_ends_with_one_line_and_no_truncated_checkpoint(disk, capsys):
    disk.fill("1m")  # the run folder and W&B files fit, a 1.2 MB checkpoint does not
    argv = ["fit", "--config", TINY[0], "--config", TINY[1], "--trainer.logger.init_args.save_dir", str(disk.folder)]
    argv += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    err = one_error_line(argv, capsys)
    assert err.startswith("agcam fit: error: ") and err.endswith(".ckpt: No space left on device")
    assert not list(disk.folder.rglob("*.ckpt")) and not list(disk.folder.rglob("*.partial"))
