"""The randomization sanity check: 1.0 for the trained model, lower once blocks are random; clear refusals."""

import json

import pytest
import torch
from torch import nn

from pipeline.cli import main
from pipeline.commands.sanity import map_similarity, model_blocks, randomize_block, sanity_check
from tests.cli.test_explain_evaluate import TINY_DATA
from tests.helpers.explained import tiny_explained_file
from tests.helpers.models import tiny_vit


def test_similarity_of_identical_and_of_reversed_maps():
    maps = torch.arange(16.0).reshape(1, 4, 4)
    same = map_similarity(maps, maps.clone(), (16, 16))
    assert same["spearman"].item() == pytest.approx(1.0) and same["ssim"].item() == pytest.approx(1.0)
    reversed_maps = map_similarity(maps, -maps, (16, 16))
    assert reversed_maps["spearman"].item() == pytest.approx(-1.0) and reversed_maps["ssim"].item() < 0
    constant = map_similarity(maps, torch.zeros_like(maps), (16, 16))
    assert constant["spearman"].item() == 0.0  # no ranking: counted as no agreement, never NaN


def test_one_at_the_trained_model_and_lower_with_every_block_random():
    model = tiny_vit(num_classes=4, depth=2)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rows = sanity_check(model, torch.randn(4, 3, 32, 32), ["agcam", "rollout"])
    for method, steps in rows.items():
        assert [row["randomized_blocks"] for row in steps] == [0, 1, 2]
        assert steps[0]["spearman"] == pytest.approx(1.0) and steps[0]["ssim"] == pytest.approx(1.0)
        assert steps[-1]["spearman"] < 0.9 and steps[-1]["ssim"] < 0.9, method
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())  # a copy was randomized


def test_randomize_block_is_seeded_and_changes_every_linear_layer():
    first, second = tiny_vit(depth=1).blocks[0], tiny_vit(depth=1).blocks[0]
    original = first.mlp.fc1.weight.clone()
    randomize_block(first, seed=3)
    randomize_block(second, seed=3)
    assert not torch.equal(first.mlp.fc1.weight, original) and torch.equal(first.mlp.fc1.weight, second.mlp.fc1.weight)


def test_a_model_without_blocks_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"--sanity randomizes the model's transformer blocks .* Linear has none"):
        model_blocks(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="--sanity cannot randomize the block Identity"):
        randomize_block(nn.Identity(), seed=0)


def test_evaluate_sanity_prints_and_writes_the_table(tmp_path, capsys):
    model_file = tiny_explained_file(tmp_path / "tiny.agcam")
    out = tmp_path / "eval"
    main(["evaluate", "--model", str(model_file), "--data", *TINY_DATA, "--methods", "agcam", "--sanity",
          "--sanity_images", "4", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "Sanity check" in printed and "top 2" in printed
    rows = json.loads((out / "evaluation.json").read_text())["sanity"]["agcam"]
    assert len(rows) == 3 and rows[0]["spearman"] == pytest.approx(1.0)
