"""LocalizationCallback: exact bookkeeping, no side effects on training, improvement with training, options."""

import copy
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.strategies import ModelParallelStrategy

from pipeline.data import ShapesSource
from pipeline.explain import AGCAM
from pipeline.lightning import LocalizationCallback, ViTClassifier, ViTDataModule
from pipeline.scoring import LocalizationScorer, build_cases

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


def tiny_setup(train_size=256, val_size=64, num_classes=4, batch_size=32, seed=0):
    pl.seed_everything(seed, verbose=False)
    source = ShapesSource(train_size, val_size, val_size, image_size=32, num_classes=num_classes)
    data = ViTDataModule(source, batch_size=batch_size, num_workers=0)
    model = ViTClassifier(
        "vit_tiny_patch16_224", num_classes, class_names=source.class_names, model_kwargs=TINY_VIT, warmup_epochs=0.2
    )
    return model, data


def trainer(callbacks, max_epochs=1, **kwargs):
    options = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


class TrainingStateSpy(pl.Callback):
    """Snapshots parameter gradients and optimizer state around each validation epoch."""

    def __init__(self):
        self.changes = []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.before = self.snapshot(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        after = self.snapshot(trainer, pl_module)
        self.changes.append(not equal_nested(self.before, after))

    @staticmethod
    def snapshot(trainer, pl_module):
        grads = [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()]
        optimizer = copy.deepcopy(trainer.optimizers[0].state_dict()) if trainer.optimizers else None
        return grads, optimizer, [p.requires_grad for p in pl_module.parameters()], pl_module.training


def equal_nested(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal_nested(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal_nested(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
def test_callback_leaves_gradients_optimizer_and_training_untouched():
    final_params = []
    for with_callback in (False, True):
        model, data = tiny_setup()
        spy = TrainingStateSpy()
        callbacks = [spy, LocalizationCallback(methods=["agcam", "lrp"], panel_size=0)] if with_callback else [spy]
        trainer(callbacks, max_epochs=2, limit_train_batches=3).fit(model, data)
        assert spy.changes == [False, False]
        final_params.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*final_params))  # bit-identical training with and without


@pytest.mark.slow
def test_localization_improves_with_training_and_counts_every_case():
    model, data = tiny_setup(train_size=512, num_classes=4)
    callback = LocalizationCallback(panel_size=0)
    at_init = trainer([callback]).validate(model, data, verbose=False)[0]
    trainer([callback], max_epochs=4).fit(model, data)
    trained = trainer([callback]).validate(model, data, verbose=False)[0]

    for result in (at_init, trained):
        assert result["val/loc/agcam/cases"] + result["val/loc/agcam/skipped"] == 64
    assert trained["val/acc"] > 0.8
    print(f"AG-CAM IoU at init {at_init.get('val/loc/agcam/iou')}, trained {trained['val/loc/agcam/iou']}")
    assert trained["val/loc/agcam/iou"] > at_init.get("val/loc/agcam/iou", 0.0) + 0.1


def test_metrics_equal_a_direct_computation_over_the_same_cases():
    from pipeline.metrics import box_localization

    model, data = tiny_setup(val_size=40, batch_size=16)
    callback = LocalizationCallback(panel_size=0)
    result = trainer([callback]).validate(model, data, verbose=False)[0]

    data.setup("validate")
    explainer = AGCAM(model.model.eval())
    scores, correct = [], []
    for batch in data.val_dataloader():
        batch.pop("skipped")
        logits = model(batch["image"])
        maps = explainer(batch["image"], batch["target"])
        scores.append(box_localization(maps, batch["boxes"], image_size=(32, 32))["iou"])
        correct.append(logits.argmax(-1) == batch["target"])
    scores, correct = torch.cat(scores), torch.cat(correct)
    assert result["val/loc/agcam/cases"] == correct.sum().item()
    assert result["val/loc/agcam/skipped"] == (~correct).sum().item()
    if correct.any():
        assert result["val/loc/agcam/iou"] == pytest.approx(scores[correct].double().mean().item(), abs=1e-6)


def test_every_n_epochs_and_max_batches():
    calls = []

    class CountingAGCAM(AGCAM):
        def __call__(self, images, target=None, recorded=None):
            calls.append(len(images))
            return super().__call__(images, target, recorded)

    model, data = tiny_setup(train_size=64, val_size=64, batch_size=16)
    callback = LocalizationCallback(every_n_epochs=2, max_batches=2, panel_size=0)
    fit = trainer([callback], max_epochs=2, limit_train_batches=1)
    original_setup = callback.setup

    def setup_with_counter(trainer_, pl_module, stage):
        original_setup(trainer_, pl_module, stage)
        callback.scorer.explainers["agcam"] = CountingAGCAM(pl_module.model)

    callback.setup = setup_with_counter
    fit.fit(model, data)
    assert calls == [16, 16]  # epoch 0 skipped entirely, epoch 1: the first two batches only
    assert fit.callback_metrics["val/loc/agcam/cases"] + fit.callback_metrics["val/loc/agcam/skipped"] == 32


def test_methods_side_by_side_abpc_and_panel_pngs(tmp_path):
    model, data = tiny_setup(val_size=32, batch_size=16)
    callback = LocalizationCallback(methods=["agcam", "rollout", "lrp", "grad_rollout"], panel_size=3, abpc_images=4)
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    run = trainer([callback], logger=logger, default_root_dir=tmp_path)
    result = run.validate(model, data, verbose=False)[0]
    for method in ("agcam", "rollout", "lrp", "grad_rollout"):
        assert result[f"val/loc/{method}/cases"] + result[f"val/loc/{method}/skipped"] == 32
        assert result[f"val/abpc/{method}/count"] == 4
        assert torch.isfinite(torch.tensor(result[f"val/abpc/{method}/abpc"]))
        assert len(list(tmp_path.glob(f"run/version_0/panels/val-epoch000/{method}/*.png"))) == 3


def test_mask_mode_scores_against_the_instance_masks():
    model, data = tiny_setup(val_size=32, batch_size=16)
    result = trainer([LocalizationCallback(use_masks=True, panel_size=0)]).validate(model, data, verbose=False)[0]
    assert result["val/loc/agcam/cases"] + result["val/loc/agcam/skipped"] == 32


def test_mixed_precision_training_gets_float32_explanations():
    model, data = tiny_setup(train_size=64, val_size=32, batch_size=16)
    run = trainer([LocalizationCallback(panel_size=0)], precision="bf16-mixed", limit_train_batches=2)
    run.fit(model, data)
    assert torch.isfinite(run.callback_metrics["val/loc/agcam/cases"])
    images = torch.randn(4, 3, 32, 32)
    explainer = AGCAM(model.model.eval())
    reference = explainer(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = explainer(images)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, reference, rtol=1e-2, atol=1e-6)


def test_multi_label_cases_pair_each_present_class_with_its_boxes():
    boxes = [torch.tensor([[0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 2, 2]]), torch.tensor([[3, 3, 6, 6]])]
    batch = {
        "target": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        "boxes": boxes,
        "box_labels": [torch.tensor([2, 0, 2]), torch.tensor([1])],
    }
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    cases = build_cases(batch, logits, multi_label=True)
    assert cases.targets.tolist() == [[0, 2], [1, 0]]
    assert cases.valid.tolist() == [[True, True], [True, False]]
    assert cases.correct.tolist()[0] == [True, False] and cases.correct.tolist()[1][0] is True
    assert torch.equal(cases.boxes[0][1], boxes[0][[0, 2]]) and torch.equal(cases.boxes[0][0], boxes[0][[1]])


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="Unknown explanation method"):
        LocalizationCallback(methods=["gradcam"])
    with pytest.raises(ValueError, match="every_n_epochs"):
        LocalizationCallback(every_n_epochs=0)


def test_the_callback_explains_from_the_validation_forward(monkeypatch):
    def validate(precision):
        model, data = tiny_setup(val_size=40, batch_size=16)  # 3 validation batches
        forwards = []
        model.model.patch_embed.register_forward_hook(lambda *args: forwards.append(1))
        callback = LocalizationCallback(methods=["agcam", "rollout"], panel_size=0)
        result = trainer([callback], precision=precision).validate(model, data, verbose=False)[0]
        return len(forwards), {key: value for key, value in result.items() if key.startswith("val/loc/")}

    forwards, recorded = validate("32")
    assert forwards == 3  # one forward per batch: the validation step's, which the explainers replay from
    forwards, mixed = validate("bf16-mixed")
    assert forwards == 3
    monkeypatch.setattr(LocalizationScorer, "can_record", property(lambda self: False))
    forwards, separate = validate("32")
    assert forwards == 9  # without the record: the validation forward, then one per method
    assert recorded["val/loc/agcam/cases"] > 0 and recorded.keys() == separate.keys() == mixed.keys()
    for key, value in separate.items():  # the recorded forward runs in float32 under bf16-mixed too
        assert recorded[key] == pytest.approx(value, abs=1e-6) and mixed[key] == pytest.approx(value, abs=1e-6), key


def test_reliance_and_atlas_on_val_and_test(tmp_path):
    model, data = tiny_setup(val_size=32, batch_size=16)
    callback = LocalizationCallback(panel_size=0, reliance=True, atlas=True)
    run = trainer([callback], logger=pl.loggers.CSVLogger(tmp_path, name="run"), default_root_dir=tmp_path)
    for stage, run_stage in (("val", run.validate), ("test", run.test)):
        result = run_stage(model, data, verbose=False)[0]
        assert result[f"{stage}/reliance/images"] == 32 and result[f"{stage}/reliance/unboxed"] == 0
        assert result[f"{stage}/reliance/acc"] == pytest.approx(result[f"{stage}/acc"])  # same images, same logits
        for name in ("acc_object_erased", "acc_context_erased", "chance"):
            assert 0 <= result[f"{stage}/reliance/{name}"] <= 1
        reliance_rows = callback.per_class[stage]["reliance"]  # summary.json's per-class output
        assert sum(row["images"] for row in reliance_rows.values()) == 32
        (atlas,) = tmp_path.glob(f"run/version_*/atlas/{stage}-epoch000.png")
        assert Image.open(atlas).size == (96 * 4, 96)  # one 96 px tile per class


def test_reliance_and_atlas_options_are_checked():
    with pytest.raises(ValueError, match="atlas: true draws AG-CAM maps: add 'agcam' to methods"):
        LocalizationCallback(methods=["rollout"], atlas=True)
    multi_label = ViTClassifier("vit_tiny_patch16_224", 4, multi_label=True, model_kwargs=TINY_VIT)
    with pytest.raises(ValueError, match="reliance: true is for single-label data"):
        LocalizationCallback(reliance=True).setup(SimpleNamespace(strategy=None), multi_label, "fit")


def test_multi_label_data_under_fsdp_is_refused_before_any_batch():
    """Processes would run different numbers of backward passes, each a collective: refused, not left to hang."""
    model = ViTClassifier("vit_tiny_patch16_224", 3, multi_label=True, model_kwargs=TINY_VIT)
    fsdp_trainer = SimpleNamespace(strategy=ModelParallelStrategy())
    with pytest.raises(ValueError, match="multi-label data under ModelParallelStrategy"):
        LocalizationCallback().setup(fsdp_trainer, model, "fit")
    LocalizationCallback().setup(SimpleNamespace(strategy=None), model, "fit")  # any other strategy: set up
