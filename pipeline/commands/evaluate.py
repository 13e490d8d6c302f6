"""The paper's localization table for any model on a dataset split: SPEC.md's protocol, batched, per method.

Every case of the split is explained with each method; LocalizationMetrics scores the correctly classified
cases (SPEC step 6) and counts the others as skipped, exactly as LocalizationCallback does during training.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, ArgumentParser
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.callbacks import build_cases
from pipeline.data import ShapesSource, ViTDataModule
from pipeline.explained import ExplainedModel
from pipeline.metrics import ABPC, LOCALIZATION_SCORES, LocalizationMetrics

PAPER_METHODS = ("agcam", "rollout", "lrp")
EVAL_STAGES = {"val": "validate", "test": "test"}  # split -> the data module's stage that builds it
DATA_NAMES = {"synthetic": "the shapes data of configs/synthetic.yaml (ShapesSource defaults)"}
SCORE_HEADERS = dict(zip(LOCALIZATION_SCORES, ("Pixel acc.", "IoU", "Dice", "Precision", "Recall"), strict=True))


def data_module_from(spec: Sequence[str]) -> ViTDataModule:
    """A data module from the `data:` sections of YAML configs (later files override earlier ones), or a name.

    Args:
        spec: config files such as ["configs/synthetic.yaml"], or one name of DATA_NAMES ("synthetic").

    Returns:
        The data module, not set up.
    """
    if len(spec) == 1 and spec[0] in DATA_NAMES:
        return ViTDataModule(ShapesSource(), num_workers=0)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ViTDataModule, "data", fail_untyped=False, sub_configs=True)
    config = None
    for file in spec:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"--data {file}: neither a config file nor one of {sorted(DATA_NAMES)}")
        section = (yaml.safe_load(path.read_text()) or {}).get("data")
        if section is None:
            raise ValueError(f"{file}: has no `data:` section")
        try:
            config = parser.parse_object({"data": section}, config)  # positional: the keyword was renamed in 4.50
        except ArgumentError as error:
            raise ValueError(f"{file}: {error}") from None
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
    return instantiate(config).data


def split_loader(data: ViTDataModule, split: str, model: ExplainedModel) -> DataLoader:
    """The data module's evaluation batches of `split` ("val" or "test"), input size and normalization from `model`
    unless the data module sets its own."""
    if split not in EVAL_STAGES:
        raise ValueError(f"evaluate runs on {sorted(EVAL_STAGES)}, not {split!r} (training batches are augmented)")
    if data.num_classes != len(model.class_names):
        raise ValueError(f"the data has {data.num_classes} classes, the model {len(model.class_names)}")
    data.image_size = data.image_size or model.input_size
    data.mean = data.mean or model.mean
    data.std = data.std or model.std
    data.setup(EVAL_STAGES[split])
    return data.val_dataloader() if split == "val" else data.test_dataloader()


def evaluate(
    model: ExplainedModel,
    loader: DataLoader,
    methods: Sequence[str] = PAPER_METHODS,
    threshold: float = 0.5,
    abpc: bool = False,
    abpc_steps: int = 11,
) -> dict[str, Any]:
    """Localization (and ABPC) of each method over every batch of `loader`.

    Args:
        model: the model to explain.
        loader: batches from `collate_samples` (image, target, boxes, box_labels, skipped).
        methods: explainers, keys of pipeline.explain.METHODS.
        threshold: heatmap threshold of the box protocol.
        abpc: also measure ABPC (single-label only) on every image, for its label.
        abpc_steps: perturbation steps of ABPC.

    Returns:
        {"methods": {method: scores}, "unreadable": n, "unboxed": n}; scores hold the five localization means,
        pointing_game, cases (used) and skipped (misclassified), plus abpc and abpc_images with `abpc`; a mean is
        None when no case was used.
    """
    if abpc and model.multi_label:
        raise ValueError("ABPC scores a softmax class probability: it does not apply to a multi-label model")
    device = model.device
    localization = {method: LocalizationMetrics(threshold=threshold).to(device) for method in methods}
    faithfulness = {method: ABPC(steps=abpc_steps).to(device) for method in methods} if abpc else {}
    explainers = {method: model.explainer(method) for method in methods}
    unreadable = unboxed = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch"):
        unreadable += batch["skipped"]
        images = batch["image"].to(device)
        image_size = tuple(images.shape[-2:])
        on_device = {key: [t.to(device) for t in batch[key]] for key in ("boxes", "box_labels")}
        on_device["target"] = batch["target"].to(device)
        cases = build_cases({**batch, **on_device}, model.logits(images), model.multi_label)
        unboxed += cases.unboxed
        valid, case_boxes = cases.valid, cases.scored_boxes
        for method, explainer in explainers.items():
            maps = explainer(images, cases.targets)  # (B, K, gh, gw)
            localization[method].update(maps[valid], case_boxes, cases.correct[valid], image_size=image_size)
            if abpc:
                faithfulness[method].update(model.model, images, maps[:, 0], cases.targets[:, 0])
    scores = {}
    for method in methods:
        measured = {name: value.item() for name, value in localization[method].compute().items()}
        row = {name: measured.get(name) for name in (*LOCALIZATION_SCORES, "pointing_game")}
        row.update(cases=int(measured["cases"]), skipped=int(measured["skipped"]))
        if abpc:
            curves = faithfulness[method].compute()
            row.update(abpc=curves["abpc"].item() if "abpc" in curves else None, abpc_images=int(curves["count"]))
        scores[method] = row
    return {"methods": scores, "unreadable": unreadable, "unboxed": unboxed}


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
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "evaluation.json", out_dir / "evaluation.csv"
    json_path.write_text(json.dumps(results, indent=2))
    rows = [{"method": method, **row} for method, row in results["methods"].items()]
    with csv_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path
