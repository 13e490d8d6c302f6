"""What the LocalizationCallback and explanation guidance cost, each beside its plain counterpart in one run.

    python -m scripts.bench_callback                       # the default synthetic config, random init
    python -m scripts.bench_callback --quick               # 4 validation batches, one timed epoch
    python -m scripts.bench_callback --ckpt_path RUN/checkpoints/last.ckpt --out bench_callback.json

Prints a table of median wall times (after a warm-up epoch) and the ratios to plain validation; the target is
<= 1.5 x with AG-CAM alone. Also measured: all three methods of the paper (AG-CAM, rollout, LRP) side by side, and
the median training step with the guidance loss (`--model.guidance_weight`) against a plain training step.
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

from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from pipeline.lightning.cli import AgcamCLI

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


GUIDANCE_VARIANTS = {
    "plain training step": [],
    "guided by AG-CAM": ["--model.guidance_weight=1.0", "--model.guidance_method=agcam"],
    "guided by input gradients": ["--model.guidance_weight=1.0", "--model.guidance_method=input_gradients"],
}


class StepTimer(pl.Callback):
    """Wall time of every training step (forward, loss, backward, optimizer step)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start)


def time_training_steps(config: Path, overrides: list[str], guidance: list[str], steps: int, root: str) -> float:
    """Median seconds of a training step (after one warm-up step) with the given `--model.guidance_*` options."""
    model, data = build(config, [*overrides, *guidance])
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="auto", devices=1, logger=False, callbacks=[timer], max_epochs=1, limit_train_batches=steps + 1,
        limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root,
    )  # fmt: skip
    trainer.fit(model, data)
    return statistics.median(timer.seconds[1:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "configs/synthetic.yaml")
    parser.add_argument("--ckpt_path", help="a Lightning checkpoint to load (default: the config's random init)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one timed epoch over 4 validation batches (seconds)")
    parser.add_argument("--override", nargs="*", default=[], help="extra CLI overrides, e.g. --data.batch_size=128")
    parser.add_argument("--train_steps", type=int, default=10, help="timed training steps, plain and guided")
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
        train_overrides = ["--trainer.logger=false", *args.override]
        steps = {
            name: time_training_steps(args.config, train_overrides, guidance, args.train_steps, root)
            for name, guidance in GUIDANCE_VARIANTS.items()
        }
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
        "training_step_seconds": steps,
        "step_ratio_to_plain": {name: seconds / steps["plain training step"] for name, seconds in steps.items()},
    }
    print(f"{'variant':<28}{'seconds':>10}{'x plain':>10}")
    for name, seconds in results.items():
        print(f"{name:<28}{seconds:>10.2f}{seconds / plain:>10.2f}")
    print(f"target: + AG-CAM <= 1.5 x plain -> {report['ratio_to_plain']['+ AG-CAM']:.2f} x")
    print(f"{'training step':<28}{'seconds':>10}{'x plain':>10}")
    for name, seconds in steps.items():
        print(f"{name:<28}{seconds:>10.4f}{report['step_ratio_to_plain'][name]:>10.2f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
