"""ExplainedModel: a timm ViT with its card, to classify and explain images without the training code."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from pipeline.explain import Explainer, build_explainer, check_explainable
from pipeline.explained.card import ExplainedCard
from pipeline.inputs import InputConfig
from pipeline.metrics import normalize_heatmaps

Target = torch.Tensor | int | str | Sequence[int | str] | None


class Prediction(NamedTuple):
    probs: torch.Tensor  # (B, C) softmax, or sigmoid for multi-label models
    classes: torch.Tensor  # (B,) the most probable class


class Explanation(NamedTuple):
    maps: torch.Tensor  # (B, gh, gw) raw maps, or (B, K, gh, gw) for (B, K) targets
    heatmaps: torch.Tensor  # (B, H, W) or (B, K, H, W): maps upsampled to the input and min-max normalized
    targets: torch.Tensor  # (B,) or (B, K) explained classes
    scores: torch.Tensor  # probability of each explained class, shaped like targets


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
    def input_size(self) -> tuple[int, int]:
        """Deprecated since 0.2.0, removed in 0.3.0: use `input_config.image_size`."""
        warnings.warn(
            "ExplainedModel.input_size is deprecated and will be removed in 0.3.0; use input_config.image_size",
            FutureWarning,
            stacklevel=2,
        )
        return self.input_config.image_size

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

    def _target_tensor(self, target: torch.Tensor | int | str | Sequence[int | str], batch: int) -> torch.Tensor:
        """Targets as class indices on the model's device: (B,) or (B, K)."""
        if isinstance(target, torch.Tensor):
            return target.to(self.device).long()
        per_image = [target] * batch if isinstance(target, (int, str)) else list(target)
        if len(per_image) != batch:
            raise ValueError(f"give one target per image ({batch}), got {len(per_image)}")
        return torch.tensor([self.class_index(t) for t in per_image], device=self.device)
