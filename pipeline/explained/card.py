"""The card of an explained checkpoint: what rebuilds and uses the model with timm alone, and its JSON key names.

The card is a JSON object stored in the safetensors header under ``CARD_METADATA_KEY``; ``CARD_KEYS`` are the keys
every card holds (docs/explained_checkpoints.md describes each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import safetensors
import timm
import torch
from torch import nn

import pipeline
from pipeline.explain import check_methods
from pipeline.inputs import InputConfig
from pipeline.metrics import check_threshold

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
        class_names: one name per class (empty or None: the class indices as names).
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
    class_names: list[str] = field(default_factory=list)
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
        self.methods = check_methods(self.methods, name="explainer.methods")
        self.threshold = check_threshold(self.threshold, name="explainer.threshold")
        self.multi_label = bool(self.multi_label)

    def check_model(self, model: nn.Module) -> None:
        """Raise a ValueError naming the field when the card does not describe `model` (classes, input size)."""
        if model.num_classes != self.num_classes:
            raise ValueError(f"num_classes is {self.num_classes} but the model's head has {model.num_classes} outputs")
        built_size = tuple(cast(Any, model.patch_embed).img_size)
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
