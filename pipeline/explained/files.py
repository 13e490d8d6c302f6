"""Reading and writing explained checkpoints: one safetensors file, the card in its header, a content hash.

The tensors are the timm model's state dict; the header's metadata holds the card (`pipeline.explained.card`).
Reading parses a JSON header and raw tensor bytes only: no code from the file runs. ``content_sha256`` in the card
covers every tensor and the rest of the card, so any changed byte is caught on load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

import pipeline
from pipeline.explained.card import CARD_KEYS, CARD_METADATA_KEY, FORMAT_NAME, FORMAT_VERSION, HASH_KEY, ExplainedCard
from pipeline.explained.model import ExplainedModel
from pipeline.files import write_bytes
from pipeline.models import load_state_dict_strictly


class ExplainedCheckpointError(ValueError):
    """An explained checkpoint that cannot be used, with the file and the problem.

    Args:
        path: the file at fault.
        problem: what is wrong with it, in words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def content_hash(tensors: dict[str, torch.Tensor], card: dict[str, Any]) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes; sorted by name) and the card without its hash."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    unhashed = {key: value for key, value in card.items() if key != HASH_KEY}
    digest.update(json.dumps(unhashed, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def save_explained(path: str | Path, model: nn.Module, card: ExplainedCard) -> Path:
    """Write `model`'s weights and `card` as one safetensors file, with the content hash.

    Args:
        path: the file to write (conventionally ``*.agcam``); its folder is created.
        model: the timm ViT the card describes.
        card: its card.

    Returns:
        The path written.
    """
    path = Path(path)
    card.check_model(model)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    card_dict = card.to_dict()
    hashed_card = {**card_dict, HASH_KEY: content_hash(tensors, card_dict)}
    return write_bytes(path, save(tensors, metadata={CARD_METADATA_KEY: json.dumps(hashed_card)}))


def read_card(path: str | Path) -> dict[str, Any]:
    """The card of an explained checkpoint, checked for format, version and keys (the weights are not read).

    Args:
        path: an explained checkpoint.

    Returns:
        The card.
    """
    with _opened(path) as file:
        return _checked_card(path, file.metadata())


def read_explained(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked card and the weights of an explained checkpoint, its content hash verified.

    Args:
        path: an explained checkpoint.

    Returns:
        (card, state dict on CPU).
    """
    with _opened(path) as file:
        card = _checked_card(path, file.metadata())
        try:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except SafetensorError as error:
            raise ExplainedCheckpointError(path, f"the weights cannot be read ({error})") from None
    if content_hash(tensors, card) != card[HASH_KEY]:
        raise ExplainedCheckpointError(
            path, "content hash mismatch: the weights or the card changed after export (corrupt or edited file)"
        )
    return card, tensors


def load_explained(path: str | Path, device: str | torch.device = "cpu") -> ExplainedModel:
    """Load an explained checkpoint for prediction and explanation; nothing from the file is executed.

    Args:
        path: an explained checkpoint written by `save_explained` (``agcam export``).
        device: where the model goes.

    Returns:
        The model, in eval mode, with its card.

    Raises:
        ExplainedCheckpointError: the file is missing, truncated, tampered with, of another format version, or its
            card lacks a key, holds an invalid value or does not fit the weights.
    """
    raw_card, tensors = read_explained(path)
    try:
        card = ExplainedCard.from_dict(raw_card)
    except (TypeError, ValueError) as error:
        raise ExplainedCheckpointError(path, f"invalid card: {error}") from None
    try:
        model = timm.create_model(card.timm_model, pretrained=False, num_classes=card.num_classes, **card.model_kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as error:
        problem = f"timm {timm.__version__} cannot build {card.timm_model!r} with {card.model_kwargs}"
        raise ExplainedCheckpointError(path, f"{problem} ({error})") from None
    try:
        load_state_dict_strictly(model, tensors, card.timm_model)
        card.check_model(model)
        return ExplainedModel(model, card).to(device)
    except (TypeError, ValueError) as error:
        raise ExplainedCheckpointError(path, f"invalid card or weights: {error}") from None


@contextmanager
def _opened(path: str | Path) -> Iterator[Any]:
    """safe_open(path), its failures (missing, truncated or foreign file) turned into ExplainedCheckpointError."""
    if not Path(path).is_file():
        raise ExplainedCheckpointError(path, "no such file")
    try:
        file = safe_open(path, framework="pt")
    except (SafetensorError, OSError) as error:
        raise ExplainedCheckpointError(
            path, f"not a readable explained checkpoint (truncated or not safetensors: {error})"
        ) from None
    with file:
        yield file


def _checked_card(path: str | Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    """The card in a safetensors header, or ExplainedCheckpointError for a missing, foreign or incomplete card."""
    text = (metadata or {}).get(CARD_METADATA_KEY)
    if text is None:
        raise ExplainedCheckpointError(path, f"no {CARD_METADATA_KEY!r} card in the safetensors metadata")
    try:
        card = json.loads(text)
    except json.JSONDecodeError as error:
        raise ExplainedCheckpointError(path, f"the card is not valid JSON ({error})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT_NAME:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ExplainedCheckpointError(path, f"not an {FORMAT_NAME} (format {found!r})")
    if card.get("format_version") != FORMAT_VERSION:
        raise ExplainedCheckpointError(
            path,
            f"format version {card.get('format_version')!r} is not supported; this pipeline "
            f"{pipeline.__version__} reads version {FORMAT_VERSION} (re-export the checkpoint with it)",
        )
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise ExplainedCheckpointError(path, f"the card lacks {', '.join(missing)}")
    return card
