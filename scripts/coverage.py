"""Which timm families each explainer covers, how exact AG-CAM is there, and what it costs: a markdown table.

    python -m scripts.coverage                 # every family at its own resolution and width, depth 2, batch 16
    python -m scripts.coverage --repeats 5 --threads 1

Random weights only (pretrained=False), cut to `--depth` blocks. Per model: whether each method runs (or the
first line of its error), AG-CAM's max relative error against the authors' way (scripts/oracle.py: timm's
own unfused forward, attention inputs detached, one image at a time, full backward) for the predicted class and
another one, and AG-CAM's time over a forward with timm's fused attention at batch `--batch` (median over
interleaved rounds, so load from other processes hits both alike). The refused architectures close the table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import timm
import torch
from torch import nn

from pipeline.explain import AGCAM, METHODS, UnsupportedModelError, build_explainer
from pipeline.explain._registry import family_of
from scripts.oracle import agcam_oracle_batch, relative_error

FAMILIES = [
    "vit_small_patch16_224",
    "deit_small_distilled_patch16_224",
    "vit_small_patch14_reg4_dinov2",
    "eva02_small_patch14_224",
    "vit_base_patch16_dinov3",
    "vit_pe_core_base_patch16_224",
    "vit_base_patch16_rope_224",
    "beit_base_patch16_224",
    "vit_base_patch16_siglip_224",
    "vit_medium_patch16_gap_256",
    "vit_betwixt_patch16_reg4_gap_256",
]
MODEL_KWARGS = {"vit_small_patch14_reg4_dinov2": dict(img_size=224)}  # 518 px by default: 37x37 patches
REFUSED = {  # cut-down constructors: only the error is of interest
    "swin_tiny_patch4_window7_224": dict(depths=(1, 1, 1, 1)),
    "xcit_tiny_12_p16_224": dict(depth=1),
    "cait_xxs24_224": dict(depth=1, depth_token_only=1),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=FAMILIES)
    parser.add_argument("--depth", type=int, default=2, help="blocks kept in each model")
    parser.add_argument("--batch", type=int, default=16, help="batch of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--oracle-images", type=int, default=2, help="images checked against the oracle")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build(name: str, depth: int, seed: int) -> nn.Module:
    """A timm model with random weights, cut to `depth` blocks, 10 classes, in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, depth=depth, num_classes=10, **MODEL_KWARGS.get(name, {})).eval()


def readout_name(model: nn.Module) -> str:
    family = family_of(model)
    kind = family.readout_kind
    if kind == "token":
        return "class token" + (" + distillation token" if hasattr(model, "head_dist") else "")
    prefixed = family.readout_first_row == 0 and family.num_prefix_tokens > 0
    rows = "patches and prefix tokens" if prefixed else "patches"
    return {"map": f"attention-pool probe over {rows}", "avg": f"avg over {rows}"}.get(kind, f"{kind} over {rows}")


def try_method(method: str, model: nn.Module, images: torch.Tensor, refusals: list[str]) -> str:
    """'yes' if `method` gives finite maps, else 'no [n]' with the error kept as refusal n."""
    try:
        maps = build_explainer(method, model)(images)
    except UnsupportedModelError as error:
        if str(error) not in refusals:
            refusals.append(str(error))
        return f"no [{refusals.index(str(error)) + 1}]"
    return "yes" if torch.isfinite(maps).all() else "NaN"


def median_ratio(forward: Callable[[], object], explain: Callable[[], object], repeats: int) -> tuple[float, ...]:
    """Median seconds of `forward` and `explain`, timed in alternation, and the median of the per-round ratios."""
    forward(), explain()
    fwd_times, exp_times = [], []
    for _ in range(repeats):
        for run, times in ((forward, fwd_times), (explain, exp_times)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    ratios = [e / f for f, e in zip(fwd_times, exp_times)]
    return statistics.median(fwd_times), statistics.median(exp_times), statistics.median(ratios)


def row(name: str, args: argparse.Namespace, refusals: list[str]) -> list[str]:
    model = build(name, args.depth, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, *model.patch_embed.img_size, generator=generator)
    works = [try_method(method, model, images[:2], refusals) for method in METHODS]

    few = images[: args.oracle_images]
    with torch.no_grad():
        ranked = model(few).argsort(dim=-1, descending=True)
    token_readout = family_of(model).readout_kind == "token"
    errors = []
    for targets in (ranked[:, 0], ranked[:, 1]):  # predicted class and the runner-up
        maps = AGCAM(model)(few, targets).flatten(1)
        reference = agcam_oracle_batch(model, few, targets, rows="class" if token_readout else "all")
        errors.append(relative_error(maps, reference))

    def forward():
        with torch.no_grad():
            return model(images)

    explainer = AGCAM(model)
    fwd, agcam, ratio = median_ratio(forward, lambda: explainer(images), args.repeats)
    return [
        name,
        type(model).__name__,
        readout_name(model),
        *works,
        f"{max(errors):.1e}",
        f"{fwd:.2f}",
        f"{agcam:.2f}",
        f"{ratio:.2f}",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    header = ["model (depth 2, random weights)", "class", "readout", *METHODS, "AG-CAM err vs oracle"]
    header += [f"fused fwd s (B={args.batch})", "AG-CAM s", "AG-CAM / fwd"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    refusals: list[str] = []
    for name in args.models:
        print("| " + " | ".join(row(name, args, refusals)) + " |", flush=True)
    print()
    for number, message in enumerate(refusals, 1):
        print(f"[{number}] {message}")
    print()
    print("| refused model | error |")
    print("|---|---|")
    for name, kwargs in REFUSED.items():
        model = timm.create_model(name, pretrained=False, **kwargs)
        try:
            family_of(model)
            message = "accepted (unexpected)"
        except UnsupportedModelError as error:
            message = str(error)
        print(f"| {name} | {message} |")


if __name__ == "__main__":
    main()
