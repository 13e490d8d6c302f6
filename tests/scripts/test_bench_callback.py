"""The callback benchmark runs and reports a finite ratio per variant (timings are its output, not asserted)."""

import math
from pathlib import Path

import pytest

from scripts import bench_callback

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_callback_reports_every_variant(tmp_path):
    out = tmp_path / "bench.json"
    config = str(REPO / "tests/configs/bench.yaml")
    report = bench_callback.main(["--config", config, "--quick", "--train_steps", "1", "--out", str(out)])
    assert out.is_file()
    assert set(report["ratio_to_plain"]) == set(bench_callback.VARIANTS)
    assert report["ratio_to_plain"]["plain validation"] == 1.0
    assert all(math.isfinite(r) and r > 0 for r in report["ratio_to_plain"].values())
    assert report["validation_images"] == 32
    assert set(report["step_ratio_to_plain"]) == set(bench_callback.GUIDANCE_VARIANTS)
    assert all(math.isfinite(r) and r > 0 for r in report["step_ratio_to_plain"].values())
    memory = report["memory"]
    assert 0 < memory["record_mb"] < memory["training_step_activations_mb"]
