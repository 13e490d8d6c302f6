"""Explained checkpoints: a timm ViT's weights and its JSON card in one safetensors file, loaded without Lightning.

`card` holds the card and its key names, `files` reading, writing and hashing, `model` the runtime ExplainedModel,
`convert` the conversion of a Lightning checkpoint (or timm weights). This package needs torch, timm, safetensors
and pipeline.explain / pipeline.metrics only: never Lightning.
"""

from pipeline.explained.card import (
    CARD_KEYS,
    CARD_METADATA_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    HASH_KEY,
    ExplainedCard,
    current_versions,
)
from pipeline.explained.convert import (
    EXPLAINER_KEY,
    MODEL_PREFIX,
    VALIDATION_KEY,
    explained_from_lightning,
    explained_from_timm,
    export_checkpoint,
    read_lightning_checkpoint,
)
from pipeline.explained.files import (
    ExplainedCheckpointError,
    content_hash,
    load_explained,
    read_card,
    read_explained,
    save_explained,
)
from pipeline.explained.model import ExplainedModel, Explanation, Prediction, Target

__all__ = [
    "CARD_KEYS",
    "CARD_METADATA_KEY",
    "EXPLAINER_KEY",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HASH_KEY",
    "MODEL_PREFIX",
    "VALIDATION_KEY",
    "ExplainedCard",
    "ExplainedCheckpointError",
    "ExplainedModel",
    "Explanation",
    "Prediction",
    "Target",
    "content_hash",
    "current_versions",
    "explained_from_lightning",
    "explained_from_timm",
    "export_checkpoint",
    "load_explained",
    "read_card",
    "read_explained",
    "read_lightning_checkpoint",
    "save_explained",
]
