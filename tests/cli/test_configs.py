"""Every shipped config parses, and a data or model config swaps in without undoing the default job's settings."""

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def printed_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


DATA = sorted(path.name for path in (CONFIGS / "data").glob("*.yaml"))
MODELS = sorted(path.name for path in (CONFIGS / "model").glob("*.yaml"))
PAIRS = [(data, "vit_tiny_scratch.yaml") for data in DATA] + [("voc.yaml", model) for model in MODELS]


@pytest.mark.parametrize("data, model", PAIRS)
def test_data_and_model_configs_compose_with_the_default_job(capsys, data, model):
    default = printed_config(capsys, "--config", str(CONFIGS / "synthetic.yaml"))
    config = printed_config(
        capsys,
        "--config", str(CONFIGS / "synthetic.yaml"),
        "--data", str(CONFIGS / "data" / data),
        "--model", str(CONFIGS / "model" / model),
    )  # fmt: skip
    assert config["trainer"] == default["trainer"]  # callbacks, logger and epochs stay
    source = yaml.safe_load((CONFIGS / "data" / data).read_text())["source"]
    assert config["data"]["source"]["class_path"] == source["class_path"]
    assert source["init_args"].items() <= config["data"]["source"]["init_args"].items()
    assert config["model"]["model_name"] == yaml.safe_load((CONFIGS / "model" / model).read_text())["model_name"]


def test_the_shortcut_job_parses_with_its_watch_and_marker(capsys):
    config = printed_config(capsys, "--config", str(CONFIGS / "shortcut.yaml"))
    callbacks = [callback["class_path"] for callback in config["trainer"]["callbacks"]]
    assert "pipeline.lightning.LocalizationWatch" in callbacks
    assert config["data"]["source"]["init_args"]["marker_fraction"] == 1.0
    assert config["data"]["augmentation"]["hflip"] is False
    (localization,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("LocalizationCallback")]
    assert localization["init_args"]["reliance"] is True and localization["init_args"]["atlas"] is True
