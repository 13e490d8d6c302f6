"""Explanation-guided training: a loss on AG-CAM relevance outside the labelled boxes that reaches the weights."""

import pytest
import pytorch_lightning as pl
import torch

from pipeline.data import ShapesSource
from pipeline.explain import AGCAM
from pipeline.guidance import Guidance, guidance_loss, outside_share, patch_coverage
from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from tests.helpers.models import tiny_vit


def boxed_batch(boxes: list[list[int]], labels: list[int]) -> dict:
    return {
        "target": torch.tensor(labels),
        "boxes": [torch.tensor([box], dtype=torch.float32) if box else torch.zeros(0, 4) for box in boxes],
        "box_labels": [
            torch.tensor([label]) if box else torch.zeros(0, dtype=torch.long) for box, label in zip(boxes, labels)
        ],
    }


def test_outside_share_by_hand():
    maps = torch.zeros(1, 2, 2)
    maps[0, 0, 0], maps[0, 1, 1] = 3.0, 1.0
    coverage = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    assert outside_share(maps, coverage).item() == pytest.approx(0.5 / 4)
    regions = torch.zeros(1, 8, 8, dtype=torch.bool)
    regions[0, :4, :2] = True
    assert patch_coverage(regions, (2, 2)).tolist() == [[[0.5, 0.0], [0.0, 0.0]]]


def test_guidance_loss_reaches_the_weights_and_leaves_the_explainer_unchanged():
    model = tiny_vit(num_classes=4)
    images = torch.randn(3, 3, 32, 32)
    batch = boxed_batch([[0, 0, 15, 15], [8, 8, 31, 31], []], [1, 2, 3])
    before = AGCAM(model)(images, batch["target"])
    loss, guided, unguided = guidance_loss(model, images, batch, Guidance(weight=1.0, method="agcam"))
    assert (guided, unguided) == (2, 1) and 0 < loss.item() < 1
    grads = torch.autograd.grad(loss, [model.head.weight, model.blocks[0].attn.qkv.weight])
    for grad in grads:
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(AGCAM(model)(images, batch["target"]), before)


def test_a_batch_without_boxes_is_counted_not_guided():
    model = tiny_vit(num_classes=4)
    loss, guided, unguided = guidance_loss(
        model, torch.randn(2, 3, 32, 32), boxed_batch([[], []], [0, 1]), Guidance(1.0)
    )
    assert loss.item() == 0 and (guided, unguided) == (0, 2)


def test_bad_guidance_settings_are_named():
    with pytest.raises(ValueError, match="guidance.weight must be >= 0"):
        Guidance(weight=-1)
    with pytest.raises(ValueError, match="single-label"):
        ViTClassifier("vit_tiny_patch16_224", 4, multi_label=True, guidance_weight=1.0,
                      model_kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", ["agcam", "input_gradients"])
def test_a_guided_fit_runs_with_the_callback_and_logs_its_loss(method):
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(64, 32, 32, image_size=32, num_classes=4, marker_fraction=1.0)
    module = ViTClassifier(
        "vit_tiny_patch16_224", 4, class_names=source.class_names, guidance_weight=1.0, guidance_method=method,
        warmup_epochs=0.2,
        model_kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2),
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[LocalizationCallback(panel_size=0)],
    )  # fmt: skip
    trainer.fit(module, ViTDataModule(source, batch_size=16, num_workers=0))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/guidance_loss"]) and 0 <= metrics["train/guidance_loss"] <= 1
    assert metrics["train/guided_images"] + metrics["train/unguided_images"] == 64
    assert metrics["val/loc/agcam/cases"] + metrics["val/loc/agcam/skipped"] == 32


def test_input_gradient_guidance_reaches_the_weights():
    model = tiny_vit(num_classes=4)
    images = torch.randn(2, 3, 32, 32)
    batch = boxed_batch([[0, 0, 15, 15], [8, 8, 31, 31]], [1, 2])
    loss, guided, _ = guidance_loss(model, images, batch, Guidance(weight=1.0, method="input_gradients"))
    assert guided == 2 and 0 < loss.item() < 1
    (grad,) = torch.autograd.grad(loss, [model.patch_embed.proj.weight])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(block.attn.fused_attn for block in model.blocks)  # restored
