"""A user's own data through the CLI: class folders (with a side file of boxes or none), bad layouts, `agcam data`."""

from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
IMAGEFOLDER = ["--config", str(REPO / "configs/synthetic.yaml"), "--data", str(REPO / "configs/data/imagefolder.yaml")]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: (root / "train").mkdir(), "{root}/train has no class folders: expected {root}/train/<class>"),
        (lambda root: None, "{root} has no train/ or val/ folder: expected {root}/train/<class>/<images>"),
    ],
)
def test_an_unreadable_layout_is_one_line_before_any_run_folder(tmp_path, capsys, make, expected):
    root, runs = tmp_path / "data", tmp_path / "runs"
    root.mkdir()
    make(root)
    args = ["--data.source.init_args.root", str(root), "--trainer.logger.init_args.save_dir", str(runs)]
    with pytest.raises(SystemExit) as exited:
        main(["fit", *IMAGEFOLDER, *args])
    assert exited.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("agcam: error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(f"agcam: error: {expected.format(root=root)}")
    assert not runs.exists() and not (Path.cwd() / "wandb").exists()
