"""A training run exports its explained checkpoint: same maps as the trained model, its last validation in the card,
and a W&B model artifact in the offline run."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger

from pipeline.cli import main
from pipeline.data import ShapesSource
from pipeline.explain import METHODS, build_explainer
from pipeline.explained import MODEL_PREFIX, load_explained, read_card, read_explained
from pipeline.lightning import ExportExplained, LocalizationCallback, RunSummary, ViTClassifier, ViTDataModule
from tests.helpers.wandb_offline import finished_records, history

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> dict:
    """One epoch on the tiny shapes data, logged to an offline W&B run, exported at the end of fit."""
    save_dir = tmp_path_factory.mktemp("run")
    pl.seed_everything(0, verbose=False)
    source = ShapesSource(256, 64, 64, image_size=32, num_classes=4)
    data = ViTDataModule(source, batch_size=32, num_workers=0)
    module = ViTClassifier(
        "vit_tiny_patch16_224", 4, class_names=source.class_names, model_kwargs=TINY_VIT, warmup_epochs=0.2
    )
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=WandbLogger(project="agcam", save_dir=str(save_dir), offline=True),
        callbacks=[
            ModelCheckpoint(save_last=True),
            LocalizationCallback(methods=["agcam", "rollout"], threshold=0.4, panel_size=0),
            RunSummary(),
            ExportExplained(checkpoint="last"),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    last_validation = {name: float(value) for name, value in trainer.callback_metrics.items() if "val/" in name}
    run_dir = Path(trainer.logger.experiment.dir).parent
    wandb.finish()  # flush the offline run file
    (exported,) = save_dir.glob("agcam/*/model.agcam")
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    return {
        "module": module,
        "exported": exported,
        "last_validation": last_validation,
        "run_dir": run_dir,
        "images": batch["image"][:8],
        "last_ckpt": trainer.checkpoint_callback.last_model_path,
    }


@pytest.mark.slow
def test_exported_maps_equal_the_trained_models(trained_run):
    trained = trained_run["module"].model.eval()
    loaded = load_explained(trained_run["exported"])
    images = trained_run["images"]
    assert torch.equal(loaded.predict(images).probs, trained(images).softmax(-1).detach())
    for method in METHODS:
        expected = build_explainer(method, trained)(images)
        assert torch.allclose(loaded.explain(images, method=method).maps, expected, atol=1e-6), method


@pytest.mark.slow
def test_the_card_carries_the_last_validation(trained_run):
    card = read_card(trained_run["exported"])
    validation = card["validation"]
    assert validation["metrics"] == pytest.approx(trained_run["last_validation"])
    assert validation["metrics"]["val/loc/agcam/cases"] + validation["metrics"]["val/loc/agcam/skipped"] == 64
    assert validation["dataset"] == {"name": "ShapesSource", "root": None, "split": "val", "images": 64}
    assert (validation["epoch"], validation["global_step"]) == (0, 8)
    assert card["explainer"] == {"methods": ["agcam", "rollout"], "threshold": 0.4}
    assert card["class_names"] == ["circle", "square", "triangle", "star"]
    assert card["input_size"] == [32, 32] and card["model_kwargs"] == TINY_VIT


@pytest.mark.slow
def test_the_explained_checkpoint_is_a_wandb_model_artifact_of_the_offline_run(trained_run):
    (run_file,) = trained_run["run_dir"].glob("run-*.wandb")
    artifacts = [r.artifact for r in finished_records(run_file) if r.WhichOneof("record_type") == "artifact"]
    (artifact,) = [a for a in artifacts if a.type == "model"]
    assert artifact.name.startswith("explained-") and set(artifact.aliases) == {"latest", "last"}
    assert [entry.path for entry in artifact.manifest.contents] == ["model.agcam"]
    assert json.loads(artifact.metadata) == read_card(trained_run["exported"])


@pytest.mark.slow
def test_agcam_export_writes_the_same_explained_checkpoint(trained_run, tmp_path, capsys):
    out = tmp_path / "cli.agcam"
    main(["export", "--ckpt_path", trained_run["last_ckpt"], "--out", str(out)])
    assert f"Explained checkpoint: {out}" in capsys.readouterr().out
    assert read_card(out) == read_card(trained_run["exported"])


@pytest.mark.slow
def test_the_run_logs_mass_in_box_and_a_per_class_table(trained_run):
    assert 0.0 <= trained_run["last_validation"]["val/loc/agcam/mass_in_box"] <= 1.0
    rows = history(trained_run["run_dir"])
    (table,) = [row for row in rows if "val/loc/agcam/per_class/_type" in row]
    assert table["val/loc/agcam/per_class/_type"] == "table-file"
    assert table["val/loc/agcam/per_class/ncols"] == 2 + 7  # class, cases, the seven scores
    (table_file,) = trained_run["run_dir"].rglob("val/loc/agcam/per_class_*.table.json")
    content = json.loads(table_file.read_text())
    assert content["columns"][:3] == ["class", "cases", "pixel_accuracy"]
    cases = sum(row[1] for row in content["data"])
    assert cases == trained_run["last_validation"]["val/loc/agcam/cases"]


def model_weights(ckpt_path: str | Path) -> dict[str, torch.Tensor]:
    """The timm model's state dict inside a Lightning checkpoint."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    return {name.removeprefix(MODEL_PREFIX): tensor for name, tensor in state.items()}


@pytest.mark.slow
def test_exporting_the_last_checkpoint_under_the_shipped_two_callback_layout(tmp_path):
    """configs/synthetic.yaml saves the best epoch with a monitored callback and last.ckpt with a second one; "last"
    exports last.ckpt (it used to read the first callback's last path, empty there, and export nothing)."""
    main([
        "fit", "--config", str(REPO / "configs/synthetic.yaml"), "--config", str(REPO / "tests/configs/tiny.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.max_epochs", "2",
        "--data.source.init_args.train_size", "64", "--data.source.init_args.val_size", "32",
        "--trainer.callbacks+=pipeline.lightning.ExportExplained", "--trainer.callbacks.checkpoint=last",
        "--trainer.callbacks.filename=last.agcam",
    ])  # fmt: skip
    wandb.finish()
    (summary_file,) = tmp_path.glob("agcam/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert Path(summary["last_checkpoint"]).name == "last.ckpt"
    run = summary_file.parent
    for exported, checkpoint in [("last.agcam", "last_checkpoint"), ("model.agcam", "best_checkpoint")]:
        card, weights = read_explained(run / exported)
        assert weights.keys() == model_weights(summary[checkpoint]).keys(), exported
        assert all(torch.equal(weights[name], tensor) for name, tensor in model_weights(summary[checkpoint]).items())
    assert read_card(run / "last.agcam")["validation"]["epoch"] == 1  # the final epoch's state
