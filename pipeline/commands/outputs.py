"""The one rule every offline command follows before writing: never replace an existing file unasked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def refuse_existing(paths: Sequence[Path], overwrite: bool, alternative: str = "") -> None:
    """FileExistsError naming the first of `paths` that exists already, unless the user passed --overwrite.

    `alternative` names another way on (e.g. "pass --resume to keep its finished images").
    """
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"{existing[0]}{more} already exists; choose another --out, {alternative + ', ' if alternative else ''}"
            "or pass --overwrite to replace earlier outputs"
        )
