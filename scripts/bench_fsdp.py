"""Peak memory per process when explaining a large ViT sharded with FSDP2 over 2 processes, against unsharded.

    python -m scripts.bench_fsdp                          # vit_large_patch16_224, 4 and 8 blocks, AG-CAM
    python -m scripts.bench_fsdp --depths 4 8 12 --method grad_rollout --batch 2

Random weights, built on the meta device and materialized as shards (or whole, for the baseline), so no process
ever holds more than it needs before the explanation. Each process's peak resident memory during one explainer
call is measured above its memory just before the call (Linux: the peak is reset through /proc/self/clear_refs),
and so is the parameter memory the process holds. Allocations over 64 KiB are mmapped (glibc settings in the
processes' environment) so that resident memory follows the live tensors. The goal for the sharded run is about
half the parameter memory plus one block's whole parameters plus activations; FSDP2's gather itself holds the
block about twice while it copies out. CPU processes over gloo (one machine); the time ratio is measured side by
side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from pipeline.explain import build_explainer

MB = 2**20


def resident_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def build(model_name: str, depth: int, sharded: bool) -> torch.nn.Module:
    """The model with random weights; sharded: fully_shard on every block and the root before materializing."""
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, depth=depth, num_classes=1000)
    if sharded:
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(dist.get_rank())
    with torch.no_grad():
        for param in model.parameters():
            local = param.to_local() if isinstance(param, DTensor) else param
            local.copy_(torch.randn(local.shape, generator=generator) * 0.02)
    return model.eval()


def measure(rank: int, world: int, port: int, args: argparse.Namespace, depth: int, out: Path) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = build(args.model, depth, sharded=world > 1)
        images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(rank))
        explainer = build_explainer(args.method, model)
        explainer(images[:1])  # warm-up: lazy initialization, allocator
        held = sum(
            (p.to_local() if isinstance(p, DTensor) else p).numel() * p.element_size() for p in model.parameters()
        )
        block = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())  # whole (DTensor numel)
        whole = sum(p.numel() * p.element_size() for p in model.parameters())
        dist.barrier()
        before = resident_bytes("VmRSS")
        reset_peak()
        start = time.perf_counter()
        explainer(images)
        seconds = time.perf_counter() - start
        peak = resident_bytes("VmHWM") - before
        record = dict(rank=rank, world=world, held=held, block=block, whole=whole, peak=peak, seconds=seconds)
        (out / f"{world}-{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_large_patch16_224")
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--method", default="agcam", choices=["agcam", "rollout", "grad_rollout"])
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    # glibc: serve every allocation over 64 KiB by mmap and return it on free, so resident memory follows live tensors
    os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    print(f"{args.model}, {args.method}, batch {args.batch} per process, 224 px, float32, CPU/gloo\n")
    print(
        "| blocks | parameters (MB) | one block (MB) | unsharded: parameters + peak of the call (MB) "
        "| sharded over 2, per process: shard + peak (MB) | ratio | goal: (1/2 parameters + 1 block) / parameters "
        "| time ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for depth in args.depths:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            for world in (1, 2):
                mp.spawn(measure, args=(world, free_port(), args, depth, out), nprocs=world, join=True)
            (single,) = [json.loads((out / "1-0.json").read_text())]
            sharded = [json.loads((out / f"2-{rank}.json").read_text()) for rank in range(2)]
        unsharded_total = single["held"] + single["peak"]
        sharded_total = max(record["held"] + record["peak"] for record in sharded)
        goal = (single["whole"] / 2 + single["block"]) / single["whole"]
        seconds = max(record["seconds"] for record in sharded) / single["seconds"]
        print(
            f"| {depth} | {single['whole'] / MB:.0f} | {single['block'] / MB:.0f} | "
            f"{single['held'] / MB:.0f} + {single['peak'] / MB:.0f} = {unsharded_total / MB:.0f} | "
            + " / ".join(f"{r['held'] / MB:.0f} + {r['peak'] / MB:.0f}" for r in sharded)
            + f" | {sharded_total / unsharded_total:.2f} | {goal:.2f} | {seconds:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
