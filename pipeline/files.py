"""Writing files so that an interruption or a full disk never leaves a half-written one.

Every file the project writes goes through `atomic_write`: the bytes go to a temporary file in the target's own
folder (so the final rename never crosses filesystems), are fsynced, and only then `os.replace` the target in one
step. Until then the previous version of the file, if any, stays whole; on any failure the temporary file is removed
and the error names the target path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, the written file gets the usual 0666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it becomes `path` atomically.

    Args:
        path: the file to write; its folder is created.
        mode: "wb" or "w" (text: pass encoding/newline through `open_kwargs`).

    Raises:
        OSError: naming `path` (not the temporary file) when writing, syncing or renaming fails.
    """
    path = Path(path)
    handle, temporary = _new_temporary(path)
    try:
        with os_error_naming(path), open(handle, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        with os_error_naming(path):
            os.replace(temporary, path)
            _fsync_folder(path.parent)  # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """`path` holds exactly `data`, or (on failure) what it held before."""
    with atomic_write(path, "wb") as file:
        file.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """`path` holds exactly `text` (UTF-8), or (on failure) what it held before."""
    return write_bytes(path, text.encode("utf-8"))


def write_all(contents: Mapping[Path, bytes]) -> list[Path]:
    """Several files that belong together: each written to a temporary file and synced, and only when every one
    is whole are they renamed into place, so a failure (a full disk) leaves none of them, not some."""
    written: list[tuple[Path, str]] = []
    try:
        for path, data in contents.items():
            handle, temporary = _new_temporary(path)
            written.append((path, temporary))
            with os_error_naming(path), open(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        for path, temporary in written:
            with os_error_naming(path):
                os.replace(temporary, path)
        for folder in {path.parent for path in contents}:
            _fsync_folder(folder)
    except BaseException:
        for _, temporary in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        raise
    return list(contents)


@contextlib.contextmanager
def os_error_naming(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError that does not name a file (ENOSPC from a write, say) as one that names `path`."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from error


def describe_os_error(error: OSError) -> str:
    """One line for the user: the path and the problem, e.g. "out/map.npy: No space left on device"."""
    problem = error.strerror or str(error)
    if error.filename is None:
        return problem
    target = f" -> {error.filename2}" if error.filename2 is not None else ""
    return f"{error.filename}{target}: {problem}"


def _new_temporary(path: Path) -> tuple[int, str]:
    """An open handle and the name of a new temporary file beside `path` (its folder created), with the
    permissions a plain new file would get; OSErrors name `path`."""
    with os_error_naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os_error_naming(path):
            os.fchmod(handle, 0o666 & ~_UMASK)
    except BaseException:
        os.close(handle)
        os.unlink(temporary)
        raise
    return handle, temporary


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
