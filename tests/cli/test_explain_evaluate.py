"""`agcam explain` over image files and `agcam evaluate` over a dataset split, against direct computations."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.cli import main
from pipeline.data import ShapesSource, SyntheticShapes
from pipeline.data.transforms import SampleTransform
from pipeline.explain import build_explainer
from pipeline.explained import load_explained
from pipeline.metrics import LOCALIZATION_SCORES, abpc, box_localization
from pipeline.render import save_png
from tests.helpers.explained import TINY_KWARGS, tiny_explained_file

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = [str(REPO / "configs/synthetic.yaml"), str(REPO / "tests/configs/tiny.yaml")]  # val: 64 images, 32 px


@pytest.fixture
def model_file(tmp_path) -> Path:
    return tiny_explained_file(tmp_path / "tiny.agcam")


def shape_images(folder: Path, count: int, size: int = 48) -> list[Path]:
    shapes = SyntheticShapes(count, image_size=size, num_classes=4, seed=5)
    return [save_png(shapes[i]["image"], folder / f"shape{i}.png") for i in range(count)]


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]


def test_explain_writes_every_readable_image_and_reports_the_corrupt_one(model_file, tmp_path, capsys):
    images = tmp_path / "images"
    good = shape_images(images, 2) + shape_images(images / "more", 1)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"

    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", str(model_file), str(images), "--out", str(out)])

    assert exit_info.value.code == 1
    assert "broken.png" in capsys.readouterr().err
    rows = read_rows(out)
    failed = [row for row in rows if "error" in row]
    assert [Path(row["file"]).name for row in failed] == ["broken.png"]
    explained = {Path(row["file"]) for row in rows if "error" not in row}
    assert explained == set(good)
    for row in rows:
        if "error" in row:
            continue
        overlay = Image.open(out / row["overlay"])
        assert overlay.size == Image.open(row["file"]).size  # heatmap and boxes at the file's resolution
        assert np.load(out / row["map"]).shape == (4, 4)  # the raw (gh, gw) map
        assert row["class"] in ["circle", "square", "triangle", "star"] and 0 < row["score"] <= 1
        assert all(len(box) == 4 for box in row["boxes"])
    assert (out / "more" / "shape0.png").is_file()  # a folder's subfolders are kept apart


def test_explain_topk_and_target(model_file, tmp_path):
    (image,) = shape_images(tmp_path, 1)
    main(["explain", "--model", str(model_file), str(image), "--out", str(tmp_path / "top"), "--topk", "2"])
    rows = read_rows(tmp_path / "top")
    assert [row["rank"] for row in rows] == [1, 2] and rows[0]["score"] >= rows[1]["score"]
    assert (tmp_path / "top" / "shape0.top2.png").is_file()

    main(["explain", "--model", str(model_file), str(image), "--out", str(tmp_path / "star"), "--target", "star"])
    assert [(row["class"], row["class_index"]) for row in read_rows(tmp_path / "star")] == [("star", 3)]


def direct_scores(model_file: Path, methods: list[str]) -> dict[str, dict]:
    """The protocol by hand on the tiny validation split: box_localization means over the correct images, and ABPC."""
    model = load_explained(model_file)
    transform = SampleTransform(model.input_config)
    samples = [transform(raw) for raw in ShapesSource(256, 64, 64, image_size=32, num_classes=4).dataset("val")]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.stack([s["target"] for s in samples])
    correct = model.predict(images).classes == labels
    direct = {}
    for method in methods:
        explainer = build_explainer(method, model.model)
        # in the batches evaluate uses (32, the config's batch size): the same shapes give the same float rounding
        maps = torch.cat(
            [explainer(chunk, chunk_labels) for chunk, chunk_labels in zip(images.split(32), labels.split(32))]
        )
        scores = box_localization(maps, [s["boxes"] for s in samples], image_size=(32, 32), threshold=0.5)
        direct[method] = {name: scores[name][correct].double().mean().item() for name in LOCALIZATION_SCORES}
        direct[method]["abpc"] = abpc(model.model, images, maps, labels)["abpc"].double().mean().item()
        direct[method].update(cases=int(correct.sum()), skipped=int((~correct).sum()))
    return direct


def test_evaluate_prints_the_table_and_writes_what_box_localization_gives(model_file, tmp_path, capsys):
    out = str(tmp_path / "eval")
    methods = ["agcam", "rollout"]
    main(["evaluate", "--model", str(model_file), "--data", *TINY_DATA, "--methods", *methods, "--abpc", "--out", out])

    printed = capsys.readouterr().out
    assert "Pixel acc." in printed and "ABPC" in printed and "Skipped" in printed
    results = json.loads((tmp_path / "eval/evaluation.json").read_text())["methods"]
    with (tmp_path / "eval/evaluation.csv").open() as file:
        csv_rows = {row["method"]: row for row in csv.DictReader(file)}
    for method, expected in direct_scores(model_file, methods).items():
        assert expected["cases"] > 0
        for name, value in expected.items():
            assert results[method][name] == pytest.approx(value, abs=1e-6), name
            assert float(csv_rows[method][name]) == pytest.approx(value, abs=1e-6), name
        assert results[method]["abpc_images"] == 64
        table_row = next(line for line in printed.splitlines() if line.startswith(method))
        assert f"{expected['iou']:.4f}" in table_row
        assert table_row.split()[-2:] == [str(expected["cases"]), str(expected["skipped"])]


def test_evaluate_a_timm_weights_file_gives_what_its_explained_checkpoint_gives(model_file, tmp_path):
    weights = tmp_path / "weights.safetensors"
    save_file(load_explained(model_file).model.state_dict(), weights)
    timm_model = ["--timm_model", "vit_tiny_patch16_224", "--weights", str(weights)]
    timm_model += ["--model_kwargs", json.dumps(TINY_KWARGS)]
    common = ["--data", *TINY_DATA, "--methods", "agcam"]
    main(["evaluate", "--model", str(model_file), *common, "--out", str(tmp_path / "file")])
    main(["evaluate", *timm_model, *common, "--out", str(tmp_path / "timm")])

    def scores(folder: str) -> dict:
        return json.loads((tmp_path / folder / "evaluation.json").read_text())["methods"]

    assert scores("file") == scores("timm")


def test_evaluate_names_a_missing_config(model_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(model_file), "--data", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    assert "nope.yaml: neither a config file nor one of ['synthetic']" in capsys.readouterr().err


def test_evaluate_reliance_counts_what_erasing_the_boxes_by_hand_gives(model_file, tmp_path, capsys):
    out = tmp_path / "eval"
    main(["evaluate", "--model", str(model_file), "--data", *TINY_DATA, "--methods", "agcam", "--reliance",
          "--out", str(out)])  # fmt: skip
    reliance = json.loads((out / "evaluation.json").read_text())["reliance"]
    model = load_explained(model_file)
    transform = SampleTransform(model.input_config)
    samples = [transform(raw) for raw in ShapesSource(256, 64, 64, image_size=32, num_classes=4).dataset("val")]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.stack([s["target"] for s in samples])
    inside = torch.zeros(len(samples), 1, 32, 32)
    for index, sample in enumerate(samples):
        for x0, y0, x1, y1 in sample["boxes"].long().tolist():
            inside[index, :, y0 : y1 + 1, x0 : x1 + 1] = 1
    expected = {
        "acc": model.predict(images).classes == labels,
        "acc_object_erased": model.predict(images * (1 - inside)).classes == labels,
        "acc_context_erased": model.predict(images * inside).classes == labels,
    }
    assert reliance["images"] == 64 and reliance["unboxed"] == 0
    for name, right in expected.items():
        assert reliance[name] == pytest.approx(right.double().mean().item(), abs=1e-9), name
    assert sum(row["images"] for row in reliance["per_class"].values()) == 64
    assert "Object reliance on 64 images" in capsys.readouterr().out
