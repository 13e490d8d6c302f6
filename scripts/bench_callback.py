"""What the LocalizationCallback costs: one validation epoch with and without it, side by side in one run.

    python scripts/bench_callback.py                       # the default synthetic config, random init
    python scripts/bench_callback.py --quick               # 4 validation batches, one timed epoch
    python scripts/bench_callback.py --ckpt_path RUN/checkpoints/last.ckpt --out bench_callback.json

Prints a table of median wall times (after a warm-up epoch) and the ratios to plain validation; the target is
<= 1.5 x with AG-CAM alone. Also measured: all three methods of the paper (AG-CAM, rollout, LRP) side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import timm
import torch

from pipeline.callbacks import LocalizationCallback
from pipeline.cli import AgcamCLI
from pipeline.data import ViTDataModule
from pipeline.model import ViTClassifier

VARIANTS = {
    "plain validation": None,
    "+ AG-CAM": ["agcam"],
    "+ AG-CAM, rollout, LRP": ["agcam", "rollout", "lrp"],
}


def build(config: Path, overrides: list[str]) -> tuple[ViTClassifier, ViTDataModule]:
    """The model and data module of a config, instantiated as `agcam` would (no trainer run)."""
    cli = AgcamCLI(ViTClassifier, ViTDataModule, args=["--config", str(config), *overrides], run=False)
    return cli.model, cli.datamodule


def time_validation(
    model: ViTClassifier, data: ViTDataModule, methods: list[str] | None, repeats: int, root: str, batches: int | None
) -> list[float]:
    """Wall time of `repeats` validation epochs (of at most `batches` batches) after one warm-up epoch."""
    callbacks = [LocalizationCallback(methods=methods, panel_size=8)] if methods else []
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        limit_val_batches=batches,
    )
    times = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        trainer.validate(model, data, verbose=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if run:  # the first epoch warms up loaders and kernels
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "configs/synthetic.yaml")
    parser.add_argument("--ckpt_path", help="a Lightning checkpoint to load (default: the config's random init)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one timed epoch over 4 validation batches (seconds)")
    parser.add_argument("--override", nargs="*", default=[], help="extra CLI overrides, e.g. --data.batch_size=128")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
        args.override = [*args.override, "--data.eval_batch_size=64"]

    model, data = build(args.config, ["--trainer.logger=false", *args.override])
    if args.ckpt_path:
        model.load_state_dict(torch.load(args.ckpt_path, map_location="cpu", weights_only=True)["state_dict"])
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for name, methods in VARIANTS.items():
            batches = 4 if args.quick else None
            results[name] = statistics.median(time_validation(model, data, methods, args.repeats, root, batches))
    plain = results["plain validation"]
    report = {
        "config": str(args.config),
        "checkpoint": args.ckpt_path,
        "validation_images": len(data.datasets["val"]),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "lightning": pl.__version__},
        "seconds": results,
        "ratio_to_plain": {name: seconds / plain for name, seconds in results.items()},
    }
    print(f"{'variant':<28}{'seconds':>10}{'x plain':>10}")
    for name, seconds in results.items():
        print(f"{name:<28}{seconds:>10.2f}{seconds / plain:>10.2f}")
    print(f"target: + AG-CAM <= 1.5 x plain -> {report['ratio_to_plain']['+ AG-CAM']:.2f} x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
