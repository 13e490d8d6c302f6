"""`agcam evaluate`: the paper's localization table for any model on a dataset split, per method.

The batches go through `pipeline.scoring.LocalizationScorer`, the loop the training callback runs, so a checkpoint
scores here exactly as it did in training (masks, pointing tolerance and ABPC included).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError, ArgumentParser
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.data import DatasetSplits, ShapesSource
from pipeline.explained import ExplainedModel
from pipeline.files import write_all
from pipeline.metrics import RELIANCE_SCORES, REPORTED_SCORES
from pipeline.scoring import LocalizationScorer, RelianceScorer, ScoringOptions, class_rows

PAPER_METHODS = ("agcam", "rollout", "lrp")
EVAL_STAGES = {"val": "validate", "test": "test"}  # split -> the stage that builds it
DATA_NAMES = {"synthetic": "the shapes data of configs/synthetic.yaml (ShapesSource defaults)"}
EVALUATION_FILES = ("evaluation.json", "evaluation.csv")
HEADERS = ("Pixel acc.", "IoU", "Dice", "Precision", "Recall", "Pointing", "Mass in box")
SCORE_HEADERS = dict(zip(REPORTED_SCORES, HEADERS, strict=True))


def data_splits_from(spec: Sequence[str]) -> DatasetSplits:
    """Dataset splits from the `data:` sections of YAML configs (later files override earlier ones), or a name.

    Args:
        spec: config files such as ["configs/synthetic.yaml"], or one name of DATA_NAMES ("synthetic").

    Returns:
        The splits, not prepared.
    """
    if len(spec) == 1 and spec[0] in DATA_NAMES:
        return DatasetSplits(ShapesSource(), num_workers=0)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DatasetSplits, "data", fail_untyped=False, sub_configs=True)
    config = None
    for file in spec:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"--data {file}: neither a config file nor one of {sorted(DATA_NAMES)}")
        document = read_yaml(path)
        section = document.get("data") if isinstance(document, dict) else None
        if isinstance(section, str):  # `data: data/shapes.yaml`: a file relative to the config, as LightningCLI reads
            section = read_yaml(path.parent / section)
        if not isinstance(section, dict):
            raise ValueError(f"--data {file}: needs a top-level `data:` mapping or data config file (see configs/)")
        try:
            config = parser.parse_object({"data": section}, config)  # positional: renamed in 4.50
        except ArgumentError as error:
            raise ValueError(f"--data {file}: {error}") from None
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
    return instantiate(config).data


def read_yaml(path: Path) -> object:
    """A YAML file's document, or a ValueError naming the file and the line that does not parse."""
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"--data {path}: not valid YAML{line}; fix the file or give another config") from None


def split_loader(data: DatasetSplits, split: str, model: ExplainedModel) -> DataLoader:
    """The evaluation batches of `split` ("val" or "test"), input size and normalization from `model` unless the
    data config sets its own."""
    if split not in EVAL_STAGES:
        raise ValueError(f"evaluate runs on {sorted(EVAL_STAGES)}, not {split!r} (training batches are augmented)")
    if data.num_classes != len(model.class_names):
        raise ValueError(f"the data has {data.num_classes} classes, the model {len(model.class_names)}")
    data.prepare(EVAL_STAGES[split], model.input_config)
    return data.loader(split)


def evaluate(
    model: ExplainedModel,
    loader: DataLoader,
    options: ScoringOptions | None = None,
    *,
    reliance: bool = False,
) -> dict[str, Any]:
    """Localization (and ABPC) of each method over every batch of `loader`.

    Args:
        model: the model to explain.
        loader: batches from `collate_samples` (image, target, boxes, box_labels, skipped; mask in mask mode).
        options: what to measure (default: the paper's methods, threshold 0.5, no ABPC).
        reliance: also measure object reliance (accuracy with the objects erased, and with the context erased).

    Returns:
        {"methods": {method: scores}, "per_class": {method: {class: scores}}, "unreadable": n, "unboxed": n};
        scores hold the localization means (REPORTED_SCORES), cases (used) and skipped (misclassified), plus abpc
        and abpc_images with ABPC on; a mean is None when no case was used. Per class: classes with used cases.
        With `reliance`, also "reliance": {acc, acc_object_erased, acc_context_erased, chance, images, unboxed,
        per_class: {class: {images, acc, acc_object_erased, acc_context_erased}}}.
    """
    options = options or ScoringOptions(methods=PAPER_METHODS)
    device = model.device
    scorer = LocalizationScorer(model.model, options, multi_label=model.multi_label).to(device)
    if reliance and model.multi_label:
        raise ValueError("--reliance is for single-label models (one labelled class per image); leave it out")
    reliance_scorer = None
    if reliance:
        reliance_scorer = RelianceScorer(model.model, len(model.class_names), use_masks=options.use_masks).to(device)
    unreadable = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch"):
        unreadable += batch.pop("skipped")
        batch = {key: _to_device(value, device) for key, value in batch.items()}
        logits = model.logits(batch["image"])
        scorer.update(batch["image"], logits, batch)
        if reliance_scorer is not None:
            reliance_scorer.update(batch["image"], logits, batch)
    results = scorer.compute()
    scores, per_class = {}, {}
    for method, measured in results.items():
        values = {name: value.item() for name, value in measured.items() if value.ndim == 0}
        row = {name: values.get(name) for name in REPORTED_SCORES}
        row.update(cases=int(values["cases"]), skipped=int(values["skipped"]))
        if options.abpc_images != 0:
            row.update(abpc=values.get("abpc/abpc"), abpc_images=int(values["abpc/count"]))
        scores[method] = row
        per_class[method] = class_rows(measured, model.class_names)
    unboxed = int(next(iter(results.values()))["unboxed"]) if results else 0
    evaluated = {"methods": scores, "per_class": per_class, "unreadable": unreadable, "unboxed": unboxed}
    if reliance_scorer is not None:
        measured = reliance_scorer.compute()
        evaluated["reliance"] = {
            **{name: _finite_or_none(value) for name, value in measured.items() if value.ndim == 0},
            "per_class": class_rows(measured, model.class_names, count="images", scores=RELIANCE_SCORES),
        }
    return evaluated


def _finite_or_none(value: torch.Tensor) -> float | None:
    """A JSON-safe number: None for NaN (no image counted)."""
    number = value.item()
    return number if number == number else None


def format_reliance(reliance: dict[str, Any]) -> str:
    """One line: accuracy on the counted images, with the objects erased, with the context erased, and chance."""

    def cell(name: str) -> str:
        return "-" if reliance[name] is None else f"{reliance[name]:.4f}"

    return (
        f"Object reliance on {int(reliance['images'])} images: accuracy {cell('acc')}, objects erased "
        f"{cell('acc_object_erased')}, context erased {cell('acc_context_erased')} (chance {cell('chance')})"
    )


def _to_device(value: Any, device: torch.device) -> Any:
    """A batch entry on `device`: tensors moved, lists of tensors moved one by one, the rest as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [tensor.to(device) for tensor in value]
    return value


def format_table(scores: dict[str, dict[str, Any]]) -> str:
    """The paper's table: one row per method; the five scores, ABPC when measured, cases used and skipped."""
    with_abpc = any("abpc" in row for row in scores.values())
    headers = ["Method", *SCORE_HEADERS.values(), *(["ABPC"] if with_abpc else []), "Used", "Skipped"]
    lines = [" ".join(f"{header:>10}" if i else f"{header:<14}" for i, header in enumerate(headers))]
    for method, row in scores.items():
        values = [row[name] for name in SCORE_HEADERS] + ([row.get("abpc")] if with_abpc else [])
        cells = [f"{value:>10.4f}" if value is not None else f"{'-':>10}" for value in values]
        lines.append(" ".join([f"{method:<14}", *cells, f"{row['cases']:>10d}", f"{row['skipped']:>10d}"]))
    return "\n".join(lines)


def write_evaluation(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write the results as JSON (everything) and CSV (one row per method).

    Args:
        results: what `evaluate` returned, plus any description of the run (model, data, threshold).
        out_dir: the folder to write `evaluation.json` and `evaluation.csv` into.

    Returns:
        (json path, csv path).
    """
    out_dir = Path(out_dir)
    json_path, csv_path = (out_dir / name for name in EVALUATION_FILES)
    rows = [{"method": method, **row} for method, row in results["methods"].items()]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    # both or neither: a failure (a full disk) leaves no file behind, so a retry is not refused
    write_all({json_path: json.dumps(results, indent=2, allow_nan=False).encode(), csv_path: table.getvalue().encode()})
    return json_path, csv_path
