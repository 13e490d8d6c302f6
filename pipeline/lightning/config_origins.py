"""Which config file set what, to catch settings carried over from an earlier config into a different class.

Composed configs merge: `agcam fit --config configs/shortcut.yaml --data my_data.yaml` keeps every
`data.source.init_args` of the shortcut config that my_data.yaml's class also accepts (e.g. `marker_fraction: 1.0`),
and `--model.model_name vit_base_patch16_224` on top of configs/synthetic.yaml keeps the tiny model's
`model_kwargs`. Both are jsonargparse's merge rules working as designed, and both silently train something nobody
asked for. `carried_over` replays the command line's config files and options in order and names, for the data
source and the model, the values set before the file or option that chose their class (or model name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ARCHITECTURE_KWARGS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "class_token")


@dataclass
class Setting:
    """One setting as the command line composed it: where it came from and its position in the composition."""

    origin: str
    position: int


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # LightningCLI itself reports files it cannot read


def _sections(argv: Sequence[str], part: str) -> list[tuple[str, dict[str, Any]]]:
    """(origin, the `part` section it sets) for each config file and option of `argv`, in order."""
    found: list[tuple[str, dict[str, Any]]] = []
    items = list(argv)
    for index, item in enumerate(items):
        name, equals, value = item.partition("=")
        if not name.startswith("--"):
            continue
        if not equals and index + 1 < len(items):
            value = items[index + 1]
        key = name[2:]
        if key == "config":
            document = _load(Path(value))
            section = document.get(part) if isinstance(document, dict) else None
            if isinstance(section, str):  # `data: data/shapes.yaml`, relative to the config
                found.append((f"{value} ({section})", _load(Path(value).parent / section) or {}))
            elif isinstance(section, dict):
                found.append((value, section))
        elif key == part and Path(value).is_file():
            found.append((value, _load(Path(value)) or {}))
        elif key.startswith(f"{part}."):
            nested: dict[str, Any] = {}
            cursor = nested
            *parents, leaf = key[len(part) + 1 :].split(".")
            for parent in parents:
                cursor = cursor.setdefault(parent, {})
            cursor[leaf] = yaml.safe_load(value) if value else value
            found.append((name, nested))
    return found


def _replay(sections: list[tuple[str, dict[str, Any]]], chooser: str, group: str) -> tuple[int, dict[str, Setting]]:
    """Where `chooser` (the class or model name) last changed, and where each key of `group` was last set."""
    chosen_at = -1
    settings: dict[str, Setting] = {}
    for position, (origin, section) in enumerate(sections):
        choice, values = _choice_and_values(section, chooser, group)
        if choice is not None:  # restating the class counts: its file reads as a fresh choice
            chosen_at = position
        for key in values:
            settings[key] = Setting(origin, position)
    return chosen_at, settings


def _choice_and_values(section: Mapping[str, Any], chooser: str, group: str) -> tuple[Any, Mapping[str, Any]]:
    if chooser == "source":  # data: source: {class_path, init_args} or source: ClassName
        source = section.get("source")
        if isinstance(source, str):
            return source, {}
        if isinstance(source, dict):
            return source.get("class_path"), source.get("init_args") or {}
        return None, {}
    return section.get(chooser), {group: section[group]} if group in section else {}  # model_kwargs: one value


def carried_over(
    argv: Sequence[str], final: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Warnings, one per setting set before the file or option that last stated its class (or model name), still in
    effect and different from the class's default.

    Args:
        argv: the command line after the subcommand (`--config a.yaml --data b.yaml --model.model_name x ...`).
        final: {"data": the source's final init_args, "model": {"model_kwargs": the final model_kwargs}}.
        defaults: the same keys' defaults in the chosen class's signature.
    """
    checks = (("data", "source", "init_args", "data.source.init_args"), ("model", "model_name", "model_kwargs", ""))
    messages = []
    for part, chooser, group, prefix in checks:
        sections = _sections(argv, part)
        chosen_at, settings = _replay(sections, chooser, group)
        if chosen_at <= 0:
            continue
        chooser_origin = sections[chosen_at][0]
        for key, setting in settings.items():
            value = final.get(part, {}).get(key, defaults.get(part, {}).get(key))
            if setting.position < chosen_at and value != defaults.get(part, {}).get(key):
                name = f"{prefix}.{key}" if prefix else f"model.{key}"
                messages.append(
                    f"{name}={value!r} comes from {setting.origin}, earlier than {chooser_origin} which "
                    f"chose the {'data source' if part == 'data' else 'model'}: it is carried over; set it again "
                    f"after {chooser_origin} if it is not meant (see docs/datasets.md, 'Composing configs')"
                )
    return messages


def architecture_note(model_name: str, model_kwargs: Mapping[str, Any] | None, parameters: int, classes: int) -> str:
    """'' when `model_kwargs` leave `model_name`'s architecture alone, else a sentence with both parameter counts."""
    changed = {key: value for key, value in (model_kwargs or {}).items() if key in ARCHITECTURE_KWARGS}
    if not changed:
        return ""
    import timm
    import torch

    with torch.device("meta"):  # counts parameters without allocating them
        default = timm.create_model(model_name, num_classes=classes)
    named = sum(parameter.numel() for parameter in default.parameters())
    return (
        f"model_kwargs {changed} change {model_name}'s architecture: {parameters:,} parameters instead of its "
        f"{named:,}. To switch models, give a model config (--model configs/model/<name>.yaml), which restates "
        "model_kwargs"
    )
