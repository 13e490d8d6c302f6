"""One scoring loop: the training callback and `agcam evaluate` give the same numbers on the same model and split."""

import pytest
import pytorch_lightning as pl
import torch

from pipeline.commands.evaluate import evaluate
from pipeline.data import DatasetSplits, ShapesSource
from pipeline.explained import ExplainedCard, ExplainedModel
from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from pipeline.scoring import LocalizationScorer, ScoringOptions

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
METHODS = ["agcam", "rollout"]


@pytest.mark.parametrize("use_masks", [False, True])
def test_callback_and_evaluate_agree_masks_and_abpc_included(use_masks):
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(64, 40, 40, image_size=32, num_classes=4)
    module = ViTClassifier("vit_tiny_patch16_224", 4, class_names=source.class_names, model_kwargs=TINY_VIT)
    options = dict(threshold=0.4, use_masks=use_masks, pointing_tolerance=3, abpc_images=40, abpc_steps=5)
    callback = LocalizationCallback(methods=METHODS, panel_size=0, **options)
    trainer = pl.Trainer(
        accelerator="cpu", callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    logged = trainer.validate(module, ViTDataModule(source, batch_size=16, num_workers=0), verbose=False)[0]

    model = ExplainedModel(
        module.model, ExplainedCard("vit_tiny_patch16_224", 4, module.input_config, source.class_names)
    )
    data = DatasetSplits(source, batch_size=16, num_workers=0)
    data.prepare("validate", model.input_config)
    options = ScoringOptions(
        methods=METHODS, threshold=0.4, abpc_images=40, abpc_steps=5, use_masks=use_masks, pointing_tolerance=3
    )
    results = evaluate(model, data.loader("val"), options)
    for method in METHODS:
        row = results["methods"][method]
        assert row["cases"] + row["skipped"] == 40 and row["abpc_images"] == 40
        assert logged[f"val/loc/{method}/cases"] == row["cases"]
        for name in ("pixel_accuracy", "iou", "dice", "precision", "recall", "pointing_game"):
            assert logged[f"val/loc/{method}/{name}"] == pytest.approx(row[name], abs=1e-6), name
        assert logged[f"val/abpc/{method}/abpc"] == pytest.approx(row["abpc"], abs=1e-6)


def test_the_scorer_spends_its_abpc_budget_once_per_reset():
    torch.manual_seed(0)
    module = ViTClassifier("vit_tiny_patch16_224", 4, model_kwargs=TINY_VIT)
    scorer = LocalizationScorer(module.model, ScoringOptions(abpc_images=5, abpc_steps=3))
    batch = {
        "target": torch.tensor([0, 1, 2, 3]),
        "boxes": [torch.tensor([[0, 0, 9, 9]])] * 4,
        "box_labels": [torch.tensor([0])] * 4,
    }
    images = torch.randn(4, 3, 32, 32)
    for _ in range(2):
        scorer.update(images, module.model(images), batch)
    assert scorer.compute()["agcam"]["abpc/count"] == 5
    scorer.reset()
    scorer.update(images, module.model(images), batch)
    assert scorer.compute()["agcam"]["abpc/count"] == 4


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(methods=["gradcam"]), r"methods: Unknown explanation method\(s\) \['gradcam'\]"),
        (dict(methods=[]), "methods: No explanation method"),
        (dict(threshold=0.0), r"threshold must lie in \(0, 1\)"),
        (dict(threshold=1), r"threshold must lie in \(0, 1\)"),
        (dict(pointing_tolerance=-1), "pointing_tolerance must be a whole number of pixels >= 0"),
        (dict(abpc_images=-1), "abpc_images must be >= 0"),
        (dict(abpc_steps=1), "abpc_steps must be >= 2"),
    ],
)
def test_scoring_options_are_checked_once_by_name(options, named):
    with pytest.raises(ValueError, match=named):
        ScoringOptions(**options)


def test_the_scorer_refuses_abpc_on_multi_label_data():
    model = ViTClassifier("vit_tiny_patch16_224", 4, model_kwargs=TINY_VIT).model
    with pytest.raises(ValueError, match="ABPC .* multi-label"):
        LocalizationScorer(model, ScoringOptions(abpc_images=None), multi_label=True)
