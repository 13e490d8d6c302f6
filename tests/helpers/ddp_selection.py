"""Run by tests/lightning/test_fair_sampling.py under two DDP processes: each writes the image ids its
LocalizationCallback explained per epoch to OUT/rank<r>.json.

    python -m tests.helpers.ddp_selection OUT
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl

from pipeline.data import ClassFolderSource
from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from tests.helpers.datasets import write_class_tree

MAX_IMAGES = 10


class RecordingCallback(LocalizationCallback):
    def on_validation_epoch_start(self, trainer, pl_module):
        super().on_validation_epoch_start(trainer, pl_module)
        self.explained_per_epoch = getattr(self, "explained_per_epoch", []) + [[]]

    def _explain_batch(self, pl_module, outputs, batch):
        self.explained_per_epoch[-1].extend(batch["image_id"])
        super()._explain_batch(pl_module, outputs, batch)


def main(out: Path) -> None:
    data_root = out / "data"
    if not data_root.exists():  # the launcher's first process writes the tree before it starts the second
        write_class_tree(data_root, classes=4, per_class=5)
    source = ClassFolderSource(data_root)
    data = ViTDataModule(source, batch_size=8, eval_batch_size=3, num_workers=0)
    tiny = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
    model = ViTClassifier("vit_tiny_patch16_224", 4, class_names=source.class_names, model_kwargs=tiny)
    callback = RecordingCallback(max_images=MAX_IMAGES, panel_size=0)
    trainer = pl.Trainer(
        callbacks=[callback], max_epochs=2, limit_train_batches=1, accelerator="cpu", devices=2, strategy="ddp",
        logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, data)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(callback.explained_per_epoch))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
