"""ViTClassifier: builds any class-token timm ViT, learns, loads local weights, refuses bad setups clearly."""

import pytest
import pytorch_lightning as pl
import timm
import torch
from safetensors.torch import save_file

from pipeline.data import ShapesSource
from pipeline.lightning import ViTClassifier, ViTDataModule

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


def quiet_trainer(**kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    options.update(kwargs)
    return pl.Trainer(enable_model_summary=False, num_sanity_val_steps=0, **options)


def test_a_tiny_vit_overfits_a_few_batches():
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(train_size=32, val_size=8, test_size=8, image_size=32, num_classes=4)
    data = ViTDataModule(source, batch_size=16, num_workers=0)
    model = ViTClassifier("vit_tiny_patch16_224", 4, model_kwargs=TINY_VIT, lr=3e-3, warmup_epochs=1, weight_decay=0.0)
    trainer = quiet_trainer(max_epochs=40, overfit_batches=2)
    trainer.fit(model, data)
    assert trainer.callback_metrics["train/loss"] < 0.1
    assert trainer.callback_metrics["train/acc"] == 1.0


def test_multi_label_mode_uses_bce_and_reports_map():
    model = ViTClassifier("vit_tiny_patch16_224", 3, multi_label=True, model_kwargs=TINY_VIT)
    logits = torch.tensor([[2.0, -2.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(model._loss(logits, target), expected)
    assert model.val_map is not None


def test_label_smoothing_changes_the_single_label_loss():
    plain = ViTClassifier("vit_tiny_patch16_224", 3, model_kwargs=TINY_VIT)
    smooth = ViTClassifier("vit_tiny_patch16_224", 3, model_kwargs=TINY_VIT, label_smoothing=0.2)
    logits, target = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    assert smooth._loss(logits, target) > plain._loss(logits, target)


def test_input_config_follows_the_built_input_size():
    model = ViTClassifier("vit_tiny_patch16_224", 3, model_kwargs=dict(TINY_VIT, img_size=(32, 48)))
    assert model.input_config.image_size == (32, 48)
    assert model.input_config.mean == (0.5, 0.5, 0.5) and model.input_config.interpolation == "bicubic"


def test_local_weights_file_loads_the_backbone_and_reinitializes_a_different_head(tmp_path):
    donor = timm.create_model("vit_tiny_patch16_224", num_classes=1000, **TINY_VIT)
    path = tmp_path / "donor.safetensors"
    save_file(donor.state_dict(), str(path))
    model = ViTClassifier("vit_tiny_patch16_224", 5, weights_path=str(path), model_kwargs=TINY_VIT).model
    assert torch.equal(model.blocks[1].attn.qkv.weight, donor.blocks[1].attn.qkv.weight)
    assert torch.equal(model.pos_embed, donor.pos_embed)
    assert model.head.weight.shape == (5, 64)


def test_layer_decay_gives_lower_learning_rates_to_earlier_blocks():
    model = ViTClassifier("vit_tiny_patch16_224", 3, model_kwargs=TINY_VIT, layer_decay=0.5)
    model.trainer = quiet_trainer(max_epochs=1)
    model.trainer.fit_loop.max_batches = 10  # what estimated_stepping_batches reads without a fit
    optimizer = model.configure_optimizers()["optimizer"]
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert len(scales) > 2 and scales[0] < scales[-1] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(model_name="vit_tiny_patch16_2244"), ValueError, "Did you mean vit_tiny_patch16_224"),
        (dict(model_name="resnet18"), ValueError, "'resnet18' cannot be explained"),
        (dict(model_name="swin_tiny_patch4_window7_224"), ValueError, "Swin has no global attention between tokens"),
        (dict(weights_path="/no/such/weights.safetensors"), FileNotFoundError, "/no/such/weights.safetensors"),
        (dict(class_names=["a", "b"]), ValueError, "2 class_names given for num_classes=3"),
    ],
)
def test_bad_model_setups_fail_at_construction(kwargs, error, message):
    options = dict(model_name="vit_tiny_patch16_224", num_classes=3)
    options.update(kwargs)
    if options["model_name"] == "vit_tiny_patch16_224":
        options["model_kwargs"] = TINY_VIT
    with pytest.raises(error, match=message):
        ViTClassifier(**options)


def test_num_classes_mismatch_with_the_data_fails_before_training():
    source = ShapesSource(train_size=16, val_size=8, test_size=8, image_size=32, num_classes=4)
    data = ViTDataModule(source, batch_size=8, num_workers=0)
    model = ViTClassifier("vit_tiny_patch16_224", 6, model_kwargs=TINY_VIT)
    with pytest.raises(ValueError, match="num_classes=6 but the data has 4 classes"):
        quiet_trainer(max_epochs=1).fit(model, data)
