"""The offline commands refuse bad options and files with one named error (exit 2), leave nothing behind, and never
overwrite an input or a file they did not create."""

import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.commands.explain import finished_rows
from pipeline.data import SyntheticShapes
from pipeline.render import save_png
from tests.helpers.explained import tiny_explained_file

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = [str(REPO / "configs/synthetic.yaml"), str(REPO / "tests/configs/tiny.yaml")]


@pytest.fixture
def model_file(tmp_path) -> Path:
    return tiny_explained_file(tmp_path / "tiny.agcam")


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    shapes = SyntheticShapes(2, image_size=40, num_classes=4, seed=3)
    for i in range(2):
        save_png(shapes[i]["image"], folder / f"photo{i}.png")
    return folder


def run_failing(argv: list[str], capsys) -> str:
    """Run the command, expect exit code 2, return the one error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    "options, named",
    [
        (["--topk", "0"], "topk must be >= 1, got 0"),
        (["--topk", "-2"], "topk must be >= 1, got -2"),
        (["--batch_size", "0"], "batch_size must be >= 1, got 0"),
        (["--threshold", "1.5"], "threshold must lie in (0, 1)"),
        (["--method", "gradcam"], "argument --method: invalid choice: 'gradcam'"),
        (["--target", "star", "--topk", "2"], "give either a target class or topk, not both"),
        (["--target", "hexagon"], "unknown class 'hexagon'"),
        (["--device", "gpu0"], "--device 'gpu0' is not a device"),
    ],
)
def test_explain_refuses_bad_options_naming_them_and_writes_nothing(
    model_file, photos, tmp_path, capsys, options, named
):
    out = tmp_path / "out"
    err = run_failing(["explain", "--model", str(model_file), str(photos), "--out", str(out), *options], capsys)
    assert named in err
    assert not out.exists()


def test_explain_into_the_input_folder_is_refused_and_the_photos_stay(model_file, photos, capsys):
    before = snapshot(photos)
    err = run_failing(["explain", "--model", str(model_file), str(photos), "--out", str(photos)], capsys)
    assert "lies inside the input folder" in err
    err = run_failing(["explain", "--model", str(model_file), str(photos / "photo0.png"), "--out", str(photos)], capsys)
    assert "photo0.png is an input image and would be overwritten" in err
    assert snapshot(photos) == before


def test_explain_never_replaces_files_it_did_not_ask_for(model_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo0.png").write_bytes(b"someone else's file")
    err = run_failing(["explain", "--model", str(model_file), str(photos), "--out", str(out)], capsys)
    assert "photo0.png already exists" in err and "--overwrite" in err
    assert (out / "photo0.png").read_bytes() == b"someone else's file"
    assert sorted(path.name for path in out.iterdir()) == ["photo0.png"]
    main(["explain", "--model", str(model_file), str(photos), "--out", str(out), "--overwrite"])
    assert Image.open(out / "photo0.png").size == (40, 40)


def test_explain_warnings_go_to_stderr(model_file, photos, tmp_path, capsys):
    (photos / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        main(["explain", "--model", str(model_file), str(photos), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "broken.png" not in captured.out


@pytest.mark.parametrize(
    "text, named",
    [
        ("data:\n  source: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "needs a top-level `data:` mapping"),
        ("trainer:\n  max_epochs: 1\n", "needs a top-level `data:` mapping"),
    ],
)
def test_evaluate_names_a_broken_data_config(model_file, tmp_path, capsys, text, named):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "eval"
    err = run_failing(["evaluate", "--model", str(model_file), "--data", str(config), "--out", str(out)], capsys)
    assert "bad.yaml" in err and named in err
    assert not out.exists()


@pytest.mark.parametrize(
    "options, named",
    [
        (["--threshold", "0"], "threshold must lie in (0, 1)"),
        (["--pointing_tolerance", "-1"], "pointing_tolerance must be a whole number of pixels >= 0"),
        (["--abpc", "--abpc_images", "-3"], "abpc_images must be >= 0"),
    ],
)
def test_evaluate_refuses_bad_scoring_options_before_reading_anything(tmp_path, capsys, options, named):
    missing = tmp_path / "no-such-data.yaml"  # never read: the options are refused first
    argv = ["evaluate", "--model", str(tmp_path / "none.agcam"), "--data", str(missing), "--out", str(tmp_path / "e")]
    assert named in run_failing([*argv, *options], capsys)


def test_evaluate_refuses_to_replace_an_earlier_evaluation_unless_asked(model_file, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "evaluation.json").write_text("{}")
    err = run_failing(["evaluate", "--model", str(model_file), "--data", *TINY_DATA, "--out", str(out)], capsys)
    assert "evaluation.json already exist" in err
    assert (out / "evaluation.json").read_text() == "{}"


def test_export_refuses_an_existing_file(tmp_path, capsys):
    target = tmp_path / "model.agcam"
    target.write_text("precious")
    err = run_failing(["export", "--ckpt_path", str(tmp_path / "run.ckpt"), "--out", str(target)], capsys)
    assert "model.agcam already exist" in err and target.read_text() == "precious"


def test_explain_resume_keeps_only_whole_rows_whose_files_exist(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "a.npy").write_bytes(b"npy")
    rows = tmp_path / "explanations.jsonl"
    whole = {"overlay": "a.png", "map": "a.npy"}
    lines = [json.dumps(whole), "3", '["a.png"]', json.dumps({"overlay": "b.png", "map": "b.npy"}), '{"overlay": "a']
    rows.write_text("\n".join(lines))
    assert finished_rows(rows, tmp_path) == [whole]  # not an object, missing files and a torn line are dropped
