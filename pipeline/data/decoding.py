"""Image files: which files count as images, and decoding them to RGB (or reading only their header's size)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.bad_samples import BadSampleError

Size = tuple[int, int]  # (width, height) in pixels

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" (32-bit int) is read as a 16-bit range
_TRANSPARENT_BACKGROUND = (255, 255, 255, 255)  # transparent pixels are shown on white, as image viewers do

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # compared lower-case


def rgb_from_pil(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded PIL image of any mode."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray8 = ((gray * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 65535 * 255)
        return np.repeat(gray8[:, :, None], 3, axis=2)
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, _TRANSPARENT_BACKGROUND)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.array(image.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, or raise `BadSampleError` naming the file and the problem.

    Grayscale, palette (with transparency), alpha, CMYK and 16-bit images are converted; transparent pixels become
    white. EXIF orientation is not applied: annotations refer to the pixels as stored.
    """
    try:
        with Image.open(path) as image:
            image.load()
            rgb = rgb_from_pil(image)
    except FileNotFoundError:
        raise BadSampleError(path, "image file not found") from None
    except Image.UnidentifiedImageError:
        raise BadSampleError(path, "not an image file (no decoder recognises its content)") from None
    except Exception as error:  # every decoder failure (truncated, corrupt, too large) is a bad file
        raise BadSampleError(path, f"image cannot be decoded ({type(error).__name__}: {error})") from error
    return rgb


def image_size(path: str | Path) -> Size:
    """(width, height) from the image file's header, or `BadSampleError` if it is missing or not an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise BadSampleError(path, "image file not found") from None
    except Exception as error:
        raise BadSampleError(path, f"not a readable image ({type(error).__name__}: {error})") from error


def load_mask(path: str | Path, object_ids: np.ndarray) -> np.ndarray:
    """(H, W) uint8 object mask: each pixel's value in the PNG (palette index or gray level) looked up in `object_ids`.

    Args:
        path: a mask PNG.
        object_ids: (256,) uint8, file value -> object id (box index + 1, 0 for background).
    """
    try:
        with Image.open(path) as mask:
            values = np.asarray(mask if mask.mode in ("P", "L") else mask.convert("L"))
    except FileNotFoundError:
        raise BadSampleError(path, "mask file not found") from None
    except Exception as error:
        raise BadSampleError(path, f"mask cannot be decoded ({type(error).__name__}: {error})") from error
    return object_ids[values]


def is_image_name(name: str) -> bool:
    """An image file by its extension (any case); hidden files (".name") are not images."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """`image_paths` as Path objects."""
    return [Path(path) for path in image_paths(folder, recursive)]


def image_paths(folder: Path, recursive: bool = False) -> list[str]:
    """The image files (by extension, any case, hidden ones left out) in `folder`, or under it with `recursive`,
    sorted by path.

    The recursive walk follows symlinked folders and files (datasets are often mounted that way) and enters no folder
    that is one of its own ancestors, so a symlink loop ends. A broken symlink with an image name is listed: reading
    it then fails with a message naming it, instead of the file vanishing.
    """
    found: list[str] = []
    pending = [(str(folder), frozenset[tuple[int, int]]())]
    while pending:
        current, ancestors = pending.pop()
        status = os.stat(current)
        here = (status.st_dev, status.st_ino)
        if here in ancestors:
            continue  # a symlink back to an enclosing folder: its files are listed already
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if recursive and entry.is_dir():  # follows symlinks
                    pending.append((entry.path, ancestors | {here}))
                elif is_image_name(entry.name) and not entry.is_dir():
                    found.append(entry.path)
    return sorted(found)


def sub_folders(folder: Path) -> list[str]:
    """The names of the folders in `folder` (symlinked ones too, hidden ones left out), sorted."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir())
