"""`python -m tests.helpers.ddp_validate OUT DEVICES PRECISION record|separate`: validate a tiny model with AG-CAM.

Writes OUT/rank<r>.json per process: the model forwards run (patch embeddings), the validation batches, and the
logged localization metrics. `separate`: the callback's explainers run their own forward, as without the record.
Lightning's DDP launcher re-runs this module in the second process.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl

from pipeline.data import ShapesSource
from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from pipeline.scoring import LocalizationScorer


def main(out: Path, devices: int, precision: str, mode: str) -> None:
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(8, 16, 16, image_size=32, num_classes=4)
    data = ViTDataModule(source, batch_size=8, eval_batch_size=1, num_workers=0)  # one image per batch: see test_ddp
    tiny = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
    model = ViTClassifier("vit_tiny_patch16_224", 4, class_names=source.class_names, model_kwargs=tiny)
    if mode == "separate":
        LocalizationScorer.can_record = property(lambda self: False)
    forwards, batches = [], []
    model.model.patch_embed.register_forward_hook(lambda *args: forwards.append(1))
    counter = pl.Callback()
    counter.on_validation_batch_end = lambda *args, **kwargs: batches.append(1)
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", precision=precision,
        callbacks=[LocalizationCallback(panel_size=0), counter], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    result = trainer.validate(model, data, verbose=False)[0]
    metrics = {key: float(value) for key, value in result.items() if key.startswith("val/loc/")}
    report = {"forwards": len(forwards), "batches": len(batches), "metrics": metrics}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
