"""Benchmark AG-CAM against forward-only, the authors' way, Rollout and LRP: time, memory and their ratios.

    python -m scripts.bench_explain --quick --out results.json     # vit_small + tiny ViT, batch <= 16
    python -m scripts.bench_explain --out results.json              # vit_base + tiny ViT, batch 1, 8, 32
    python -m scripts.bench_explain --device cuda --amp bf16 --quick
    python -m scripts.coverage                                      # AG-CAM / forward per timm family, B=16

Random weights only (pretrained=False). Times are the median of --repeats interleaved rounds after --warmup
rounds; in the JSON, *_s fields of results rows are seconds per image, those of multiclass seconds per call.
Memory is the peak over the resident state while one call runs: on CUDA torch.cuda.max_memory_allocated; on
CPU the peak resident set size (VmHWM, reset through /proc/self/clear_refs) in a fresh subprocess per
measurement, so it counts every page the call touches (tensors, allocator slack, oneDNN scratch).
With --amp every call runs under autocast, as inside an AMP training loop; pipeline.explain turns autocast
off and computes in float32, so the script also times AG-CAM on a half-precision copy of the model.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.explain import AGCAM, AttentionRollout, TransformerAttribution
from pipeline.files import write_text
from scripts.oracle import agcam_oracle_batch

REPO = Path(__file__).resolve().parents[1]  # scripts run as modules from here: python -m scripts.bench_explain
TINY = "tiny"  # vit_tiny_patch16_224 cut to 4 blocks: img 224, patch 16, dim 192, 3 heads
MODEL_KWARGS = {TINY: ("vit_tiny_patch16_224", {"depth": 4})}
FULL_MODELS = ["vit_base_patch16_224", TINY]
QUICK_MODELS = ["vit_small_patch16_224", TINY]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# (name, value key, target, "le" or "ge"); evaluated at the largest batch measured.
TARGETS = [
    ("AG-CAM batched / forward-only", "agcam_vs_forward", 1.8, "le"),
    ("authors' way / AG-CAM batched (CPU)", "authors_vs_agcam", 1.6, "ge"),
    ("authors' way / AG-CAM batched (GPU)", "authors_vs_agcam", 10.0, "ge"),
    ("AG-CAM peak memory / training-step peak memory", "agcam_memory_vs_train", 1.0, "le"),
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick changes the defaults of models, batches and repeats."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help=f"timm names, or {TINY!r} (default: {' '.join(FULL_MODELS)})")
    parser.add_argument("--batches", nargs="+", type=int, help="default: 1 8 32")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    parser.add_argument("--repeats", type=int, help="timed runs; the median is reported (default: 3)")
    parser.add_argument("--multiclass-batch", type=int, default=8, help="batch of the K-targets comparison")
    parser.add_argument("--classes-per-image", type=int, default=5, help="K of the K-targets comparison")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None, help="run every call under autocast")
    parser.add_argument(
        "--quick", action="store_true", help="defaults become vit_small + tiny, batch 1 8 16, 2 repeats"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--probe-memory", choices=["agcam", "train"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = args.models or (QUICK_MODELS if args.quick else FULL_MODELS)
    args.batches = args.batches or ([1, 8, 16] if args.quick else [1, 8, 32])
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def build_model(name: str, device: str, seed: int) -> nn.Module:
    """A timm ViT with random weights in eval mode."""
    timm_name, kwargs = MODEL_KWARGS.get(name, (name, {}))
    torch.manual_seed(seed)
    return timm.create_model(timm_name, pretrained=False, **kwargs).eval().to(device)


def make_images(model: nn.Module, batch: int, device: str, seed: int) -> torch.Tensor:
    """Seeded normal images at the model's input size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *model.pretrained_cfg["input_size"], generator=generator).to(device)


def precision(device: str, amp: str | None) -> contextlib.AbstractContextManager:
    """Autocast as a training loop under AMP would run, or nothing."""
    return torch.autocast(device, dtype=AMP_DTYPES[amp]) if amp else contextlib.nullcontext()


def synchronize(device: str) -> None:
    """Wait for queued GPU work so wall-clock times are real."""
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(
    runs: dict[str, Callable[[], Any]], device: str, warmup: int, repeats: int
) -> dict[str, tuple[float, Any]]:
    """Median wall time of each run and its last output, the runs interleaved round by round.

    Interleaving spreads any load from other processes over every run alike, so the ratios stay fair.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            outputs[name] = run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), outputs[name]) for name in runs}


def max_relative_error(maps: torch.Tensor, reference: torch.Tensor) -> float:
    """Max over maps of max|maps - reference| / max|reference|, per (image, class) map."""
    diff = (maps.double() - reference.double()).flatten(-2).abs().amax(-1)
    scale = reference.double().flatten(-2).abs().amax(-1).clamp_min(1e-30)
    return (diff / scale).max().item()


def authors_agcam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AG-CAM the authors' way (scripts/oracle.py): one image per call, a full backward into every parameter's
    `.grad`. (B, gh, gw)."""
    maps = agcam_oracle_batch(model, images, targets, full_backward=True)  # (B, P)
    return maps.reshape(len(images), *model.patch_embed.dynamic_feat_size(tuple(images.shape[-2:])))


def training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """A plain training step without optimizer: forward, cross-entropy, backward into every parameter."""
    model.train()
    F.cross_entropy(model(images), labels).backward()
    model.eval()


def predicted_classes(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's predicted class per image (fp32, no autocast): every method explains these."""
    with torch.no_grad():
        return model(images).argmax(-1)


def measure_one(model: nn.Module, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every time-per-image figure, the exactness check and the AMP figures for one (model, batch)."""
    images = make_images(model, batch, args.device, args.seed)
    targets = predicted_classes(model, images)
    agcam, rollout, lrp = AGCAM(model), AttentionRollout(model), TransformerAttribution(model)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(images)

    runs = {
        "forward_s": forward,
        "agcam_batched_s": lambda: agcam(images, targets),
        "agcam_single_s": lambda: [agcam(images[i : i + 1], targets[i : i + 1]) for i in range(batch)],
        "authors_s": lambda: authors_agcam(model, images, targets),
        "rollout_s": lambda: rollout(images),
        "lrp_s": lambda: lrp(images, targets),
    }
    with precision(args.device, args.amp):
        timings = median_seconds(runs, args.device, args.warmup, args.repeats)
    row: dict[str, Any] = {name: seconds / batch for name, (seconds, _) in timings.items()}
    # Exactness in float32: under --amp the timed authors' way ran in half precision.
    authors_maps = authors_agcam(model, images, targets) if args.amp else timings["authors_s"][1]
    row["authors_max_rel_error"] = max_relative_error(timings["agcam_batched_s"][1], authors_maps)
    if args.amp:
        row.update(measure_amp(model, images, targets, args))
    return row


def measure_amp(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, args: argparse.Namespace) -> dict:
    """AG-CAM under autocast (what a user gets) and on a half-precision copy of the model, both vs fp32 maps."""
    fp32_maps = AGCAM(model)(images, targets)
    with precision(args.device, args.amp):
        autocast_maps = AGCAM(model)(images, targets)
    half_agcam = AGCAM(copy.deepcopy(model).to(AMP_DTYPES[args.amp]))
    timings = median_seconds({"half": lambda: half_agcam(images, targets)}, args.device, args.warmup, args.repeats)
    seconds, half_maps = timings["half"]
    return {
        "amp_max_rel_error": max_relative_error(autocast_maps, fp32_maps),
        "half_weights_agcam_s": seconds / len(images),
        "half_weights_max_rel_error": max_relative_error(half_maps.float(), fp32_maps),
    }


def measure_multiclass(model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """K target classes per image in one AG-CAM call vs K separate calls, at --multiclass-batch."""
    batch, classes = args.multiclass_batch, args.classes_per_image
    images = make_images(model, batch, args.device, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    targets = torch.randint(0, model.num_classes, (batch, classes), generator=generator).to(args.device)
    agcam = AGCAM(model)
    runs = {
        "one_call": lambda: agcam(images, targets),
        "separate": lambda: torch.stack([agcam(images, column) for column in targets.T], dim=1),
    }
    with precision(args.device, args.amp):
        timings = median_seconds(runs, args.device, args.warmup, args.repeats)
    (one_call_s, joint_maps), (separate_s, separate_maps) = timings["one_call"], timings["separate"]
    return {
        "batch": batch,
        "classes_per_image": classes,
        "one_call_s": one_call_s,
        "separate_calls_s": separate_s,
        "one_call_vs_separate": one_call_s / separate_s,
        "max_rel_error": max_relative_error(joint_maps, separate_maps),
    }


def memory_run(method: str, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], Any]:
    """The call whose peak memory is measured: one AG-CAM call or one training step."""
    if method == "agcam":
        return lambda: AGCAM(model)(images, targets)
    return lambda: training_step(model, images, targets)


def peak_bytes(run: Callable[[], Any], device: str, amp: str | None) -> int:
    """Peak bytes above the resident state while `run()` runs."""
    with precision(device, amp):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - before
        reset_peak_rss()
        before = read_status_kib("VmRSS")
        run()
        return (read_status_kib("VmHWM") - before) * 1024


def probe_memory(args: argparse.Namespace) -> int:
    """Entry point of the memory subprocess: a fresh model, then one measured call."""
    model = build_model(args.models[0], args.device, args.seed)
    images = make_images(model, args.batches[0], args.device, args.seed)
    return peak_bytes(
        memory_run(args.probe_memory, model, images, predicted_classes(model, images)), args.device, args.amp
    )


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); without it the peak is since process start."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def read_status_kib(field: str) -> int:
    """A memory field of /proc/self/status in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(model: nn.Module, model_name: str, batch: int, args: argparse.Namespace) -> dict[str, int]:
    """Peak bytes of one AG-CAM call and of one training step on `batch` images, keyed "agcam" and "train"."""
    methods = ["agcam", "train"]
    if args.device == "cuda":  # the peak counter ignores the allocator cache, so in-process is exact
        images = make_images(model, batch, args.device, args.seed)
        targets = predicted_classes(model, images)
        peaks = {
            method: peak_bytes(memory_run(method, model, images, targets), args.device, args.amp) for method in methods
        }
        model.zero_grad(set_to_none=True)
        return peaks
    # On CPU resident pages would carry the allocator state of earlier runs: a fresh process each, run side by side.
    command = [sys.executable, "-m", "scripts.bench_explain", "--models", model_name, "--batches", str(batch)]
    command += ["--device", args.device, "--seed", str(args.seed)] + (["--amp", args.amp] if args.amp else [])
    probes = {
        method: subprocess.Popen([*command, "--probe-memory", method], stdout=subprocess.PIPE, text=True, cwd=REPO)
        for method in methods
    }
    peaks = {}
    for method, probe in probes.items():
        stdout, _ = probe.communicate()
        if probe.returncode != 0:
            raise subprocess.CalledProcessError(probe.returncode, probe.args, stdout)
        peaks[method] = int(stdout.strip().splitlines()[-1])
    return peaks


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
    }


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what platform knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def add_ratios(row: dict[str, Any]) -> None:
    """The cost ratios of one (model, batch) row (AG-CAM vs a forward, the authors' way vs AG-CAM, ...)."""
    row["agcam_vs_forward"] = row["agcam_batched_s"] / row["forward_s"]
    row["authors_vs_agcam"] = row["authors_s"] / row["agcam_batched_s"]
    row["agcam_single_vs_batched"] = row["agcam_single_s"] / row["agcam_batched_s"]
    row["agcam_memory_vs_train"] = row["agcam_peak_bytes"] / row["train_peak_bytes"]


def evaluate_targets(rows: list[dict], multiclass: list[dict], device: str) -> list[dict[str, Any]]:
    """Each cost target (TARGETS) with the measured ratio at the largest batch per model, and whether it is met."""
    checks = []
    for name, key, target, sense in TARGETS:
        if ("(CPU)" in name and device != "cpu") or ("(GPU)" in name and device != "cuda"):
            continue
        for model in dict.fromkeys(row["model"] for row in rows):
            row = max((r for r in rows if r["model"] == model), key=lambda r: r["batch"])
            checks.append(target_check(name, model, row["batch"], row[key], target, sense))
    for result in multiclass:
        name = f"K={result['classes_per_image']} targets in one call / separate calls"
        checks.append(target_check(name, result["model"], result["batch"], result["one_call_vs_separate"], 0.5, "le"))
    for row in rows:
        if "amp_max_rel_error" in row:
            checks.append(
                target_check("AMP maps max rel error", row["model"], row["batch"], row["amp_max_rel_error"], 1e-2, "le")
            )
    return checks


def target_check(name: str, model: str, batch: int, value: float, target: float, sense: str) -> dict[str, Any]:
    """One target's record."""
    met = value <= target if sense == "le" else value >= target
    symbol = "<=" if sense == "le" else ">="
    return {"target": f"{name} {symbol} {target}", "model": model, "batch": batch, "value": value, "met": met}


def format_report(report: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    ms = 1e3
    lines = [
        f"{report['machine']['device_name']} | torch {report['machine']['torch']} | timm {report['machine']['timm']}"
        f" | threads {report['machine']['torch_threads']} | amp {report['config']['amp']}",
        "times in ms per image (median); memory: peak MiB above resident state (" + report["memory_method"] + ")",
        f"{'model':<24}{'B':>4}{'fwd':>8}{'agcam':>8}{'1-by-1':>8}{'authors':>9}{'rollout':>9}{'lrp':>8}"
        f"{'ag/fwd':>8}{'auth/ag':>9}{'mem ag':>8}{'mem trn':>8}{'ag/trn':>8}{'exact':>9}",
    ]
    for row in report["results"]:
        lines.append(
            f"{row['model']:<24}{row['batch']:>4}{row['forward_s'] * ms:>8.1f}{row['agcam_batched_s'] * ms:>8.1f}"
            f"{row['agcam_single_s'] * ms:>8.1f}{row['authors_s'] * ms:>9.1f}{row['rollout_s'] * ms:>9.1f}"
            f"{row['lrp_s'] * ms:>8.1f}{row['agcam_vs_forward']:>8.2f}{row['authors_vs_agcam']:>9.2f}"
            f"{row['agcam_peak_bytes'] / 2**20:>8.0f}{row['train_peak_bytes'] / 2**20:>8.0f}"
            f"{row['agcam_memory_vs_train']:>8.2f}{row['authors_max_rel_error']:>9.1e}"
        )
        if "amp_max_rel_error" in row:
            lines.append(
                f"{'':<28}amp maps rel err {row['amp_max_rel_error']:.1e}; half-weights AG-CAM"
                f" {row['half_weights_agcam_s'] * ms:.1f} ms/img, rel err {row['half_weights_max_rel_error']:.1e}"
            )
    for result in report["multiclass"]:
        classes = result["classes_per_image"]
        lines.append(
            f"multi-class {result['model']} B={result['batch']} K={classes}: one call {result['one_call_s'] * ms:.1f}"
            f" ms, {classes} calls {result['separate_calls_s'] * ms:.1f} ms,"
            f" ratio {result['one_call_vs_separate']:.2f},"
            f" max rel err {result['max_rel_error']:.1e}"
        )
    lines.append("targets:")
    for check in report["targets"]:
        verdict = "met" if check["met"] else "NOT met"
        lines.append(
            f"  {check['target']:<62} {check['model']:<24} B={check['batch']:<3} {check['value']:.3g}  {verdict}"
        )
    load = report["machine"]["load_average_1min"]
    lines.append(f"wall time {report['wall_s']:.0f} s; 1-min load average {load['start']:.1f} -> {load['end']:.1f}")
    return "\n".join(lines)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement for every (model, batch), the multi-class comparison and the targets."""
    start, load_at_start = time.perf_counter(), os.getloadavg()[0]
    rows, multiclass = [], []
    for model_name in args.models:
        model = build_model(model_name, args.device, args.seed)
        for batch in args.batches:
            row = {"model": model_name, "batch": batch, **measure_one(model, batch, args)}
            peaks = peak_memory(model, model_name, batch, args)
            row["agcam_peak_bytes"], row["train_peak_bytes"] = peaks["agcam"], peaks["train"]
            add_ratios(row)
            rows.append(row)
            print(f"done {model_name} batch {batch}", file=sys.stderr, flush=True)
        multiclass.append({"model": model_name, **measure_multiclass(model, args)})
    report = {
        "machine": machine_info(args.device),
        "config": {key: value for key, value in vars(args).items() if key not in ("out", "probe_memory")},
        "memory_method": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "VmHWM delta, fresh process",
        "results": rows,
        "multiclass": multiclass,
    }
    report["targets"] = evaluate_targets(rows, multiclass, args.device)
    report["wall_s"] = time.perf_counter() - start
    # Other processes on the same cores slow every run; the interleaved rounds keep the ratios fair.
    report["machine"]["load_average_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write --out; returns the report."""
    args = parse_args(argv)
    if args.probe_memory:
        print(probe_memory(args))
        return {}
    report = run_benchmark(args)
    print(format_report(report))
    if args.out:
        write_text(args.out, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
