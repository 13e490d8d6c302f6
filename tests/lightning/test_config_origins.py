"""Settings carried over from an earlier config into a class or model a later one chose are named at fit start."""

import inspect
from pathlib import Path

import timm

from pipeline.data import ShapesSource
from pipeline.lightning.config_origins import architecture_note, carried_over

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHAPES_DEFAULTS = {key: p.default for key, p in inspect.signature(ShapesSource).parameters.items()}
TINY_KWARGS = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}


def test_a_data_config_after_the_shortcut_job_names_the_markers_it_keeps(tmp_path):
    my_data = tmp_path / "my_data.yaml"
    my_data.write_text("source:\n  class_path: pipeline.data.ShapesSource\n  init_args:\n    train_size: 64\n")
    argv = ["--config", str(CONFIGS / "shortcut.yaml"), "--data", str(my_data)]
    final = {"data": {**SHAPES_DEFAULTS, "train_size": 64, "marker_fraction": 1.0, "seed": 0}, "model": {}}
    messages = carried_over(argv, final, {"data": SHAPES_DEFAULTS})
    assert len(messages) == 1  # seed: 0 is carried too, but it is the default
    assert messages[0].startswith(f"data.source.init_args.marker_fraction=1.0 comes from {CONFIGS / 'shortcut.yaml'}")
    assert f"earlier than {my_data} which chose the data source" in messages[0]


def test_a_model_name_on_top_of_the_default_job_names_the_tiny_model_kwargs():
    argv = ["--config", str(CONFIGS / "synthetic.yaml"), "--model.model_name", "vit_base_patch16_224"]
    final = {"data": {}, "model": {"model_kwargs": TINY_KWARGS}}
    (message,) = carried_over(argv, final, {"model": {"model_kwargs": None}})
    assert message.startswith(f"model.model_kwargs={TINY_KWARGS!r} comes from {CONFIGS / 'synthetic.yaml'}")
    swapped = ["--config", str(CONFIGS / "synthetic.yaml"), "--model", str(CONFIGS / "model/vit_base_pretrained.yaml")]
    assert carried_over(swapped, {"data": {}, "model": {"model_kwargs": None}}, {"model": {"model_kwargs": None}}) == []


def test_the_architecture_note_gives_both_parameter_counts():
    model = timm.create_model("vit_base_patch16_224", num_classes=6, **TINY_KWARGS)
    parameters = sum(p.numel() for p in model.parameters())
    note = architecture_note("vit_base_patch16_224", TINY_KWARGS, parameters, classes=6)
    assert f"{parameters:,} parameters instead of its 85,803,270" in note and "--model configs/model/" in note
    assert architecture_note("vit_base_patch16_224", {"drop_rate": 0.1}, parameters, classes=6) == ""
