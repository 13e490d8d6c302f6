"""Explained checkpoints: one safetensors file that loads without Lightning, and refuses any damaged or foreign file."""

import json
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pipeline.explained
from pipeline.cli import main
from pipeline.explain import AGCAM
from pipeline.explained import (
    CARD_METADATA_KEY,
    HASH_KEY,
    ExplainedCheckpointError,
    content_hash,
    load_explained,
    read_card,
)
from tests.helpers.explained import CLASS_NAMES, TINY_KWARGS, tiny_explained_file, tiny_vit


@pytest.fixture
def explained_file(tmp_path) -> Path:
    return tiny_explained_file(tmp_path / "tiny.agcam")


def raised_only_from_our_code(excinfo: pytest.ExceptionInfo) -> bool:
    """The clear error comes from pipeline/explained/ itself, not from deep inside safetensors, json or torch."""
    package = Path(pipeline.explained.__file__).parent
    frames = {Path(frame.filename) for frame in traceback.extract_tb(excinfo.tb)}
    allowed = (Path(__file__).name, "contextlib.py")
    ours = {frame for frame in frames if frame.parent == package or frame.name in allowed}
    error = excinfo.value
    chained = error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__)
    return frames == ours and not chained


def rewrite_card(path: Path, edit) -> None:
    """Rewrite the file's card with `edit(card)` applied, weights unchanged."""
    card = read_card(path)
    edit(card)
    save_file(load_file(path), path, metadata={CARD_METADATA_KEY: json.dumps(card)})


def test_loaded_model_predicts_and_explains_like_the_model_it_was_saved_from(explained_file):
    loaded = load_explained(explained_file)
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)

    prediction = loaded.predict(images)
    assert prediction.probs.shape == (3, 4) and torch.allclose(prediction.probs.sum(-1), torch.ones(3))
    assert torch.equal(prediction.classes, prediction.probs.argmax(-1))

    explanation = loaded.explain(images)
    assert explanation.maps.shape == (3, 4, 4) and explanation.heatmaps.shape == (3, 32, 32)
    assert torch.equal(explanation.targets, prediction.classes)
    assert explanation.heatmaps.min() >= 0 and explanation.heatmaps.max() <= 1
    assert torch.allclose(explanation.maps, AGCAM(tiny_vit())(images), atol=1e-6)

    by_name = loaded.explain(images, target="star", method="rollout")
    assert by_name.targets.tolist() == [3, 3, 3] and by_name.scores.shape == (3,)
    several = loaded.explain(images, target=torch.tensor([[0, 1]] * 3), method="lrp")
    assert several.maps.shape == (3, 2, 4, 4) and several.heatmaps.shape == (3, 2, 32, 32)


def test_the_card_describes_the_model(explained_file):
    card = read_card(explained_file)
    assert card["format"] == "agcam-explained-checkpoint" and card["format_version"] == 1
    assert card["timm_model"] == "vit_tiny_patch16_224" and card["model_kwargs"] == TINY_KWARGS
    assert card["class_names"] == CLASS_NAMES and card["input_size"] == [32, 32] and not card["multi_label"]
    assert card["explainer"] == {"methods": ["agcam"], "threshold": 0.5}
    assert set(card["versions"]) == {"torch", "timm", "safetensors", "pipeline"}
    assert len(card["content_sha256"]) == 64


def test_loading_works_in_a_fresh_process_where_lightning_cannot_be_imported(explained_file):
    script = f"""
import sys
sys.modules["pytorch_lightning"] = None  # any import of it now raises ImportError
sys.modules["lightning"] = None
import torch
import pipeline
model = pipeline.load_explained({str(explained_file)!r})
assert isinstance(model, pipeline.ExplainedModel)
images = torch.randn(2, 3, 32, 32)
print(model.predict(images).classes.shape[0], tuple(model.explain(images, method="lrp").heatmaps.shape))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "(2,", "32,", "32)"]


def test_a_changed_weight_byte_is_a_hash_mismatch(explained_file):
    data = bytearray(explained_file.read_bytes())
    header_length = int.from_bytes(data[:8], "little")
    data[8 + header_length + 1000] ^= 0x01  # one bit of one weight
    explained_file.write_bytes(bytes(data))
    with pytest.raises(ExplainedCheckpointError, match="tiny.agcam: content hash mismatch") as excinfo:
        load_explained(explained_file)
    assert raised_only_from_our_code(excinfo)


def test_a_changed_card_value_is_a_hash_mismatch(explained_file):
    rewrite_card(explained_file, lambda card: card["class_names"].reverse())
    with pytest.raises(ExplainedCheckpointError, match="content hash mismatch"):
        load_explained(explained_file)


def test_a_truncated_file_is_named_as_such(explained_file):
    explained_file.write_bytes(explained_file.read_bytes()[:-100])
    with pytest.raises(ExplainedCheckpointError, match="tiny.agcam: not a readable.*truncated") as excinfo:
        load_explained(explained_file)
    assert raised_only_from_our_code(excinfo)


def test_a_card_without_a_key_names_the_key(explained_file):
    rewrite_card(explained_file, lambda card: card.pop("class_names"))
    with pytest.raises(ExplainedCheckpointError, match="tiny.agcam: the card lacks class_names") as excinfo:
        load_explained(explained_file)
    assert raised_only_from_our_code(excinfo)


def test_a_card_of_another_format_version_is_refused(explained_file):
    rewrite_card(explained_file, lambda card: card.update(format_version=2))
    with pytest.raises(ExplainedCheckpointError, match="format version 2 is not supported.*reads version 1"):
        load_explained(explained_file)


def test_plain_safetensors_without_a_card_and_missing_files_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ExplainedCheckpointError, match="plain.safetensors: no 'agcam_card' card"):
        load_explained(plain)
    with pytest.raises(ExplainedCheckpointError, match="missing.agcam: no such file"):
        load_explained(tmp_path / "missing.agcam")


def test_the_cli_reports_a_damaged_model_in_one_line(explained_file, tmp_path, capsys):
    explained_file.write_bytes(explained_file.read_bytes()[:-100])
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", str(explained_file), str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agcam explain: error:") and "tiny.agcam" in err and "Traceback" not in err


def test_pipeline_import_stays_light():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pipeline; print('torch' in sys.modules, 'pytorch_lightning' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.stdout.split() == ["False", "False"], done.stderr


def rehash(card: dict, path: Path) -> None:
    """Recompute the content hash after an edit, as a careless tool would: only the card's own checks can catch it."""
    card[HASH_KEY] = content_hash(load_file(path), card)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda card: card.update(class_names=["circle", "square"]), "class_names must be 4 strings"),
        (lambda card: card.update(input_size=[48, 48]), r"input_size \[48, 48\] does not fit the model"),
        (lambda card: card.update(std=[0.5, 0.0, 0.5]), "std must be finite and > 0"),
        (lambda card: card.update(mean=[0.5, float("nan"), 0.5]), "mean must be finite"),
        (
            lambda card: card.update(explainer={"methods": ["agcam"], "threshold": 1.5}),
            r"threshold must lie in \(0, 1\)",
        ),
        (lambda card: card.update(explainer={"methods": ["gradcam"], "threshold": 0.5}), "explainer.methods"),
        (
            lambda card: card.update(num_classes=5, class_names=[*CLASS_NAMES, "x"]),
            r"mis-shaped \(file vs model\) head.weight \[4, 64\] vs \[5, 64\]",
        ),
    ],
)
def test_an_inconsistent_card_with_a_valid_hash_is_refused_naming_the_field(explained_file, edit, field):
    def edit_and_rehash(card):
        edit(card)
        rehash(card, explained_file)

    rewrite_card(explained_file, edit_and_rehash)
    with pytest.raises(ExplainedCheckpointError, match=f"tiny.agcam: .*{field}") as excinfo:
        load_explained(explained_file)
    assert raised_only_from_our_code(excinfo)


def test_weights_that_do_not_fit_name_the_first_keys(explained_file):
    card = read_card(explained_file)
    tensors = load_file(explained_file)
    tensors.pop("head.bias")
    tensors["blocks.0.attn.qkv.weight"] = tensors["blocks.0.attn.qkv.weight"][:10]
    tensors["extra.weight"] = torch.zeros(1)
    card[HASH_KEY] = content_hash(tensors, card)
    save_file(tensors, explained_file, metadata={CARD_METADATA_KEY: json.dumps(card)})
    with pytest.raises(ExplainedCheckpointError) as excinfo:
        load_explained(explained_file)
    message = str(excinfo.value)
    assert "missing head.bias" in message and "unexpected extra.weight" in message
    assert "blocks.0.attn.qkv.weight [10, 64] vs [192, 64]" in message


def test_input_size_is_a_deprecated_alias_of_the_input_config(explained_file):
    model = load_explained(explained_file)
    with pytest.warns(FutureWarning, match=r"input_size is deprecated .* use input_config.image_size"):
        assert model.input_size == model.input_config.image_size == (32, 32)
