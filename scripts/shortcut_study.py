"""Does the monitor catch a shortcut, and does explanation-guided training remove it? Plain vs auto-guided, two
shortcuts of different kinds, same budget.

    python -m scripts.shortcut_study --out runs/shortcut_study                 # every row (configs/shortcut.yaml)
    python -m scripts.shortcut_study --train_size 2000 --epochs 3 --val_size 256   # a quicker, smaller version
    python -m scripts.shortcut_study --rows "border, plain" --fixed_weights 1 10  # chosen rows + fixed weights

Every row is one `agcam fit` of configs/shortcut.yaml (the default tiny ViT; 70% of objects in their class hue)
with one of two shortcuts in every train/val image: the white marker at a class-coded spot on the top border, or a
border all around the image tinted in the class's hue. Then `agcam test` on the two test variants: the shortcut
of a wrong class (shuffled) and none (absent). Reported: val accuracy, AG-CAM pointing game and mass in box, the
accuracy with the objects / the context erased (object reliance), which LocalizationWatch signals fired, both
test accuracies, the last and the largest guidance weight and the fit's wall time; each run's last class atlas is
copied to `<out>/run<i>/atlas.png`. Nothing here knows where the shortcut is: the guidance sees only images, labels
and boxes.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from pipeline.files import write_bytes, write_text
from pipeline.lightning.cli import run_lightning_cli
from pipeline.lightning.run import checkpoint_paths, run_folder
from pipeline.lightning.watch import LocalizationWatch

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shortcut.yaml"
SOURCE = "--data.source.init_args."
MARKER = {}  # configs/shortcut.yaml as it is: the white marker, 70% class hue
BORDER = {"marker_fraction": 0.0, "border_fraction": 1.0}  # a class-tinted frame instead of the marker
OBJECT_ONLY = {"marker_fraction": 0.0}  # no shortcut: what the object alone allows
CLEAN = {"hue_reliability": 1.0}  # the marker, but the object's hue always tells the class too
SHAPE_ONLY = {"hue_reliability": 0.0}  # the marker, and only the shape tells the class
AUTO = ["--model.guidance_weight", "auto"]  # the default method, context_swap
AUTO_GRADIENTS = [*AUTO, "--model.guidance_method", "input_gradients"]
ROWS = {  # name -> (data overrides, guidance arguments)
    "object only: 70% class hue, no shortcut": (OBJECT_ONLY, []),
    "marker, plain (configs/shortcut.yaml)": (MARKER, []),
    "marker, guidance auto": (MARKER, AUTO),
    "border, plain": (BORDER, []),
    "border, guidance auto": (BORDER, AUTO),
    "class hue always + marker, plain": (CLEAN, []),
    "class hue always + marker, guidance auto": (CLEAN, AUTO),
    "random hue always + marker, plain": (SHAPE_ONLY, []),
    "marker, guidance auto, input gradients": (MARKER, AUTO_GRADIENTS),
    "border, guidance auto, input gradients": (BORDER, AUTO_GRADIENTS),
}
REPORTED = {
    "val/acc": "val acc",
    "val/loc/agcam/pointing_game": "val pointing",
    "val/loc/agcam/mass_in_box": "val mass in box",
    "val/reliance/acc_object_erased": "val acc, object erased",
    "val/reliance/acc_context_erased": "val acc, context erased",
}


def run(args: list[str], csv_folder: Path | None = None):
    """One quiet LightningCLI run, without W&B: no logger, or a CSVLogger writing to `csv_folder`; the CLI object
    (its trainer holds the metrics)."""
    logger = ["--trainer.logger", "false"]
    if csv_folder is not None:
        logger = ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(csv_folder)]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    return run_lightning_cli([*args, *logger, *quiet])


def peak_weight(metrics_csv: Path) -> float:
    """The largest `train/guidance_weight` a fit logged (every `log_every_n_steps`-th step: 20 in the config; 0.0
    unguided)."""
    with metrics_csv.open() as file:
        weights = [
            float(row["train/guidance_weight"]) for row in csv.DictReader(file) if row.get("train/guidance_weight")
        ]
    return max(weights, default=0.0)


def study_row(folder: Path, data: dict[str, Any], guidance: list[str], common: list[str]) -> dict[str, Any]:
    """Fit (with the `--model.guidance_*` arguments given), then test on the shuffled-shortcut and shortcut-free
    splits; the last validation's class atlas is copied to `folder`/atlas.png."""
    data_args = [arg for name, value in data.items() for arg in (f"{SOURCE}{name}", str(value))]
    fit_args = ["fit", "--config", str(CONFIG), *common, *data_args, "--trainer.default_root_dir", str(folder)]
    start = time.perf_counter()
    fitted = run([*fit_args, *guidance], csv_folder=folder / "csv")
    seconds = time.perf_counter() - start
    callback_metrics = fitted.trainer.callback_metrics
    metrics: dict[str, Any] = {label: float(callback_metrics[name]) for name, label in REPORTED.items()}
    (watch,) = [callback for callback in fitted.trainer.callbacks if isinstance(callback, LocalizationWatch)]
    fired = [signal for signal, reason in watch.signals.items() if reason is not None]
    metrics["watch"] = " + ".join(fired) or "-"
    _, checkpoint = checkpoint_paths(fitted.trainer)
    for variant in ("shuffled", "absent"):
        tested = run(["test", "--config", str(CONFIG), *common, *data_args, f"{SOURCE}test_marker", variant,
                      "--ckpt_path", checkpoint, "--trainer.default_root_dir", str(folder)])  # fmt: skip
        metrics[f"test acc ({variant} shortcut)"] = float(tested.trainer.callback_metrics["test/acc"])
    atlases = sorted((run_folder(fitted.trainer) / "atlas").glob("val-epoch*.png"))
    if atlases:
        write_bytes(folder / "atlas.png", atlases[-1].read_bytes())
    weight = callback_metrics.get("train/guidance_weight")
    metrics["last guidance weight"] = float(weight) if weight is not None else 0.0
    logged = peak_weight(Path(fitted.trainer.logger.log_dir) / "metrics.csv")
    metrics["peak guidance weight"] = max(logged, metrics["last guidance weight"])  # a short fit may log no step
    return {**metrics, "fit seconds": seconds}


def format_rows(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table, one row per run."""
    columns = list(next(iter(rows.values())))
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [value if isinstance(value, str) else _number(value) for value in row.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/shortcut_study"))
    parser.add_argument("--rows", nargs="*", choices=list(ROWS), default=list(ROWS), help="the rows to run, in order")
    parser.add_argument("--fixed_weights", type=float, nargs="*", default=[], help="also fixed-weight guided rows")
    parser.add_argument("--guidance_method", help="--model.guidance_method of the fixed-weight rows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_size", type=int, default=8000)
    parser.add_argument("--val_size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0, help="the training seed (the data's own seed stays 0)")
    args = parser.parse_args(argv)
    common = ["--trainer.max_epochs", str(args.epochs), f"{SOURCE}train_size", str(args.train_size),
              f"{SOURCE}val_size", str(args.val_size), f"{SOURCE}test_size", str(args.val_size),
              "--seed_everything", str(args.seed)]  # fmt: skip
    runs = {name: ROWS[name] for name in args.rows}
    for weight in args.fixed_weights:
        for shortcut, data in (("marker", MARKER), ("border", BORDER)):
            method = ["--model.guidance_method", args.guidance_method] if args.guidance_method else []
            runs[f"{shortcut}, guidance weight {weight:g}"] = (data, ["--model.guidance_weight", str(weight), *method])
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for index, (name, (data, guidance)) in enumerate(runs.items()):
        rows[name] = study_row(args.out / f"run{index}", data, guidance, common)
        print(f"{name}: {rows[name]}", flush=True)
        write_text(
            args.out / "shortcut_study.json",
            json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2),
        )  # after every row: a long study keeps what it measured
    table = format_rows(rows)
    print(table)
    write_text(args.out / "shortcut_study.md", table + "\n")
    return rows


if __name__ == "__main__":
    main()
