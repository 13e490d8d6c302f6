"""The callback benchmark runs and reports a finite ratio per variant (timings are its output, not asserted)."""

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_callback  # noqa: E402


@pytest.mark.slow
def test_bench_callback_reports_every_variant(tmp_path):
    out = tmp_path / "bench.json"
    report = bench_callback.main(["--config", str(REPO / "tests/configs/bench.yaml"), "--quick", "--out", str(out)])
    assert out.is_file()
    assert set(report["ratio_to_plain"]) == set(bench_callback.VARIANTS)
    assert report["ratio_to_plain"]["plain validation"] == 1.0
    assert all(math.isfinite(r) and r > 0 for r in report["ratio_to_plain"].values())
    assert report["validation_images"] == 32
