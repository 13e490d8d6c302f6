"""`agcam data --data CONFIG`: index every split of a data config without training, and say what is there.

Per split: images, classes with the fewest and most images, images with boxes and unboxed, bad files (the first few
named, the rest counted) and the range of image sizes read. No pixel is decoded: an image without boxes is not
opened at all, one with boxes has its header read (its size checks the boxes). Bad files are collected under
`on_bad_sample: skip` whatever the config says, so one run lists them all; the exit code is 2 when there are any.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from pipeline.data import SPLITS, BadSampleWarning, DatasetSplits, LayoutError
from pipeline.data.inventory import SplitInventory, split_inventory

NAMED_BAD_FILES = 5  # bad files named per split; the rest are counted


def data_check_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="agcam data",
        description="Index every split of a data config and report images, classes, boxes and bad files.",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a full config (its data: section is used)")
    parser.add_class_arguments(DatasetSplits, "data", fail_untyped=False, sub_configs=True)
    parser.add_argument("--splits", type=list[str], default=list(SPLITS), help="the splits to index")
    return parser


def run_data_check(argv: Sequence[str]) -> int:
    """Parse `argv` (after `data`), index the splits, print the report; 0 when clean, 2 on bad files or errors."""
    parser = data_check_parser()
    try:
        config = parser.parse_args(list(argv), defaults=True)
        data = parser.instantiate_classes(config).data
    except (ArgumentError, LayoutError, ValueError, OSError) as error:
        print(f"agcam data: error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    source = data.source
    if hasattr(source, "bad_samples"):
        source.bad_samples.on_bad_sample = "skip"  # collect every bad file instead of stopping at the first
    print(f"{type(source).__name__} at {getattr(source, 'root', '(generated)')}: {source.num_classes} classes")
    status = 0
    for split in config.splits:
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BadSampleWarning)
                counts = split_inventory(source, split)
        except (LayoutError, ValueError) as error:
            print(f"{split}: {error}")
            status = 2 if split != "test" else status  # many datasets have no test split
            continue
        print(format_inventory(counts, source.class_names, time.perf_counter() - started))
        if counts.bad:
            status = 2
    return status


def format_inventory(counts: SplitInventory, class_names: Sequence[str], seconds: float) -> str:
    """A few lines on one split (see the module docstring)."""
    lines = [f"{counts.split}: {counts.images} images, indexed in {seconds:.1f} s"]
    present = [(count, name) for count, name in zip(counts.class_counts, class_names)]
    if present:
        fewest, most = min(present), max(present)
        empty = [name for count, name in present if count == 0]
        lines.append(
            f"  classes: {len(present)}, images per class {fewest[0]} ({fewest[1]}) .. {most[0]} ({most[1]})"
            + (f"; none of {empty[:5]}{' ...' if len(empty) > 5 else ''}" if empty else "")
        )
    lines.append(f"  boxes: {counts.localization_note().partition(': ')[2]}")
    size_range = counts.size_range()
    if size_range is not None:
        (min_w, min_h), (max_w, max_h) = size_range
        lines.append(
            f"  image sizes (headers of the {len(counts.sizes)} with boxes): width {min_w}..{max_w} px, "
            f"height {min_h}..{max_h} px"
        )
    if counts.bad:
        lines.append(f"  bad: {len(counts.bad)}")
        lines.extend(f"    {path}: {reason}" for path, reason in counts.bad[:NAMED_BAD_FILES])
        if len(counts.bad) > NAMED_BAD_FILES:
            lines.append(f"    ... and {len(counts.bad) - NAMED_BAD_FILES} more")
    else:
        lines.append("  bad: none")
    return "\n".join(lines)
