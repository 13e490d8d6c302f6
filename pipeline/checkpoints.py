"""Lightning checkpoint files, without Lightning: written atomically with a content hash, read with one-line errors.

A checkpoint is a torch zip archive whose pickle holds the tensors and plain containers. `save_checkpoint_file`
records a sha256 of that content (every tensor's bytes and every plain value, by its place in the checkpoint) under
`CONTENT_HASH_KEY`, so damage inside the file that still unpickles (a zeroed region in a tensor) is caught on load.
Loading never executes code from the file (`weights_only=True`), and its errors never advise otherwise.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.files import atomic_write

CONTENT_HASH_KEY = "content_sha256"
PLAIN_TYPES = (bool, int, float, str, bytes, type(None))


class CheckpointError(ValueError):
    """A checkpoint file that is missing, not whole, not a checkpoint or lacks what is needed; says which and why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}; {other_checkpoints(path)}")


def content_hash(checkpoint: Mapping[str, Any]) -> str:
    """sha256 over the checkpoint without its hash key: each tensor's place, dtype, shape and bytes, each plain value's
    place and repr (other objects by their type), in the checkpoint's own order."""
    digest = hashlib.sha256()
    for place, value in _leaves({key: value for key, value in checkpoint.items() if key != CONTENT_HASH_KEY}, ""):
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{place}|{tensor.dtype}|{list(tensor.shape)}|".encode())
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]  # a buffer
        else:
            described = repr(value) if isinstance(value, PLAIN_TYPES) else type(value).__name__
            digest.update(f"{place}={described}|".encode())
    return digest.hexdigest()


def save_checkpoint_file(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write `checkpoint` with its content hash to `path` atomically (the previous file stays whole until then)."""
    buffer = io.BytesIO()  # serialized first: torch's zip writer turns a failed write (ENOSPC) into a RuntimeError
    torch.save({**checkpoint, CONTENT_HASH_KEY: content_hash(checkpoint)}, buffer)
    with atomic_write(path) as file:
        file.write(buffer.getbuffer())
    return Path(path)


def load_checkpoint_file(
    path: str | Path,
    map_location: Any = "cpu",
    required: Iterable[str] = ("state_dict",),
    weights_only: bool | None = True,
) -> dict[str, Any]:
    """A checkpoint as plain tensors and containers, its content hash checked when it has one.

    Args:
        path: a `.ckpt` file.
        map_location: torch.load's map_location.
        required: top-level keys the caller needs (e.g. "optimizer_states" to resume training).
        weights_only: torch.load's weights_only; None is torch's default (True).

    Raises:
        CheckpointError: missing, empty, truncated, damaged, not a checkpoint, or without a required key; the message
            names the file, the problem and the other checkpoints in its folder.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "the file is empty (a write that never finished)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only is not False)
    except OSError:
        raise
    except Exception as error:  # garbage makes torch's unpickler raise anything (IndexError, UnpicklingError, ...)
        raise CheckpointError(path, _unreadable(path, error)) from None  # torch's text advises unsafe loading
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, f"not a Lightning checkpoint (it holds a {type(checkpoint).__name__}, not a dict)")
    recorded = checkpoint.pop(CONTENT_HASH_KEY, None)
    if recorded is not None and recorded != content_hash(checkpoint):
        raise CheckpointError(path, "damaged: its content no longer matches the hash recorded when it was written")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(path, f"not a whole Lightning checkpoint: it lacks {', '.join(missing)}")
    return checkpoint


def other_checkpoints(path: str | Path) -> str:
    """The other `.ckpt` files beside `path`, newest first, as a phrase for an error message."""
    folder = Path(path).parent
    others = sorted(
        (candidate for candidate in folder.glob("*.ckpt") if candidate.name != Path(path).name and candidate.is_file()),
        key=lambda candidate: candidate.stat().st_mtime_ns,
        reverse=True,
    )
    if not others:
        return f"no other checkpoint in {folder}"
    return f"other checkpoints in {folder}: {', '.join(candidate.name for candidate in others)}"


def mismatched_shapes(checkpoint_shapes: Mapping[str, torch.Size], model_shapes: Mapping[str, torch.Size]) -> str:
    """The keys whose shapes differ or that one side lacks, as a phrase ("" when the two fit)."""
    problems = [
        f"{name} {list(shape)} in the checkpoint, {list(model_shapes[name])} in the model"
        for name, shape in checkpoint_shapes.items()
        if name in model_shapes and shape != model_shapes[name]
    ]
    for label, names in (
        ("missing", [name for name in model_shapes if name not in checkpoint_shapes]),
        ("unexpected", [name for name in checkpoint_shapes if name not in model_shapes]),
    ):
        if names:
            problems.append(f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")
    return "; ".join(problems[:5])


def _unreadable(path: Path, error: BaseException) -> str:
    """What is wrong with a file torch.load refused, in words (never torch's advice to load it unsafely)."""
    with path.open("rb") as file:
        head = file.read(4)
    if head != b"PK\x03\x04":
        return "not a checkpoint (neither a torch zip archive nor a pickle)"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return "truncated or damaged archive (its zip directory cannot be read: the write did not finish)"
    if damaged is not None:
        return f"damaged archive (member {damaged} fails its checksum)"
    return f"not a readable checkpoint (torch.load: {type(error).__name__})"


def _leaves(value: Any, place: str) -> Iterator[tuple[str, Any]]:
    """(place, leaf) of nested dicts, lists and tuples, depth first in their own order."""
    if isinstance(value, Mapping):
        children: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        children = enumerate(value)
    else:
        yield place, value
        return
    for key, child in children:
        yield from _leaves(child, f"{place}/{key}")
