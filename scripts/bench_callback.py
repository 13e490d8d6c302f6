"""What the LocalizationCallback and explanation guidance cost, each beside its plain counterpart in one run.

    python -m scripts.bench_callback                       # the default synthetic config, random init
    python -m scripts.bench_callback --quick               # 4 validation batches, one timed epoch
    python -m scripts.bench_callback --ckpt_path RUN/checkpoints/last.ckpt --out bench_callback.json
    python -m scripts.bench_callback --quick --vit_base         # also ViT-B/16 at 224 px (random weights, batch 4)

Prints a table of median wall times (after a warm-up epoch) and the ratios to plain validation; the targets are
+ AG-CAM <= 1.15 x plain validation (the explainers replay from the validation step's own forward), and <= 1.3 x
for ViT-B/16 at 224 px. Also measured: all three methods of the paper (AG-CAM, rollout, LRP) side by side,
object reliance (`reliance: true`, at most two extra forwards per image) and the class atlas on top of AG-CAM, the
median training step with the guidance loss (`--model.guidance_weight`) against a plain training step, and the
memory of AG-CAM's record of a validation batch next to the activations a training step saves for its backward.
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

from pipeline.explain import AGCAM
from pipeline.explain.base import record_batch
from pipeline.files import write_text
from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from pipeline.lightning.cli import AgcamCLI

VARIANTS = {  # name -> LocalizationCallback options (None: no callback)
    "plain validation": None,
    "+ AG-CAM": {"methods": ["agcam"]},
    "+ AG-CAM, rollout, LRP": {"methods": ["agcam", "rollout", "lrp"]},
    "+ AG-CAM + reliance": {"methods": ["agcam"], "reliance": True},  # two extra forwards per image
    "+ AG-CAM + class atlas": {"methods": ["agcam"], "atlas": True},
}


def build(config: Path, overrides: list[str]) -> tuple[ViTClassifier, ViTDataModule]:
    """The model and data module of a config, instantiated as `agcam` would (no trainer run)."""
    cli = AgcamCLI(ViTClassifier, ViTDataModule, args=["--config", str(config), *overrides], run=False)
    return cli.model, cli.datamodule


def time_validation(
    model: ViTClassifier, data: ViTDataModule, options: dict | None, repeats: int, root: str, batches: int | None
) -> list[float]:
    """Wall time of `repeats` validation epochs (of at most `batches` batches) after one warm-up epoch."""
    callbacks = [LocalizationCallback(**options, panel_size=8)] if options else []
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


VIT_BASE = [  # ViT-B/16 at 224 px, random weights: 2 validation batches of 4 images
    "--model.model_name=vit_base_patch16_224",
    "--model.model_kwargs={}",
    "--data.source.init_args.image_size=224",
    "--data.source.init_args.val_size=8",
    "--data.source.init_args.train_size=8",
    "--data.eval_batch_size=4",
    "--data.num_workers=0",
]


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def saved_for_backward(run) -> tuple[object, list[torch.Tensor]]:
    """`run()`'s result and the tensors autograd saved for a backward while it ran."""
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        return run(), saved


def memory(model: ViTClassifier, data: ViTDataModule) -> dict[str, float]:
    """MB of AG-CAM's record of one validation batch (the tensors it holds, and any graph it keeps), and of the
    activations a training step on that batch saves for its backward."""
    data.prepare("validate", model.input_config)
    images = next(iter(data.val_dataloader()))["image"]
    explainer = AGCAM(model.model)
    recorded, graph = saved_for_backward(lambda: record_batch([explainer], images))
    held = [value for value in vars(recorded.recorders[explainer]).values() if isinstance(value, torch.Tensor)]
    held += [t for value in vars(recorded.recorders[explainer]).values() if isinstance(value, list) for t in value]
    model.model.train()
    logits, activations = saved_for_backward(lambda: model.model(images))
    model.model.eval()
    return {
        "batch": len(images),
        "record_mb": storage_bytes(held + graph) / 2**20,
        "training_step_activations_mb": storage_bytes([*activations, logits]) / 2**20,
    }


GUIDANCE_VARIANTS = {
    "plain training step": [],
    "guided by AG-CAM": ["--model.guidance_weight=1.0", "--model.guidance_method=agcam"],
    "guided by input gradients": ["--model.guidance_weight=1.0", "--model.guidance_method=input_gradients"],
    "guided by input gradients, auto": ["--model.guidance_weight=auto", "--model.guidance_method=input_gradients"],
    "guided by context swap": ["--model.guidance_weight=1.0", "--model.guidance_method=context_swap"],
    "guided by context swap, auto": ["--model.guidance_weight=auto"],  # the default method
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
    parser.add_argument("--repeats", type=int, help="timed validation epochs per variant (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="one timed epoch over 4 validation batches (seconds)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--override", nargs="*", default=[], help="extra CLI overrides, e.g. --data.batch_size=128")
    parser.add_argument("--train_steps", type=int, default=10, help="timed training steps, plain and guided")
    parser.add_argument("--vit_base", action="store_true", help="also time ViT-B/16 at 224 px (random weights)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.quick:
        args.override = [*args.override, "--data.eval_batch_size=64"]

    model, data = build(args.config, ["--trainer.logger=false", *args.override])
    if args.ckpt_path:
        model.load_state_dict(torch.load(args.ckpt_path, map_location="cpu", weights_only=True)["state_dict"])
    results, base = {}, {}
    with tempfile.TemporaryDirectory() as root:
        for name, options in VARIANTS.items():
            batches = 4 if args.quick else None
            results[name] = statistics.median(time_validation(model, data, options, args.repeats, root, batches))
        if args.vit_base:
            base_model, base_data = build(args.config, ["--trainer.logger=false", *args.override, *VIT_BASE])
            for name in ("plain validation", "+ AG-CAM"):
                seconds = time_validation(base_model, base_data, VARIANTS[name], args.repeats, root, None)
                base[name] = statistics.median(seconds)
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
        "memory": memory(model, data),
    }
    if base:
        report["vit_base_seconds"] = base
        report["vit_base_ratio_to_plain"] = {name: seconds / base["plain validation"] for name, seconds in base.items()}
    print(f"{'variant':<28}{'seconds':>10}{'x plain':>10}")
    for name, seconds in results.items():
        print(f"{name:<28}{seconds:>10.2f}{seconds / plain:>10.2f}")
    print(f"target: + AG-CAM <= 1.15 x plain -> {report['ratio_to_plain']['+ AG-CAM']:.2f} x")
    for name, seconds in base.items():
        print(f"{'ViT-B/16 224 px ' + name:<40}{seconds:>10.2f}{report['vit_base_ratio_to_plain'][name]:>10.2f}")
    if base:
        print(f"target: ViT-B/16 + AG-CAM <= 1.3 x plain -> {report['vit_base_ratio_to_plain']['+ AG-CAM']:.2f} x")
    reliance_cost = (results["+ AG-CAM + reliance"] - results["+ AG-CAM"]) / plain
    print(f"reliance (two extra forwards per image): + {reliance_cost:.2f} x plain validation")
    mem = report["memory"]
    print(
        f"AG-CAM record of a validation batch of {mem['batch']}: {mem['record_mb']:.1f} MB; a training step's saved "
        f"activations: {mem['training_step_activations_mb']:.1f} MB"
    )
    print(f"{'training step':<36}{'seconds':>10}{'x plain':>10}")
    for name, seconds in steps.items():
        print(f"{name:<36}{seconds:>10.4f}{report['step_ratio_to_plain'][name]:>10.2f}")
    if args.out:
        write_text(args.out, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
