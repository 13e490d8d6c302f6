"""Explained checkpoints: a timm ViT's weights and its JSON card in one safetensors file, loaded without Lightning.

The file is plain safetensors: the tensors are the timm model's state dict, and the header's metadata holds one
entry, ``agcam_card``, a JSON object (see ``CARD_KEYS`` and docs/explained_checkpoints.md). Reading it parses a
JSON header and raw tensor bytes only; no code from the file runs. ``content_sha256`` in the card covers every
tensor and the rest of the card, so any changed byte is caught on load.

This module needs torch, timm, safetensors and pipeline.explain / pipeline.metrics only: never Lightning.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import safetensors
import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

import pipeline
from pipeline.explain import METHODS, Explainer, build_explainer, check_explainable
from pipeline.inputs import InputConfig
from pipeline.metrics import normalize_heatmaps
from pipeline.models import load_state_dict_strictly

FORMAT_NAME = "agcam-explained-checkpoint"
FORMAT_VERSION = 1
CARD_METADATA_KEY = "agcam_card"
HASH_KEY = "content_sha256"
CARD_KEYS = (  # every card holds these; "validation" may be null
    "format",
    "format_version",
    "timm_model",
    "model_kwargs",
    "num_classes",
    "input_size",
    "mean",
    "std",
    "class_names",
    "multi_label",
    "explainer",
    "validation",
    "versions",
    HASH_KEY,
)
Target = torch.Tensor | int | str | Sequence[int | str] | None


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


class Prediction(NamedTuple):
    probs: torch.Tensor  # (B, C) softmax, or sigmoid for multi-label models
    classes: torch.Tensor  # (B,) the most probable class


class Explanation(NamedTuple):
    maps: torch.Tensor  # (B, gh, gw) raw maps, or (B, K, gh, gw) for (B, K) targets
    heatmaps: torch.Tensor  # (B, H, W) or (B, K, H, W): maps upsampled to the input and min-max normalized
    targets: torch.Tensor  # (B,) or (B, K) explained classes
    scores: torch.Tensor  # probability of each explained class, shaped like targets


def current_versions() -> dict[str, str]:
    """The library versions a card records."""
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "pipeline": pipeline.__version__,
    }


@dataclass
class ExplainedCard:
    """Everything needed to rebuild and use a model with timm alone; its JSON form is the file's card.

    Validated when made (from code or from a file): a ValueError names the field at fault.

    Args:
        timm_model: the timm model name.
        num_classes: size of the classifier head.
        input: the input the model takes (size, normalization, interpolation).
        class_names: one name per class (None: the class indices as names).
        multi_label: sigmoid per class instead of a softmax.
        model_kwargs: extra timm constructor arguments (img_size, patch_size, depth, ...).
        methods: explanation methods measured for the model, the first being the default.
        threshold: heatmap threshold of the box protocol, in (0, 1).
        validation: the last validation's metrics, dataset and case counts, or None.
        versions: library versions that wrote the card.
    """

    timm_model: str
    num_classes: int
    input: InputConfig
    class_names: list[str] | None = None
    multi_label: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["agcam"])
    threshold: float = 0.5
    validation: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=current_versions)

    def __post_init__(self) -> None:
        if not isinstance(self.timm_model, str) or not self.timm_model:
            raise ValueError(f"timm_model must be a timm model name, got {self.timm_model!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        self.class_names = list(self.class_names) if self.class_names else [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes or not all(isinstance(n, str) for n in self.class_names):
            raise ValueError(
                f"class_names must be {self.num_classes} strings (num_classes), got {len(self.class_names)}"
            )
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a JSON object, got {type(self.model_kwargs).__name__}")
        self.methods = list(self.methods)
        unknown = sorted(set(self.methods) - set(METHODS))
        if not self.methods or unknown:
            raise ValueError(f"explainer.methods must be some of {sorted(METHODS)}, got {self.methods}")
        if not isinstance(self.threshold, (int, float)) or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"explainer.threshold must lie in (0, 1), got {self.threshold!r}")
        self.threshold = float(self.threshold)
        self.multi_label = bool(self.multi_label)

    def check_model(self, model: nn.Module) -> None:
        """Raise a ValueError naming the field when the card does not describe `model` (classes, input size)."""
        if model.num_classes != self.num_classes:
            raise ValueError(f"num_classes is {self.num_classes} but the model's head has {model.num_classes} outputs")
        built_size = tuple(model.patch_embed.img_size)
        if self.input.image_size != built_size and not getattr(model.patch_embed, "dynamic_img_size", False):
            raise ValueError(
                f"input_size {list(self.input.image_size)} does not fit the model, built for {list(built_size)} "
                "(rebuild it with that img_size or dynamic_img_size=True)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON card (without its content hash)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "timm_model": self.timm_model,
            "model_kwargs": dict(self.model_kwargs),
            "num_classes": self.num_classes,
            "input_size": list(self.input.image_size),
            "mean": list(self.input.mean),
            "std": list(self.input.std),
            "interpolation": self.input.interpolation,
            "class_names": list(self.class_names),
            "multi_label": self.multi_label,
            "explainer": {"methods": list(self.methods), "threshold": self.threshold},
            "validation": self.validation,
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainedCard:
        """The card of a JSON object written by `to_dict`; a ValueError names a missing or invalid field."""
        missing = [key for key in CARD_KEYS if key != HASH_KEY and key not in data]
        if missing:
            raise ValueError(f"the card lacks {', '.join(missing)}")
        explainer = data["explainer"]
        if not isinstance(explainer, dict) or not {"methods", "threshold"} <= explainer.keys():
            raise ValueError(f"explainer must be an object with methods and threshold, got {explainer!r}")
        try:
            model_input = InputConfig(
                tuple(data["input_size"]),
                tuple(data["mean"]),
                tuple(data["std"]),
                data.get("interpolation", "bilinear"),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"input_size / mean / std: {error}") from None
        return cls(
            timm_model=data["timm_model"],
            num_classes=data["num_classes"],
            input=model_input,
            class_names=data["class_names"],
            multi_label=data["multi_label"],
            model_kwargs=data["model_kwargs"],
            methods=explainer["methods"],
            threshold=explainer["threshold"],
            validation=data["validation"],
            versions=data["versions"],
        )


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
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # a crash never leaves a half-written file under `path`
    save_file(tensors, partial, metadata={CARD_METADATA_KEY: json.dumps(hashed_card)})
    os.replace(partial, path)
    return path


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


class ExplainedModel:
    """A timm ViT with its card: classify and explain normalized image tensors, no training code needed.

    Images are (B, 3, H, W) float tensors at the card's input size, normalized with its mean and std
    (``agcam explain`` does that for image files).

    Args:
        model: the timm ViT (put in eval mode).
        card: its card.
    """

    def __init__(self, model: nn.Module, card: ExplainedCard) -> None:
        check_explainable(model)
        self.model = model.eval()
        self.card = card
        self._explainers: dict[str, Explainer] = {}

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    @property
    def multi_label(self) -> bool:
        return self.card.multi_label

    @property
    def input_config(self) -> InputConfig:
        return self.card.input

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ExplainedModel:
        self.model.to(device)
        return self

    def class_index(self, name_or_index: int | str) -> int:
        """A class given by name, or by index (an int or a string of digits), as its index.

        Args:
            name_or_index: e.g. "circle", 3 or "3".

        Returns:
            The class index.
        """
        if isinstance(name_or_index, str) and name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            index = int(name_or_index)
            if index < len(self.class_names):
                return index
        raise ValueError(
            f"unknown class {name_or_index!r}: give a class index below {len(self.class_names)} or one of "
            f"{self.class_names[:10]}{' ...' if len(self.class_names) > 10 else ''}"
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) class logits of (B, 3, H, W) normalized inputs, without grad."""
        with torch.no_grad():
            return self.model(images.to(self.device))

    def predict(self, images: torch.Tensor) -> Prediction:
        """Class probabilities and the most probable class.

        Args:
            images: (B, 3, H, W) normalized inputs.

        Returns:
            Prediction(probs (B, C), classes (B,)).
        """
        logits = self.logits(images)
        probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
        return Prediction(probs, probs.argmax(dim=-1))

    def explain(self, images: torch.Tensor, target: Target = None, method: str = "agcam") -> Explanation:
        """Raw maps and normalized heatmaps of `method` for the predicted class, or the `target` class(es).

        Args:
            images: (B, 3, H, W) normalized inputs.
            target: None (the predicted class), one class for every image (index or name), one per image
                (a sequence or a (B,) tensor), or a (B, K) index tensor for K classes per image.
            method: one of pipeline.explain.METHODS ("agcam", "rollout", "lrp", "grad_rollout").

        Returns:
            Explanation(maps, heatmaps, targets, scores); see its fields.
        """
        images = images.to(self.device)
        probs = self.predict(images).probs
        targets = probs.argmax(dim=-1) if target is None else self._target_tensor(target, len(images))
        maps = self.explainer(method)(images, targets)
        per_case = maps.flatten(0, -3)  # (B * K, gh, gw)
        heatmaps = normalize_heatmaps(per_case, images.shape[-2:]).view(*maps.shape[:-2], *images.shape[-2:])
        scores = probs.gather(1, targets.view(len(images), -1)).view(targets.shape)
        return Explanation(maps, heatmaps, targets, scores)

    def explainer(self, method: str) -> Explainer:
        """The model's explainer for `method`, built once (raw maps for batches of targets)."""
        if method not in self._explainers:
            self._explainers[method] = build_explainer(method, self.model)
        return self._explainers[method]

    def _target_tensor(self, target: Target, batch: int) -> torch.Tensor:
        """Targets as class indices on the model's device: (B,) or (B, K)."""
        if isinstance(target, torch.Tensor):
            return target.to(self.device).long()
        per_image = [target] * batch if isinstance(target, (int, str)) else list(target)
        if len(per_image) != batch:
            raise ValueError(f"give one target per image ({batch}), got {len(per_image)}")
        return torch.tensor([self.class_index(t) for t in per_image], device=self.device)


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
