"""The explainer benchmark runs end to end in a tiny configuration and reports every figure (no speed targets)."""

import json
import math

import pytest

from scripts import bench_explain

ROW_FIELDS = {
    "model",
    "batch",
    "forward_s",
    "agcam_batched_s",
    "agcam_single_s",
    "authors_s",
    "rollout_s",
    "lrp_s",
    "authors_max_rel_error",
    "agcam_peak_bytes",
    "train_peak_bytes",
    "agcam_vs_forward",
    "authors_vs_agcam",
    "agcam_single_vs_batched",
    "agcam_memory_vs_train",
}
RATIOS = ["agcam_vs_forward", "authors_vs_agcam", "agcam_single_vs_batched", "agcam_memory_vs_train"]
MULTICLASS_FIELDS = {"model", "batch", "classes_per_image", "one_call_s", "separate_calls_s", "one_call_vs_separate"}
MACHINE_FIELDS = {"cpu", "cpu_count", "torch_threads", "platform", "python", "torch", "timm", "device", "device_name"}


def is_finite_positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_tiny_run_writes_every_field_with_finite_positive_ratios(tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--device", "cpu", "--models", "tiny", "--batches", "2", "--warmup", "0", "--repeats", "1"]
    bench_explain.main([*argv, "--multiclass-batch", "2", "--out", str(out)])

    report = json.loads(out.read_text())
    assert report["machine"].keys() >= MACHINE_FIELDS
    assert report["memory_method"]
    [row] = report["results"]
    assert row.keys() >= ROW_FIELDS
    assert (row["model"], row["batch"]) == ("tiny", 2)
    for ratio in RATIOS:
        assert is_finite_positive(row[ratio]), (ratio, row[ratio])
    assert row["authors_max_rel_error"] < 1e-4  # the authors' way and ours compute the same maps

    [multiclass] = report["multiclass"]
    assert multiclass.keys() >= MULTICLASS_FIELDS
    assert is_finite_positive(multiclass["one_call_vs_separate"])
    assert report["targets"] and all(is_finite_positive(check["value"]) for check in report["targets"])
    assert "ag/fwd" in capsys.readouterr().out  # the table was printed
