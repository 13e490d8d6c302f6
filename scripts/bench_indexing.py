"""How fast a class-folder tree is indexed (what `agcam data` and the start of `agcam fit` do), beside a bare listing.

    python -m scripts.bench_indexing                      # 100 000 files in 1 000 class folders, under /tmp
    python -m scripts.bench_indexing --files 20000 --boxed 0.01

Writes a tree of tiny JPEGs (one small file copied; indexing never decodes an unboxed image) into a temporary
folder, then times, side by side in one run: `os.walk` listing the files (the floor any indexer pays),
`ClassFolderSource` indexing the split with no box file, and with a metadata.jsonl boxing a share of the images
(their headers are read). Prints files/s and the ratio to the listing; deletes the tree at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from pipeline.data import ClassFolderSource


def write_tree(root: Path, files: int, classes: int, boxed: float) -> None:
    """root/train/<class>/<n>.jpg (one 24x16 JPEG's bytes), root/val/ alike but tiny, and train's metadata.jsonl."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (120, 80, 40)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    every = round(1 / boxed) if boxed else 0
    rows = []
    for index in range(files):
        class_dir = root / "train" / f"class_{index % classes:04d}"
        if index < classes:
            class_dir.mkdir(parents=True)
            (root / "val" / class_dir.name).mkdir(parents=True)
        name = f"{index:07d}.jpg"
        (class_dir / name).write_bytes(jpeg)
        if every and index % every == 0:
            rows.append(json.dumps({"file_name": f"{class_dir.name}/{name}", "objects": {"bbox": [[2, 2, 10, 8]]}}))
    (root / "train" / "boxes.jsonl").write_text("\n".join(rows) + "\n")


def timed(function) -> tuple[float, int]:
    started = time.perf_counter()
    count = function()
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--boxed", type=float, default=0.01, help="share of images with a box row")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary tree goes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_indexing_", dir=args.dir))
    try:
        started = time.perf_counter()
        write_tree(root, args.files, args.classes, args.boxed)
        print(f"wrote {args.files} files in {args.classes} class folders in {time.perf_counter() - started:.1f} s")
        variants = {
            "os.walk listing (floor)": lambda: sum(len(files) for _, _, files in os.walk(root / "train")),
            "ClassFolderSource, no boxes": lambda: len(ClassFolderSource(root, box_file="none").dataset("train")),
            f"ClassFolderSource, {args.boxed:.0%} boxed": lambda: len(
                ClassFolderSource(root, box_file="boxes.jsonl").dataset("train")
            ),
        }
        results = {name: timed(run) for name, run in variants.items()}
        floor = results["os.walk listing (floor)"][0]
        print(f"{'variant':<34} {'files':>8} {'seconds':>8} {'files/s':>10} {'x listing':>10}")
        for name, (seconds, count) in results.items():
            print(f"{name:<34} {count:>8} {seconds:>8.2f} {count / seconds:>10.0f} {seconds / floor:>10.2f}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
