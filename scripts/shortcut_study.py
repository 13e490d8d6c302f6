"""Does the monitor catch a shortcut, and does explanation-guided training remove it? Plain vs guided, same budget.

    python -m scripts.shortcut_study --out runs/shortcut_study                 # plain vs guided (configs/shortcut.yaml)
    python -m scripts.shortcut_study --calibration --out runs/shortcut_study   # + the data calibration rows
    python -m scripts.shortcut_study --train_size 2000 --epochs 1              # a quicker, smaller version

Every row is one `agcam fit` of configs/shortcut.yaml (the default tiny ViT, 2 epochs; a class-coded marker in
every train/val image, 70% of objects in their class hue), then `agcam test` on the two test variants: the marker
at a wrong class's spot (shuffled) and no marker (absent). Reported: val accuracy, val AG-CAM IoU, pointing game
and mass in box, both test accuracies, and the fit's wall time. Nothing here knows where the marker is: the
guidance loss sees only images, labels and boxes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pipeline.lightning.cli import run_lightning_cli
from pipeline.lightning.run import checkpoint_paths

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shortcut.yaml"
SOURCE = "--data.source.init_args."
PLAIN = "plain: 70% class hue + marker (shortcut.yaml)"
CALIBRATION = {  # name -> data overrides: the calibration table of the shortcut data
    "class hue always + marker": {"hue_reliability": 1.0},
    "random hue always + marker": {"hue_reliability": 0.0},
    PLAIN: {},
    "70% class hue, no marker": {"marker_fraction": 0.0},
}
REPORTED = {
    "val/acc": "val acc",
    "val/loc/agcam/iou": "val IoU",
    "val/loc/agcam/pointing_game": "val pointing",
    "val/loc/agcam/mass_in_box": "val mass in box",
}


def run(args: list[str]):
    """One LightningCLI run without W&B, quiet; the CLI object (its trainer holds the metrics)."""
    quiet = [
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]
    return run_lightning_cli([*args, *quiet])


def study_row(folder: Path, data: dict[str, Any], guidance: list[str], common: list[str]) -> dict[str, Any]:
    """Fit (with the `--model.guidance_*` arguments given), then test on the shuffled-marker and marker-free splits."""
    data_args = [arg for name, value in data.items() for arg in (f"{SOURCE}{name}", str(value))]
    fit_args = ["fit", "--config", str(CONFIG), *common, *data_args, "--trainer.default_root_dir", str(folder)]
    start = time.perf_counter()
    fitted = run([*fit_args, *guidance])
    seconds = time.perf_counter() - start
    metrics = {label: float(fitted.trainer.callback_metrics[name]) for name, label in REPORTED.items()}
    _, checkpoint = checkpoint_paths(fitted.trainer)
    for variant in ("shuffled", "absent"):
        tested = run(["test", "--config", str(CONFIG), *common, *data_args, f"{SOURCE}test_marker", variant,
                      "--ckpt_path", checkpoint, "--trainer.default_root_dir", str(folder)])  # fmt: skip
        metrics[f"test acc ({variant} marker)"] = float(tested.trainer.callback_metrics["test/acc"])
    return {**metrics, "fit seconds": seconds}


def format_rows(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table, one row per run."""
    columns = list(next(iter(rows.values())))
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{value:.2f}" if value < 10 else f"{value:.0f}" for value in row.values())
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/shortcut_study"))
    parser.add_argument("--guidance_weight", type=float, default=1.0)
    parser.add_argument(
        "--guidance_methods", nargs="*", default=["agcam", "input_gradients"], help="one guided run per method"
    )
    parser.add_argument("--no_plain", dest="plain", action="store_false", help="skip the plain run")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_size", type=int, default=8000)
    parser.add_argument("--val_size", type=int, default=512)
    parser.add_argument("--calibration", action="store_true", help="also the data calibration rows")
    args = parser.parse_args(argv)
    common = ["--trainer.max_epochs", str(args.epochs), f"{SOURCE}train_size", str(args.train_size),
              f"{SOURCE}val_size", str(args.val_size), f"{SOURCE}test_size", str(args.val_size)]  # fmt: skip
    runs = {name: (data, []) for name, data in CALIBRATION.items()} if args.calibration else {}
    if args.plain:
        runs[PLAIN] = ({}, [])
    for method in args.guidance_methods:
        guidance = ["--model.guidance_weight", str(args.guidance_weight), "--model.guidance_method", method]
        runs[f"guided by {method} (weight {args.guidance_weight:g}), same data"] = ({}, guidance)
    rows = {}
    for index, (name, (data, guidance)) in enumerate(runs.items()):
        rows[name] = study_row(args.out / f"run{index}", data, guidance, common)
        print(f"{name}: {rows[name]}", flush=True)
    table = format_rows(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shortcut_study.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2)
    )
    (args.out / "shortcut_study.md").write_text(table + "\n")
    return rows


if __name__ == "__main__":
    main()
