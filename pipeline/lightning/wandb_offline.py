"""Offline W&B runs that survive a resume: one continuous `_step` axis, and no staging copy in the user's home.

W&B 0.31 cannot resume a run offline: a fit resumed with the same run id writes a second `offline-run-*-<id>`
folder whose `_step` would restart at 0. `continue_steps` moves the new folder's first row past the last row any
earlier folder of that id holds, so `wandb sync <first folder> <second folder>` (same id: synced in order of start
time, as one run) gets one monotonic history. The run files are read directly: LevelDB's log format (32 KiB
blocks of CRC-framed chunks) after a 7-byte W&B header, each record a wandb `Record` protobuf.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7  # b":W&B" + magic + version
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, LAST = 1, 4


def read_records(path: str | Path) -> list:
    """Every record of a `run-<id>.wandb` file, in order (a torn tail, from a killed writer, is left out)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    records, pending, position = [], b"", HEADER_SIZE
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            position += left_in_block
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if length == 0 and kind == 0:  # zero padding up to the block end
            position += left_in_block
            continue
        start = position + CHUNK_HEADER.size
        if start + length > len(data):
            break
        pending += data[start : start + length]
        position = start + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def last_logged_step(wandb_dir: str | Path, run_id: str) -> int | None:
    """The largest history `_step` in the offline folders of run `run_id` under `wandb_dir`, None if none."""
    steps = [
        int(item.value_json)
        for run_file in Path(wandb_dir).glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb")
        for record in read_records(run_file)
        if record.WhichOneof("record_type") == "history"
        for item in record.history.item
        if (item.key or "/".join(item.nested_key)) == "_step"
    ]
    return max(steps, default=None)


def continue_steps(run: Any, wandb_dir: str | Path) -> int:
    """Make this run's next history row follow the rows earlier offline folders of its id hold; returns its step."""
    last = last_logged_step(wandb_dir, run.id)
    if last is None:
        return run.step
    run.log({}, step=last + 1)  # sets the step: the next logged values form that row
    return last + 1


def stage_in_run_folder(path: Path, run_folder: Path, name: str) -> Path:
    """A file for a W&B artifact that nothing will overwrite before `wandb sync`, inside the run folder.

    A hard link (no second copy of the bytes; a later atomic rewrite of `path` gets a new file and leaves this one
    as it was), or a copy where the filesystem has no hard links. Add it with `policy="immutable"`: W&B then
    uploads it from here instead of copying it into its staging folder in the user's home.
    """
    staged = run_folder / "wandb-artifacts" / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.unlink(missing_ok=True)
    try:
        os.link(path, staged)
    except OSError:
        with atomic_write(staged) as copy, open(path, "rb") as original:
            shutil.copyfileobj(original, copy)
    return staged


class WriteFailures:
    """W&B's own file writes that failed (its debug log on a full disk), recorded instead of printed.

    wandb logs to `debug.log` in the run folder through Python logging; on a full disk every message would print a
    "--- Logging error ---" traceback and the run would still end with exit code 0. Attached to wandb's file
    handlers, this keeps the first failure so the fit can end non-zero with one line.
    """

    def __init__(self) -> None:
        self.error: OSError | None = None
        self.path: str | None = None

    def attach(self) -> None:
        for handler in logging.getLogger("wandb").handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handleError = self._recorder(handler.baseFilename)  # type: ignore[method-assign]

    def _recorder(self, path: str) -> Any:
        def record(_: logging.LogRecord) -> None:
            error = sys.exc_info()[1]
            if self.error is None and isinstance(error, OSError):
                self.error, self.path = error, path

        return record

    def raise_if_any(self) -> None:
        """OSError naming W&B's file and the problem, if a write failed (the checkpoints are not affected)."""
        if self.error is not None:
            problem = f"W&B logging failed ({self.error.strerror}); the checkpoints are valid"
            raise OSError(self.error.errno, problem, self.path)
