"""Training images per second: this project's loader against torchvision ImageFolder + timm's create_transform.

    python -m scripts.bench_data                     # 2000 JPEGs of 500x375 in 10 class folders, 2 workers, 224 px
    python -m scripts.bench_data --workers 4 --images 4000 --out bench_data.json

Both loaders read the same generated JPEG tree (ImageNet's train layout, written under /tmp and deleted after),
with the same workers, batch size, output size and augmentation: a random resized crop of 60-100% of the image,
a horizontal flip, brightness/contrast/saturation jitter 0.2 with probability 0.8, normalization, collation.
Ours: ImageNetSource -> SampleTransform (albumentations, boxes carried along) -> collate_samples. Theirs:
ImageFolder (PIL) -> create_transform(is_training=True) -> default collate. The loaders are timed in alternating
rounds, each with its workers started afresh and warmed up, so load from other processes hits both alike; the goal is
ours / theirs >= 1.0. Then, in the main process, what one image costs by stage: decoding with Pillow as the
project does, with Pillow's draft mode (DCT downscaling), with torchvision.io.decode_jpeg, and each full transform.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.io import decode_jpeg, read_file

from pipeline.data import ImageNetSource
from pipeline.data.decoding import load_rgb
from pipeline.data.splits import DatasetSplits, TransformedDataset
from pipeline.data.transforms import Augmentation, SampleTransform
from pipeline.files import write_text
from pipeline.inputs import InputConfig

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_SCALE, JITTER, JITTER_PROB = (0.6, 1.0), 0.2, 0.8  # the project's Augmentation defaults


def write_jpeg_tree(root: Path, images: int, classes: int, size: tuple[int, int], seed: int = 0) -> None:
    """ImageNet's train layout: LOC_synset_mapping.txt and train/<wnid>/<name>.JPEG, photo-like content.

    Smooth colour fields with edges and fine noise compress like photographs (about 30-60 KB at quality 90).
    """
    rng = np.random.default_rng(seed)
    wnids = [f"n{index:08d}" for index in range(classes)]
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} class {i}\n" for i, wnid in enumerate(wnids)))
    width, height = size
    for index in range(images):
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        picture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.circle(picture, center, int(rng.integers(20, height // 2)), colour, thickness=-1)
        picture += rng.normal(0, 12, picture.shape).astype(np.float32)
        folder = root / "train" / wnids[index % classes]
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
        image.save(folder / f"{wnids[index % classes]}_{index}.JPEG", quality=90)


def project_loader(root: Path, size: int, batch: int, workers: int) -> DataLoader:
    """The project's training loader over the tree, as `agcam fit` builds it (ImageNet source, train split)."""
    config = InputConfig((size, size), MEAN, STD, "bilinear")
    augmentation = Augmentation(crop_scale=CROP_SCALE, hflip=True, color_jitter=JITTER, hue_jitter=0.0)
    splits = DatasetSplits(ImageNetSource(root), batch_size=batch, num_workers=workers, augmentation=augmentation)
    splits.input_config = config
    splits.datasets["train"] = TransformedDataset(splits.source.dataset("train"), SampleTransform(config, augmentation))
    loader = splits.loader("train", shuffle=True)
    return DataLoader(  # the same loader, its workers not persistent (see `images_per_second`)
        loader.dataset, batch, shuffle=True, num_workers=workers, collate_fn=loader.collate_fn,
        worker_init_fn=loader.worker_init_fn,
    )  # fmt: skip


def timm_transform(size: int) -> Callable:
    return create_transform(
        size, is_training=True, scale=CROP_SCALE, hflip=0.5, color_jitter=JITTER, color_jitter_prob=JITTER_PROB,
        interpolation="bilinear", mean=MEAN, std=STD,
    )  # fmt: skip


def reference_loader(root: Path, size: int, batch: int, workers: int) -> DataLoader:
    """torchvision ImageFolder + timm's training transform, what a user would otherwise run."""
    dataset = ImageFolder(str(root / "train"), transform=timm_transform(size))
    return DataLoader(dataset, batch, shuffle=True, num_workers=workers)


def images_per_second(loaders: dict[str, DataLoader], batches: int, rounds: int) -> dict[str, float]:
    """Median images/s over `batches` batches per round, the loaders taking turns.

    Each round starts a loader's workers afresh and lets every worker deliver a batch before the clock starts, and
    stops them after: no loader's workers run (or fill their prefetch queue) while the other is timed.
    """
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(rounds):
        for name, loader in loaders.items():
            batches_of = iter(loader)
            for _ in range(max(1, loader.num_workers)):
                next(batches_of)
            start, count = time.perf_counter(), 0
            for _ in range(batches):
                batch = next(batches_of)
                count += len(batch["image"] if isinstance(batch, dict) else batch[0])
            rates[name].append(count / (time.perf_counter() - start))
            del batches_of  # stops the workers
    return {name: statistics.median(values) for name, values in rates.items()}


def pil_draft(path: Path, size: int) -> np.ndarray:
    """Decode with Pillow's draft mode: the JPEG decoder downscales by 1/2, 1/4 or 1/8 while the result stays at
    least `size` on both sides (it cannot when the image is less than twice that)."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        return np.asarray(image.convert("RGB"))


def per_image_ms(paths: list[Path], size: int) -> dict[str, float]:
    """Median milliseconds per image of each stage, in this process, one thread."""
    config = InputConfig((size, size), MEAN, STD, "bilinear")
    ours = SampleTransform(config, Augmentation(crop_scale=CROP_SCALE, hflip=True, color_jitter=JITTER), seed=0)
    theirs = timm_transform(size)
    sample = {"boxes": np.zeros((0, 4), np.float32), "box_labels": np.zeros(0, np.int64), "target": 0}
    decoded = [load_rgb(path) for path in paths]
    pictures = [Image.open(path).convert("RGB") for path in paths]
    stages = {
        "decode: Pillow (the project's load_rgb)": lambda i: load_rgb(paths[i]),
        "decode: Pillow draft mode": lambda i: pil_draft(paths[i], size),
        "decode: torchvision.io.decode_jpeg": lambda i: decode_jpeg(read_file(str(paths[i]))),
        "transform: ours (albumentations)": lambda i: ours({**sample, "image": decoded[i], "image_id": str(i)}),
        "transform: timm create_transform": lambda i: theirs(pictures[i]),
    }
    with torch.inference_mode():
        torch.set_num_threads(1)
        times = {}
        for name, stage in stages.items():
            stage(0)
            start = time.perf_counter()
            for index in range(len(paths)):
                stage(index)
            times[name] = (time.perf_counter() - start) / len(paths) * 1000
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="JPEGs generated")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--image_size", type=int, nargs=2, default=(500, 375), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--size", type=int, default=224, help="output size (square)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=16, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage_images", type=int, default=100, help="images timed per stage in the main process")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_data_", dir="/tmp") as folder:
        root = Path(folder)
        write_jpeg_tree(root, args.images, args.classes, tuple(args.image_size))
        loaders = {
            "ours": project_loader(root, args.size, args.batch, args.workers),
            "torchvision + timm": reference_loader(root, args.size, args.batch, args.workers),
        }
        rates = images_per_second(loaders, args.batches, args.rounds)
        paths = sorted((root / "train").rglob("*.JPEG"))[: args.stage_images]
        stages = per_image_ms(paths, args.size)
        jpeg_kb = statistics.mean(path.stat().st_size for path in paths) / 1024
    workers = max(1, args.workers)
    report = {
        "images": args.images,
        "image_size": list(args.image_size),
        "mean_jpeg_kb": jpeg_kb,
        "output_size": args.size,
        "workers": args.workers,
        "batch": args.batch,
        "cpu": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "images_per_second": rates,
        "images_per_second_per_worker": {name: rate / workers for name, rate in rates.items()},
        "ratio": rates["ours"] / rates["torchvision + timm"],
        "per_image_ms": stages,
    }
    print(f"{args.images} JPEGs {args.image_size[0]}x{args.image_size[1]} ({jpeg_kb:.0f} KB), {args.size} px output, "
          f"{args.workers} workers, batch {args.batch}")  # fmt: skip
    print(f"{'loader':<24}{'images/s':>10}{'per worker':>12}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>10.1f}{rate / workers:>12.1f}")
    print(f"ours / torchvision + timm: {report['ratio']:.2f} (goal >= 1.0)")
    print(f"{'per image, main process, 1 thread':<44}{'ms':>8}")
    for name, ms in stages.items():
        print(f"{name:<44}{ms:>8.2f}")
    if args.out:
        write_text(args.out, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
