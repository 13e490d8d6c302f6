"""The data loader benchmark runs both loaders on one generated tree, reports rates and stages, and cleans up."""

import math
from pathlib import Path

from scripts import bench_data


def test_bench_data_compares_both_loaders_and_deletes_its_tree(tmp_path):
    before = set(Path("/tmp").glob("bench_data_*"))
    argv = ["--images", "24", "--classes", "3", "--image_size", "80", "60", "--size", "32", "--workers", "0"]
    argv += ["--batch", "4", "--batches", "2", "--rounds", "1", "--stage_images", "2"]
    argv += ["--out", str(tmp_path / "b.json")]
    report = bench_data.main(argv)
    assert set(report["images_per_second"]) == {"ours", "torchvision + timm"}
    assert all(math.isfinite(rate) and rate > 0 for rate in report["images_per_second"].values())
    assert report["ratio"] == report["images_per_second"]["ours"] / report["images_per_second"]["torchvision + timm"]
    assert len(report["per_image_ms"]) == 5 and all(ms > 0 for ms in report["per_image_ms"].values())
    assert (tmp_path / "b.json").is_file()
    assert set(Path("/tmp").glob("bench_data_*")) == before  # the JPEG tree is gone
