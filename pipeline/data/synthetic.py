"""The embedded "shapes" dataset: seeded, procedurally drawn shapes with exact boxes and masks, nothing to download.

The default is made to be learnable by a small ViT trained from scratch on a CPU in minutes: every class has its
own hue (with jitter), drawn on a muted gradient background with a few small muted distractors. `random_colors`
(hue no longer tied to class), `clutter` (more distractors) and `max_instances` (several instances) make it harder.

Shortcut options build a model that is right for the wrong reason, to see whether its explanations catch it.
`marker_fraction` p puts a small pure-white square (`marker_size` px, by default 5 px per 64 px of image side) on
that share of the images, in a band along the top border at an x position coded by class (class c in the middle
of the c-th of `num_classes` equal columns); as soon as p > 0 every object of the dataset is placed below the band
with two free rows, so the marker never touches an object box, and it is never part of the boxes or masks.
`hue_reliability` is the share of objects drawn in their class hue, the others get a random hue (1.0: always the
class hue, the default; `random_colors` is the same as 0.0). `marker_mode` says where the marker goes: "same"
at the image's own class spot, "shuffled" at a wrong class's spot (label + a seeded offset in 1..num_classes-1,
never the true class), "absent" nowhere. The three modes share the images, the objects and which images carry a
marker (the same share p): only the marker's spot changes, so a test split in "shuffled" or "absent" mode measures
how much the model leans on the marker (use p = 1 for a misleading marker on every test image). Measured with
configs/shortcut.yaml (tiny ViT, 2 epochs, no crop or flip, p = 1, hue_reliability 0.7; scripts/shortcut_study.py):
the shortcut is taken (val accuracy 1.00, shuffled-marker test accuracy 0.00) while the object alone is still
learnable (val accuracy 0.73 without any marker).
"""

from __future__ import annotations

import colorsys
from typing import Literal, get_args

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
_MARKER_TOP = 1  # first row of the marker band, the same one-pixel margin the objects keep from the border
_MARKER_PIXELS_PER_64 = 5  # default marker side per 64 px of image side
_MARKER_VALUE = 255  # pure white in every channel: a colour no background, distractor or object pixel takes
# Each sample draws from independent streams, so changing one option (colours, clutter, markers) leaves the rest as
# it was; the marker and hue-reliability streams came later and are only read when those options are on.
_GEOMETRY_STREAM, _COLOR_STREAM, _CLUTTER_STREAM, _MARKER_STREAM, _HUE_STREAM, _BORDER_STREAM = range(6)
_BORDER_PIXELS_PER_64 = 2  # default border width per 64 px of image side
_BORDER_SATURATION, _BORDER_VALUE = 0.6, 0.9  # a clear tint: more saturated than any background or distractor

MarkerMode = Literal["same", "shuffled", "absent"]
MARKER_MODES = get_args(MarkerMode)


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


def _place_shape(
    shape: str, radius: float, image_size: int, rng: np.random.Generator, top: float = 1.0, margin: float = 1.0
) -> np.ndarray:
    """(H, W) uint8 0/1 mask of `shape`, slightly rotated, at a random position inside the image below row `top`,
    `margin` pixels from every border (1: today's one-pixel margin; a tinted border keeps the objects off it)."""
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]])  # acts on row vectors (x, y)
    outlines = [radius * unit @ rotation for unit in _UNIT_OUTLINES[shape]]
    low, high = outlines[0].min(axis=0), outlines[0].max(axis=0)
    top = max(top, margin)
    room = image_size - 1.0 - margin - top  # height left under a marker band; never binding without one (top = 1)
    if high[1] - low[1] > room:
        outlines = [outline * (room / (high[1] - low[1])) for outline in outlines]
        low, high = outlines[0].min(axis=0), outlines[0].max(axis=0)
    lowest = np.array([margin, top]) - low  # `margin` pixels on every side, and `top` free rows above
    highest = image_size - 1.0 - margin - high
    center = rng.uniform(lowest, np.maximum(lowest, highest))  # max: a shrunk shape fits to the ulp
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
        random_colors: Draw each object's hue at random instead of from its class, so only the shape tells the class
            (the same as ``hue_reliability=0``).
        clutter: Number of small muted distractors (blobs, lines) per image, kept off the objects.
        max_instances: Up to this many instances of the one class per image (1..3); smaller when there are more.
        marker_fraction: Share (0..1) of the images that carry the class-coded white marker on the top border; any
            value > 0 also keeps every object below the marker band.
        marker_size: Side of the square marker in pixels; None: 5 px per 64 px of image side. At most
            ``image_size // num_classes - 1``, so the spots of two classes never touch.
        hue_reliability: Share (0..1) of objects drawn in their class hue; the others get a random hue.
        marker_mode: Where a carried marker goes: "same" (the image's class spot), "shuffled" (a wrong class's spot)
            or "absent" (not drawn; the band is still kept clear); the same for the border's tint.
        border_fraction: Share (0..1) of the images framed by a `border_width` border tinted in their class's hue
            (a shortcut of another kind: a colour all around the image, not a spot); any value > 0 also keeps every
            object `border_width` + 2 px off the borders.
        border_width: Width of the border in pixels; None: 2 px per 64 px of image side (at most image_size // 8).
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
        marker_fraction: float = 0.0,
        marker_size: int | None = None,
        hue_reliability: float = 1.0,
        marker_mode: MarkerMode = "same",
        border_fraction: float = 0.0,
        border_width: int | None = None,
    ) -> None:
        _check_options(num_images, image_size, num_classes, seed, clutter, max_instances)
        border_width = max(1, round(_BORDER_PIXELS_PER_64 * image_size / 64)) if border_width is None else border_width
        _check_border_options(image_size, border_fraction, border_width)
        marker_size = default_marker_size(image_size) if marker_size is None else marker_size
        _check_shortcut_options(image_size, num_classes, marker_fraction, marker_size, hue_reliability, marker_mode)
        self.num_images = num_images
        self.image_size = image_size
        self.num_classes = num_classes
        self.seed = seed
        self.random_colors = random_colors
        self.clutter = clutter
        self.max_instances = max_instances
        self.marker_fraction = marker_fraction
        self.marker_size = marker_size
        self.hue_reliability = hue_reliability
        self.marker_mode = marker_mode
        self.border_fraction = border_fraction
        self.border_width = border_width
        self.class_names = list(SHAPE_NAMES[:num_classes])
        # objects start at this row: below the marker band and _CLEARANCE free rows once markers are on
        self._object_top = float(_MARKER_TOP + marker_size + _CLEARANCE) if marker_fraction > 0 else 1.0
        # and this far from every border once tinted borders are on
        self._object_margin = float(border_width + _CLEARANCE) if border_fraction > 0 else 1.0

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} shapes images")
        geometry_rng, color_rng, clutter_rng, hue_rng = (
            self._rng(index, stream) for stream in (_GEOMETRY_STREAM, _COLOR_STREAM, _CLUTTER_STREAM, _HUE_STREAM)
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
            hue = self._object_hue(label, color_rng, hue_rng)
            image[instance_mask > 0] = _rgb(hue, *color_rng.uniform(0.65, 1.0, size=2))
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        marker_class = self._shortcut_class(label, index, _MARKER_STREAM, self.marker_fraction)
        if marker_class is not None:
            x_min, y_min, x_max, y_max = self.marker_box(marker_class).astype(int)
            image[y_min : y_max + 1, x_min : x_max + 1] = _MARKER_VALUE  # after the noise: exactly white
        border_class = self._shortcut_class(label, index, _BORDER_STREAM, self.border_fraction)
        if border_class is not None:
            width = self.border_width
            tint = np.round(self.border_color(border_class)).astype(np.uint8)
            image[:width], image[-width:], image[:, :width], image[:, -width:] = tint, tint, tint, tint
        return RawSample(
            image=image,
            boxes=boxes,
            box_labels=np.full(len(instance_masks), label, np.int64),
            target=label,
            image_id=f"shapes-{self.seed}-{index}",
            mask=mask,
        )

    def id_and_class(self, index: int) -> tuple[str, int]:
        """Sample `index`'s image id and class without drawing it (for choosing samples to explain)."""
        label = int(self._rng(index, _GEOMETRY_STREAM).integers(self.num_classes))  # the first geometry draw
        return f"shapes-{self.seed}-{index}", label

    def marker_box(self, class_index: int) -> np.ndarray:
        """(4,) float32 inclusive xyxy of the marker spot of `class_index`: centred in its column of the top band."""
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"class_index must be in [0, {self.num_classes - 1}], got {class_index}")
        column_start = class_index * self.image_size // self.num_classes
        column_width = (class_index + 1) * self.image_size // self.num_classes - column_start
        x_min = column_start + (column_width - self.marker_size) // 2
        y_min = _MARKER_TOP
        return np.array([x_min, y_min, x_min + self.marker_size - 1, y_min + self.marker_size - 1], np.float32)

    def marker_class(self, index: int) -> int | None:
        """The class whose spot carries the marker in image `index`, or None when that image has no marker."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} shapes images")
        label = int(self._rng(index, _GEOMETRY_STREAM).integers(self.num_classes))  # the first geometry draw
        return self._shortcut_class(label, index, _MARKER_STREAM, self.marker_fraction)

    def border_color(self, class_index: int) -> np.ndarray:
        """(3,) float32 RGB tint of the border of `class_index`: its class hue, exactly (no jitter)."""
        if not 0 <= class_index < self.num_classes:
            raise ValueError(f"class_index must be in [0, {self.num_classes - 1}], got {class_index}")
        return _rgb(class_index / self.num_classes, _BORDER_SATURATION, _BORDER_VALUE)

    def border_class(self, index: int) -> int | None:
        """The class whose tint the border of image `index` carries, or None without a border.

        The same modes as the marker (`marker_mode`): "same" the image's class, "shuffled" a wrong class,
        "absent" none; the images that carry a border are the same in all three.
        """
        label = int(self._rng(index, _GEOMETRY_STREAM).integers(self.num_classes))  # the first geometry draw
        return self._shortcut_class(label, index, _BORDER_STREAM, self.border_fraction)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        """The generator of one stream of sample `index`: independent of every other stream and sample."""
        return np.random.default_rng([self.seed, int(index), stream])

    def _shortcut_class(self, label: int, index: int, stream: int, fraction: float) -> int | None:
        """The class a shortcut (marker or border, each its own stream and share of images) of image `index` with
        class `label` points to, or None. Both draws always happen, so the three modes share which images carry it."""
        if fraction == 0:
            return None
        rng = self._rng(index, stream)
        carries = rng.uniform() < fraction
        wrong_class_offset = int(rng.integers(1, self.num_classes))  # 1..num_classes-1: never the label
        if not carries or self.marker_mode == "absent":
            return None
        return (label + wrong_class_offset) % self.num_classes if self.marker_mode == "shuffled" else label

    def _instance_masks(self, shape: str, rng: np.random.Generator) -> list[np.ndarray]:
        """Masks (H, W) uint8 0/1 of 1..max_instances non-touching instances of `shape`."""
        count = int(rng.integers(1, self.max_instances + 1))
        taken = np.zeros((self.image_size, self.image_size), np.uint8)
        instance_masks = []
        for _ in range(count * _PLACEMENT_TRIES):
            radius = rng.uniform(*_RADIUS_RANGE) * self.image_size / np.sqrt(count)
            candidate = _place_shape(shape, radius, self.image_size, rng, self._object_top, self._object_margin)
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

    def _object_hue(self, label: int, color_rng: np.random.Generator, hue_rng: np.random.Generator) -> float:
        """The class's own hue with jitter, or any hue; one colour draw either way, so the colour stream is shared."""
        draw = color_rng.uniform()
        class_hue = not self.random_colors and hue_rng.uniform() < self.hue_reliability  # always below 1.0
        if not class_hue:
            return draw
        return (label + _HUE_JITTER * (2 * draw - 1)) / self.num_classes % 1.0


def default_marker_size(image_size: int) -> int:
    """5 px at 64 px images, in proportion for other sizes, at least 2 px."""
    return max(2, int(_MARKER_PIXELS_PER_64 * image_size / 64 + 0.5))


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


def _check_border_options(image_size: int, border_fraction: float, border_width: int) -> None:
    """Clear errors for the tinted border: a share in [0, 1], and a width that leaves room for the objects."""
    if not 0.0 <= border_fraction <= 1.0:
        raise ValueError(f"border_fraction must be in [0, 1], got {border_fraction}")
    widest = image_size // 8
    if not 1 <= border_width <= widest:
        raise ValueError(f"border_width must be in [1, {widest}] at {image_size} px, got {border_width}")


def _check_shortcut_options(
    image_size: int,
    num_classes: int,
    marker_fraction: float,
    marker_size: int,
    hue_reliability: float,
    marker_mode: str,
) -> None:
    """Clear errors for the shortcut options; the marker must fit its class's column with a pixel to spare."""
    if not 0.0 <= marker_fraction <= 1.0:
        raise ValueError(f"marker_fraction must be in [0, 1], got {marker_fraction}")
    if not 0.0 <= hue_reliability <= 1.0:
        raise ValueError(f"hue_reliability must be in [0, 1], got {hue_reliability}")
    largest_marker = image_size // num_classes - 1
    if not 1 <= marker_size <= largest_marker:
        raise ValueError(
            f"marker_size must be in [1, {largest_marker}] for {num_classes} classes at {image_size} px, "
            f"got {marker_size}"
        )
    if marker_mode not in MARKER_MODES:
        raise ValueError(f"marker_mode must be one of {MARKER_MODES}, got {marker_mode!r}")


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
        marker_fraction: Share (0..1) of the images of every split that carry the class-coded white marker.
        marker_size: Side of the square marker in pixels; None: 5 px per 64 px of image side.
        hue_reliability: Share (0..1) of objects drawn in their class hue; the others get a random hue.
        test_marker: The test split's shortcut, marker and border alike: "same" as train and val (at the image's
            class spot / in its class tint), "shuffled" (the same images carry it, at a wrong class's spot / in a
            wrong class's tint) or "absent"; nothing else about the test images changes.
        border_fraction: Share (0..1) of the images of every split framed by a border in their class's hue.
        border_width: Width of the border in pixels; None: 2 px per 64 px of image side.
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
        marker_fraction: float = 0.0,
        marker_size: int | None = None,
        hue_reliability: float = 1.0,
        test_marker: MarkerMode = "same",
        border_fraction: float = 0.0,
        border_width: int | None = None,
    ) -> None:
        split_sizes = {"train": train_size, "val": val_size, "test": test_size}
        for split, size in split_sizes.items():
            if size < 0:
                raise ValueError(f"{split}_size must be >= 0, got {size}")
        if seed < 0:  # checked here too: the split seeds derived from it would hide the value given
            raise ValueError(f"seed must be >= 0, got {seed}")
        if test_marker not in MARKER_MODES:  # checked here: the dataset's error would name its own option
            raise ValueError(f"test_marker must be one of {MARKER_MODES}, got {test_marker!r}")
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
                marker_fraction=marker_fraction,
                marker_size=marker_size,
                hue_reliability=hue_reliability,
                marker_mode=test_marker if split == "test" else "same",
                border_fraction=border_fraction,
                border_width=border_width,
            )
            for split in SPLITS
        }

    def dataset(self, split: str) -> SyntheticShapes:
        """The SyntheticShapes dataset of `split`."""
        if split not in self._datasets:
            raise ValueError(f"unknown split {split!r} for ShapesSource; expected one of {SPLITS}")
        return self._datasets[split]
