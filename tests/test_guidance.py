"""Guided training: the context-swap counterfactual and the shares of relevance outside the labelled boxes reach
the weights; the auto weight's rule."""

import math

import pytest
import pytorch_lightning as pl
import torch

from pipeline.data import ShapesSource
from pipeline.explain import AGCAM
from pipeline.guidance import (
    AutoWeight,
    Guidance,
    guidance_loss,
    object_erased_counts,
    outside_share,
    patch_coverage,
    swap_contexts,
)
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
    for bad in (-1, "aut", float("nan"), True, None):
        with pytest.raises(ValueError, match=r"guidance_weight must be a number >= 0 or 'auto', got "):
            Guidance(weight=bad)
    assert Guidance(weight="auto").weight == "auto" and Guidance(weight=10).weight == 10
    batch, images = boxed_batch([[0, 0, 3, 3]], [1]), torch.zeros(1, 3, 8, 8)  # boxes, no masks
    for method in ("context_swap", "input_gradients"):
        with pytest.raises(ValueError, match="guidance_annotations 'masks' needs masks in the batches"):
            guidance_loss(MarkerReader(), images, batch, Guidance(1.0, method, annotations="masks"))
    with pytest.raises(ValueError, match="guidance_annotations 'masks' needs masks in the batches"):
        object_erased_counts(MarkerReader(), images, batch, "masks", 3)  # the auto weight's measurement
    with pytest.raises(ValueError, match="single-label"):
        ViTClassifier("vit_tiny_patch16_224", 4, multi_label=True, guidance_weight=1.0,
                      model_kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, weight", [("agcam", 1.0), ("input_gradients", 1.0), ("input_gradients", "auto"), ("context_swap", "auto")]
)
def test_a_guided_fit_runs_with_the_callback_and_logs_its_loss(method, weight):
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(64, 32, 32, image_size=32, num_classes=4, marker_fraction=1.0)
    module = ViTClassifier(
        "vit_tiny_patch16_224", 4, class_names=source.class_names, guidance_weight=weight, guidance_method=method,
        warmup_epochs=0.2,
        model_kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2),
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[LocalizationCallback(panel_size=0)],
    )  # fmt: skip
    trainer.fit(module, ViTDataModule(source, batch_size=16, num_workers=0))
    metrics = trainer.callback_metrics
    share = method != "context_swap"  # a share in [0, 1]; context_swap's cross-entropy is only >= 0
    assert torch.isfinite(metrics["train/guidance_loss"]) and 0 <= metrics["train/guidance_loss"] <= (1 if share else 9)
    assert metrics["train/guided_images"] + metrics["train/unguided_images"] == 64
    assert metrics["val/loc/agcam/cases"] + metrics["val/loc/agcam/skipped"] == 32
    if weight == "auto":  # four steps from 1.0 (the floor), each by a factor of at most exp(0.95)
        assert 1.0 <= metrics["train/guidance_weight"] <= math.exp(0.95 * 4)
        assert 0 <= metrics["train/object_erased_acc"] <= 1
        assert module.auto_weight.value == pytest.approx(float(metrics["train/guidance_weight"]))
    else:
        assert metrics["train/guidance_weight"] == weight


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


def test_the_auto_weight_rises_while_the_object_erased_accuracy_stays_above_chance():
    rule = AutoWeight()
    weights = [rule.step(erased_accuracy=1.0, chance=0.25) for _ in range(8)]
    assert weights[0] == pytest.approx(math.exp(0.75 - 0.05))  # from start 1.0
    assert all(later > earlier for earlier, later in zip(weights, weights[1:7]))
    assert weights[-1] == 100.0  # clipped at the upper bound


def test_the_auto_weight_decays_slowly_at_chance_and_stops_at_its_floor():
    rule = AutoWeight(start=10.0)
    assert rule.step(erased_accuracy=0.25, chance=0.25) == pytest.approx(10 * math.exp(-0.05))
    for _ in range(13):
        rule.step(erased_accuracy=0.25, chance=0.25)
    assert rule.value == pytest.approx(10 * math.exp(-0.05 * 14))  # about halved in 14 steps
    for _ in range(200):
        rule.step(erased_accuracy=0.1, chance=0.25)
    assert rule.value == 1.0


def test_the_auto_weight_follows_a_shortcut_that_comes_and_goes():
    rule = AutoWeight(start=1.0)
    learning = [rule.step(0.2, 0.2) for _ in range(5)]  # nothing learned yet: at chance, the weight stays at 1
    shortcut = [rule.step(0.95, 0.2) for _ in range(5)]  # the shortcut is taken
    dropped = [rule.step(0.2, 0.2) for _ in range(5)]  # guidance removed it
    assert learning == [1.0] * 5 and shortcut[0] > 1.0 and shortcut[-1] > 10
    assert dropped[-1] < shortcut[-1] and dropped[-1] > 0.5 * shortcut[-1]  # decays slowly, no collapse


class MarkerReader(torch.nn.Module):
    """Answers from pixel (0, 0) of channel 0, outside every box: the class is its value."""

    def forward(self, images):
        return -((images[:, 0, 0, 0, None] - torch.arange(3)) ** 2)


def test_object_erased_counts_of_a_batch():
    images = torch.zeros(4, 3, 8, 8)
    images[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 2.0])
    batch = boxed_batch([[2, 2, 5, 5], [2, 2, 5, 5], [2, 2, 5, 5], []], [0, 1, 2, 2])
    counts = object_erased_counts(MarkerReader(), images, batch, "boxes", 3)
    assert counts.tolist() == [3, 3, 1, 1, 1]  # right, images with a box, per class
    images[:, 0, 0, 0] = 0.0  # the marker gone: only class 0 stays right
    assert object_erased_counts(MarkerReader(), images, batch, "boxes", 3).tolist() == [1, 3, 1, 1, 1]


def test_swap_contexts_by_hand():
    images = torch.stack([torch.full((1, 2, 3), float(value)) for value in (1, 2, 3)])  # image i is all i + 1
    regions = torch.zeros(3, 2, 3, dtype=torch.bool)
    regions[0, 0, 0] = regions[1, 1, 2] = regions[2, 0, 0] = True
    objects = torch.zeros(3, 2, 3, dtype=torch.bool)
    objects[1, 0, 1] = objects[2, :, 0] = True  # image 1's object, image 2's objects (first column)
    swapped = swap_contexts(images, regions, objects)[:, 0]
    # image 0 on image 1's context, except where image 1 has an object: there image 0 stays
    assert swapped[0].tolist() == [[1, 1, 2], [2, 2, 2]]
    assert swapped[1].tolist() == [[2, 3, 3], [2, 3, 2]]  # on image 2's context, its first column not taken
    assert swapped[2].tolist() == [[3, 1, 1], [1, 1, 1]]  # on image 0's context (cyclic)


class ObjectReader(torch.nn.Module):
    """Answers from pixel (5, 5) of channel 0, inside every box: the class is its value."""

    def forward(self, images):
        return -((images[:, 0, 5, 5, None] - torch.arange(3)) ** 2) * 10


@pytest.mark.parametrize("annotations", ["boxes", "masks"])
def test_context_swap_loss_is_high_for_a_shortcut_reader_and_low_for_an_object_reader(annotations):
    images = torch.zeros(3, 3, 8, 8)
    for index, label in enumerate((0, 1, 2)):
        images[index, 0, 0, 0] = images[index, 0, 5, 5] = label  # the shortcut pixel and the object both say it
    batch = boxed_batch([[4, 4, 7, 7]] * 3, [0, 1, 2])
    batch["mask"] = torch.zeros(3, 8, 8, dtype=torch.long)
    batch["mask"][:, 5:7, 5:7] = 1  # object 0 of each image, a smaller region than its box
    guidance = Guidance(weight=1.0, method="context_swap", annotations=annotations)
    shortcut_loss, guided, _ = guidance_loss(MarkerReader(), images, batch, guidance)
    object_loss, _, _ = guidance_loss(ObjectReader(), images, batch, guidance)
    assert guided == 3
    # on the originals both readers are right; on the swapped images only the object reader still is
    labels = batch["target"]
    for reader in (MarkerReader(), ObjectReader()):
        assert (reader(images).argmax(dim=1) == labels).all()
    assert object_loss.item() == pytest.approx(0.0, abs=1e-3)
    assert shortcut_loss.item() > 1.0


def test_context_swap_loss_reaches_the_weights():
    model = tiny_vit(num_classes=4)
    images = torch.randn(3, 3, 32, 32)
    batch = boxed_batch([[0, 0, 15, 15], [8, 8, 31, 31], []], [1, 2, 3])
    loss, guided, unguided = guidance_loss(model, images, batch, Guidance(weight="auto"))
    assert (guided, unguided) == (2, 1) and loss.item() > 0
    (grad,) = torch.autograd.grad(loss, [model.patch_embed.proj.weight])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
