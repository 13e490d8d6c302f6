"""Which AG-CAM row weighting localizes best on pooled-readout ViTs: train tiny GAP and MAP ViTs, then score maps.

    python -m scripts.pooled_readout_study                   # both readouts, 2 epochs of 8000 images, CPU
    python -m scripts.pooled_readout_study --readouts avg --train-size 4000 --epochs 1

Each model is a timm VisionTransformer without a class token (img 64, patch 8, dim 96, depth 4, 3 heads, as in
configs/synthetic.yaml) reading out by global average pooling ('avg') or an attention-pool probe ('map'), trained
from scratch on the shapes data with a plain loop (AdamW, lr 1e-3, weight decay 0.05, the config's augmentation).
On the validation images every method's maps are scored the paper's way: mean box IoU (threshold 0.5) over the
correctly classified images, and the pointing game (the map's peak inside the box). A markdown table is printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data import Augmentation, SampleTransform, ShapesSource
from pipeline.explain import AGCAM, AttentionRollout, Explainer, GradientRollout, TransformerAttribution
from pipeline.metrics import box_localization, pointing_game
from pipeline.models import InputConfig

IMAGE_SIZE = (64, 64)
INPUT = InputConfig(IMAGE_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
AUGMENTATION = Augmentation(crop_scale=(0.7, 1.0), hflip=True, color_jitter=0.1, hue_jitter=0.0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readouts", nargs="+", default=["avg", "map"], choices=["avg", "map", "token"])
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--val-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_model(readout: str, num_classes: int, seed: int) -> nn.Module:
    """The tiny ViT of configs/synthetic.yaml, reading out from a class token or by pooling without one."""
    torch.manual_seed(seed)
    pooled = dict(class_token=False, global_pool=readout) if readout != "token" else {}
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=64,
        patch_size=8,
        embed_dim=96,
        depth=4,
        num_heads=3,
        num_classes=num_classes,
        **pooled,
    )


def collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([sample["image"] for sample in samples]),
        "target": torch.stack([sample["target"] for sample in samples]),
        "boxes": [sample["boxes"] for sample in samples],
    }


class Transformed(torch.utils.data.Dataset):
    def __init__(self, dataset, transform: SampleTransform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.transform(self.dataset[index])


def train(model: nn.Module, loader: DataLoader, epochs: int) -> float:
    """A plain loop: AdamW at lr 1e-3 with a linear warm-up over the first 10% of steps, then cosine decay."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    total = epochs * len(loader)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + torch.cos(torch.tensor((step - warmup) / (total - warmup) * torch.pi)).item())
        ),
    )
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            loss = F.cross_entropy(model(batch["image"]), batch["target"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def methods_for(model: nn.Module) -> dict[str, Explainer]:
    methods = {
        "AG-CAM sum": AGCAM(model, row_weighting="sum"),
        "AG-CAM readout": AGCAM(model, row_weighting="readout"),
        "Attention Rollout": AttentionRollout(model),
        "Gradient Rollout": GradientRollout(model),
    }
    if model.global_pool in ("avg", "token"):
        methods["LRP (Chefer)"] = TransformerAttribution(model)
    return methods


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, dict[str, tuple[float, float]]]:
    """Accuracy, and per method the mean IoU and pointing-game hit rate over correctly classified images."""
    methods = methods_for(model)
    ious = {name: [] for name in methods}
    hits = {name: [] for name in methods}
    correct_total, seen = 0, 0
    for batch in loader:
        images, targets = batch["image"], batch["target"]
        with torch.no_grad():
            correct = model(images).argmax(dim=-1) == targets
        correct_total, seen = correct_total + int(correct.sum()), seen + len(targets)
        kept = correct.nonzero().flatten().tolist()
        if not kept:
            continue
        boxes = [batch["boxes"][i] for i in kept]
        for name, explainer in methods.items():
            maps = explainer(images[kept], targets[kept])
            ious[name].append(box_localization(maps, boxes, IMAGE_SIZE)["iou"])
            hits[name].append(pointing_game(maps, boxes, IMAGE_SIZE).float())
    scores = {name: (torch.cat(ious[name]).mean().item(), torch.cat(hits[name]).mean().item()) for name in methods}
    return correct_total / seen, scores


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = ShapesSource(
        train_size=args.train_size, val_size=args.val_size, test_size=0, image_size=64, num_classes=6, seed=args.seed
    )
    train_set = Transformed(source.dataset("train"), SampleTransform(INPUT, AUGMENTATION, seed=args.seed))
    val_set = Transformed(source.dataset("val"), SampleTransform(INPUT))
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, collate_fn=collate, generator=generator)
    val_loader = DataLoader(val_set, args.batch_size, collate_fn=collate)
    rows = []
    for readout in args.readouts:
        model = build_model(readout, source.num_classes, args.seed)
        seconds = train(model, train_loader, args.epochs)
        accuracy, scores = evaluate(model, val_loader)
        print(f"{readout}: trained in {seconds:.0f} s, val accuracy {accuracy:.3f}", flush=True)
        rows += [(readout, accuracy, name, iou, hit) for name, (iou, hit) in scores.items()]
    print()
    print("| readout | val acc | method | mean IoU (correct) | pointing game |")
    print("|---|---|---|---|---|")
    for readout, accuracy, name, iou, hit in rows:
        print(f"| {readout} | {accuracy:.3f} | {name} | {iou:.3f} | {hit:.3f} |")


if __name__ == "__main__":
    main()
