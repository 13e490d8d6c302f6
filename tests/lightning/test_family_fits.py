"""The backbones people fine-tune train with the callback on, and round-trip through an explained checkpoint."""

import re

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from pipeline.data import ShapesSource
from pipeline.explain import METHODS, build_explainer
from pipeline.explained import export_checkpoint, load_explained
from pipeline.lightning import LocalizationCallback, RunSummary, ViTClassifier, ViTDataModule

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
FAMILIES = [
    "eva02_small_patch14_224",  # Eva: SwiGLU, RoPE, token average
    "vit_base_patch16_dinov3",  # Eva: RoPE, 4 registers, average
    "vit_pe_core_base_patch16_224",  # Eva: RoPE, attention-pool head
    "vit_base_patch16_rope_224",  # Eva: RoPE, class token
    "beit_base_patch16_224",  # Beit: relative position bias, average
    "vit_base_patch16_siglip_224",  # VisionTransformer, no class token, attention pool
    "vit_medium_patch16_gap_256",  # VisionTransformer, no class token, average
    "vit_betwixt_patch16_reg4_gap_256",  # registers, average
]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", FAMILIES)
def test_a_tiny_fit_with_the_callback_then_an_explained_checkpoint_that_explains_alike(tmp_path, model_name):
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(32, 16, 16, image_size=32, num_classes=4)
    module = ViTClassifier(model_name, 4, class_names=source.class_names, model_kwargs=TINY, warmup_epochs=0.5)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints"), LocalizationCallback(panel_size=0), RunSummary()],
    )  # fmt: skip
    trainer.fit(module, ViTDataModule(source, batch_size=16, num_workers=0))
    metrics = trainer.callback_metrics
    assert metrics["val/loc/agcam/cases"] + metrics["val/loc/agcam/skipped"] == 16
    assert all(torch.isfinite(value) for name, value in metrics.items() if name.startswith("val/loc/"))

    exported = load_explained(export_checkpoint(trainer.checkpoint_callback.best_model_path, tmp_path / "m.agcam"))
    images = torch.randn(3, 3, 32, 32)
    trained = module.model.eval()
    for method in METHODS:
        try:
            expected = build_explainer(method, trained)(images)
        except ValueError as refused:  # LRP where its rules are not defined: the same clear error both ways
            with pytest.raises(ValueError, match=re.escape(str(refused)[:40])):
                exported.explain(images, method=method)
            continue
        assert torch.allclose(exported.explain(images, method=method).maps, expected, atol=1e-6), method
