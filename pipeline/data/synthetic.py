"""The embedded "shapes" dataset: seeded, procedurally drawn shapes with exact boxes and masks, nothing to download.

The default is made to be learnable by a small ViT trained from scratch on a CPU in minutes: every class has its
own hue (with jitter), drawn on a muted gradient background with a few small muted distractors. `random_colors`
(hue no longer tied to class), `clutter` (more distractors) and `max_instances` (several instances) make it harder.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from torch.utils.data import Dataset

from pipeline.data.source import SPLITS, ImageSource, RawSample

SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "ellipse")
MIN_CLASSES = 2
MIN_IMAGE_SIZE = 32
MAX_INSTANCES = 3

_SUBPIXEL_BITS = 4  # cv2.fillPoly takes fixed-point vertices: 1/16 pixel
_MAX_ROTATION = np.deg2rad(20.0)  # small, so that a square never turns into a diamond
_RADIUS_RANGE = (0.2, 0.4)  # of image_size for a lone instance; divided by sqrt(instance count)
_PLACEMENT_TRIES = 20  # per instance or distractor; one that finds no free spot is left out
_CLEARANCE = 2  # pixels kept free around each instance (and its box, for distractors), so nothing touches it
_HUE_JITTER = 0.2  # of the hue spacing between classes, either way
_NOISE_STD = 4.0  # grey levels
# Each sample draws from independent streams, so changing one option (colours, clutter) leaves the rest as it was.
_GEOMETRY_STREAM, _COLOR_STREAM, _CLUTTER_STREAM = range(3)


def _regular_polygon(vertices: int, first_vertex_deg: float = -90.0) -> np.ndarray:
    """Unit-radius polygon vertices (n, 2) as (x, y) with y down; -90 degrees puts the first vertex on top."""
    angles = np.deg2rad(first_vertex_deg) + np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    """Unit star outline: tips at radius 1 alternating with notches at `inner_radius`."""
    outline = _regular_polygon(2 * points)
    outline[1::2] *= inner_radius
    return outline


def _cross(arm_half_width: float = 0.3) -> np.ndarray:
    """Unit plus-sign outline, arms reaching radius 1."""
    w = arm_half_width
    return np.array(
        [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    )


_ROUND = _regular_polygon(48)
# Per shape: the filled outline first, then any holes, all around the origin at unit radius.
_UNIT_OUTLINES = {
    "circle": (_ROUND,),
    "square": (_regular_polygon(4, 45.0),),
    "triangle": (_regular_polygon(3),),
    "star": (_star(),),
    "cross": (_cross(),),
    "ring": (_ROUND, 0.55 * _ROUND),
    "diamond": (_regular_polygon(4, 0.0) * (0.6, 1.0),),
    "ellipse": (_ROUND * (1.0, 0.55),),
}


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """(3,) float32 RGB in 0..255 from HSV in 0..1."""
    return 255.0 * np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32)


def _fill(outlines: list[np.ndarray], image_size: int) -> np.ndarray:
    """(H, W) uint8 0/1 mask of the first outline with the others cut out as holes."""
    mask = np.zeros((image_size, image_size), np.uint8)
    fixed_point = [np.round(outline * (1 << _SUBPIXEL_BITS)).astype(np.int32) for outline in outlines]
    cv2.fillPoly(mask, fixed_point[:1], 1, cv2.LINE_8, _SUBPIXEL_BITS)
    if len(fixed_point) > 1:
        cv2.fillPoly(mask, fixed_point[1:], 0, cv2.LINE_8, _SUBPIXEL_BITS)
    return mask


def _place_shape(shape: str, radius: float, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 0/1 mask of `shape`, slightly rotated, at a random position fully inside the image."""
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]])  # acts on row vectors (x, y)
    outlines = [radius * unit @ rotation for unit in _UNIT_OUTLINES[shape]]
    low, high = outlines[0].min(axis=0), outlines[0].max(axis=0)
    center = rng.uniform(1.0 - low, image_size - 2.0 - high)  # one pixel of margin on every side
    return _fill([outline + center for outline in outlines], image_size)


def _surroundings(mask: np.ndarray) -> np.ndarray:
    """`mask` grown by _CLEARANCE pixels: the area nothing else may be drawn in."""
    return cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=_CLEARANCE)


def _distractor(image_size: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 0/1 mask of a small blob or a short thin line somewhere in the image."""
    mask = np.zeros((image_size, image_size), np.uint8)
    x, y = rng.uniform(0, image_size, size=2)
    if rng.uniform() < 0.5:
        radius = max(1, round(rng.uniform(0.03, 0.07) * image_size))
        cv2.circle(mask, (int(x), int(y)), radius, 1, -1)
    else:
        length, angle = rng.uniform(0.12, 0.3) * image_size, rng.uniform(0, np.pi)
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        cv2.line(mask, (int(x), int(y)), end, 1, max(1, image_size // 48))
    return mask


def _background(image_size: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 smooth gradient between two muted colours along a random direction."""
    start = _rgb(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.65))
    end = _rgb(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.3, 0.65))
    direction = rng.uniform(0, 2 * np.pi)
    coords = (np.arange(image_size, dtype=np.float32) - (image_size - 1) / 2) / image_size  # -0.5..0.5
    ramp = np.clip(coords[None, :] * np.cos(direction) + coords[:, None] * np.sin(direction) + 0.5, 0.0, 1.0)
    return start + (end - start) * ramp[..., None]


class SyntheticShapes(Dataset):
    """Seeded shapes images with exact boxes and instance masks; sample i depends only on (seed, i).

    Args:
        num_images: Number of images in the dataset.
        image_size: Side of the square images in pixels (>= 32).
        num_classes: Number of shape classes, the first of SHAPE_NAMES (2..8).
        seed: Non-negative seed; datasets with different seeds share no image.
        random_colors: Draw each object's hue at random instead of from its class, so only the shape tells the class.
        clutter: Number of small muted distractors (blobs, lines) per image, kept off the objects.
        max_instances: Up to this many instances of the one class per image (1..3); smaller when there are more.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 64,
        num_classes: int = 6,
        seed: int = 0,
        random_colors: bool = False,
        clutter: int = 3,
        max_instances: int = 1,
    ) -> None:
        _check_options(num_images, image_size, num_classes, seed, clutter, max_instances)
        self.num_images = num_images
        self.image_size = image_size
        self.num_classes = num_classes
        self.seed = seed
        self.random_colors = random_colors
        self.clutter = clutter
        self.max_instances = max_instances
        self.class_names = list(SHAPE_NAMES[:num_classes])

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} shapes images")
        geometry_rng, color_rng, clutter_rng = (
            np.random.default_rng([self.seed, int(index), stream])
            for stream in (_GEOMETRY_STREAM, _COLOR_STREAM, _CLUTTER_STREAM)
        )
        # The class comes from the generator, not from index % num_classes, so strided subsets stay balanced.
        label = int(geometry_rng.integers(self.num_classes))
        instance_masks = self._instance_masks(self.class_names[label], geometry_rng)
        mask = np.zeros((self.image_size, self.image_size), np.uint8)
        for instance, instance_mask in enumerate(instance_masks, start=1):
            mask[instance_mask > 0] = instance
        boxes = np.stack([_inclusive_box(instance_mask) for instance_mask in instance_masks])
        boxed = np.zeros_like(mask)
        for x_min, y_min, x_max, y_max in boxes.astype(int):
            boxed[y_min : y_max + 1, x_min : x_max + 1] = 1

        image = _background(self.image_size, color_rng)
        noise = color_rng.normal(0.0, _NOISE_STD, image.shape)
        self._draw_distractors(image, _surroundings(boxed) > 0, clutter_rng)
        for instance_mask in instance_masks:
            image[instance_mask > 0] = _rgb(self._object_hue(label, color_rng), *color_rng.uniform(0.65, 1.0, size=2))
        return RawSample(
            image=np.clip(image + noise, 0, 255).astype(np.uint8),
            boxes=boxes,
            box_labels=np.full(len(instance_masks), label, np.int64),
            target=label,
            image_id=f"shapes-{self.seed}-{index}",
            mask=mask,
        )

    def _instance_masks(self, shape: str, rng: np.random.Generator) -> list[np.ndarray]:
        """Masks (H, W) uint8 0/1 of 1..max_instances non-touching instances of `shape`."""
        count = int(rng.integers(1, self.max_instances + 1))
        taken = np.zeros((self.image_size, self.image_size), np.uint8)
        instance_masks = []
        for _ in range(count * _PLACEMENT_TRIES):
            radius = rng.uniform(*_RADIUS_RANGE) * self.image_size / np.sqrt(count)
            candidate = _place_shape(shape, radius, self.image_size, rng)
            if (candidate & taken).any():
                continue
            instance_masks.append(candidate)
            taken |= _surroundings(candidate)
            if len(instance_masks) == count:
                break
        return instance_masks

    def _draw_distractors(self, image: np.ndarray, keep_clear: np.ndarray, rng: np.random.Generator) -> None:
        """Paint `clutter` muted distractors into `image` (H, W, 3) where `keep_clear` (H, W) bool is False."""
        drawn = 0
        for _ in range(self.clutter * _PLACEMENT_TRIES):
            if drawn == self.clutter:
                break
            distractor = _distractor(self.image_size, rng) > 0
            if (distractor & keep_clear).any():
                continue
            image[distractor] = _rgb(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.2, 0.85))
            drawn += 1

    def _object_hue(self, label: int, rng: np.random.Generator) -> float:
        """The class's own hue with jitter, or any hue with `random_colors`; one draw either way."""
        draw = rng.uniform()
        if self.random_colors:
            return draw
        return (label + _HUE_JITTER * (2 * draw - 1)) / self.num_classes % 1.0


def _inclusive_box(instance_mask: np.ndarray) -> np.ndarray:
    """(4,) float32 xyxy of the first and last columns and rows that hold a pixel of `instance_mask`."""
    rows, cols = np.nonzero(instance_mask)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.float32)


def _check_options(
    num_images: int, image_size: int, num_classes: int, seed: int, clutter: int, max_instances: int
) -> None:
    """Clear errors, naming the value and the accepted range, for options the generator cannot honour."""
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    if not MIN_CLASSES <= num_classes <= len(SHAPE_NAMES):
        raise ValueError(f"num_classes must be in [{MIN_CLASSES}, {len(SHAPE_NAMES)}], got {num_classes}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if clutter < 0:
        raise ValueError(f"clutter must be >= 0, got {clutter}")
    if not 1 <= max_instances <= MAX_INSTANCES:
        raise ValueError(f"max_instances must be in [1, {MAX_INSTANCES}], got {max_instances}")


class ShapesSource(ImageSource):
    """The default source: SyntheticShapes splits with disjoint seeds derived from one `seed`.

    Args:
        train_size: Number of training images.
        val_size: Number of validation images.
        test_size: Number of test images.
        image_size: Side of the square images in pixels (>= 32).
        num_classes: Number of shape classes, the first of SHAPE_NAMES (2..8).
        seed: Non-negative seed; split s gets the dataset seed `seed * 3 + SPLITS.index(s)`.
        random_colors: Draw each object's hue at random instead of from its class, so only the shape tells the class.
        clutter: Number of small muted distractors per image.
        max_instances: Up to this many instances of the one class per image (1..3).
    """

    multi_label = False

    def __init__(
        self,
        train_size: int = 8000,
        val_size: int = 512,
        test_size: int = 512,
        image_size: int = 64,
        num_classes: int = 6,
        seed: int = 0,
        random_colors: bool = False,
        clutter: int = 3,
        max_instances: int = 1,
    ) -> None:
        split_sizes = {"train": train_size, "val": val_size, "test": test_size}
        for split, size in split_sizes.items():
            if size < 0:
                raise ValueError(f"{split}_size must be >= 0, got {size}")
        if seed < 0:  # checked here too: the split seeds derived from it would hide the value given
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.class_names = list(SHAPE_NAMES[:num_classes])
        self._datasets = {
            split: SyntheticShapes(
                num_images=split_sizes[split],
                image_size=image_size,
                num_classes=num_classes,
                seed=seed * len(SPLITS) + SPLITS.index(split),
                random_colors=random_colors,
                clutter=clutter,
                max_instances=max_instances,
            )
            for split in SPLITS
        }

    def dataset(self, split: str) -> SyntheticShapes:
        """The SyntheticShapes dataset of `split`."""
        if split not in self._datasets:
            raise ValueError(f"unknown split {split!r} for ShapesSource; expected one of {SPLITS}")
        return self._datasets[split]
