"""Writers of small, real dataset fixtures in each format's on-disk layout, returning what they wrote.

Images are real encoded files (JPEG/PNG) with each object drawn as a filled rectangle where its box says;
annotations are written in the real formats (PASCAL XML laid out like the distributed files, TXT tables, CSV, JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# A Pascal VOC annotation exactly as distributed (copied from the real sample, so the tests do not need it on disk).
# Its <filename> names another image: readers must key images by the annotation's file stem.
VOC_SAMPLE_ID = "000001"
VOC_SAMPLE_XML = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>000002.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t\t<flickrid>329145082</flickrid>
\t</source>
\t<owner>
\t\t<flickrid>hiromori2</flickrid>
\t\t<name>Hiroyuki Mori</name>
\t</owner>
\t<size>
\t\t<width>335</width>
\t\t<height>500</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>train</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>139</xmin>
\t\t\t<ymin>200</ymin>
\t\t\t<xmax>207</xmax>
\t\t\t<ymax>301</ymax>
\t\t</bndbox>
\t</object>
</annotation>
"""

VOC_CLASS_INDEX = {"dog": 11, "horse": 12, "person": 14, "sofa": 17, "train": 18, "bottle": 4}
IMAGENET_SYNSETS = (
    ("n01440764", "tench, Tinca tinca"),
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
    ("n01491361", "tiger shark, Galeocerdo cuvieri"),
    ("n01494475", "hammerhead, hammerhead shark"),
)
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
# Category ids out of order and with gaps: the reader maps them to 0, 1, 2 in increasing id order.
COCO_CATEGORIES = ({"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 12, "name": "bird"})
COCO_CLASS_INDEX = {3: 0, 7: 1, 12: 2}

_BACKGROUND = (90, 110, 130)
_OBJECT_COLORS = ((230, 40, 40), (40, 200, 60), (50, 70, 230), (240, 220, 30), (200, 40, 220))


@dataclass(frozen=True)
class FixtureObject:
    """One annotated object: its class index and its box as the reader must return it (xyxy pixels)."""

    label: int
    box: tuple[float, float, float, float]
    difficult: bool = False


@dataclass(frozen=True)
class FixtureSample:
    """What the fixture wrote for one image."""

    split: str
    size: tuple[int, int]  # (width, height)
    objects: list[FixtureObject] = field(default_factory=list)
    label: int | None = None  # single-label formats


def write_image(path: Path, size: tuple[int, int], boxes: list[tuple[float, float, float, float]]) -> Path:
    """A real JPEG/PNG (by suffix) of the given size with each box drawn as a filled rectangle."""
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    for index, box in enumerate(boxes):
        draw.rectangle([round(v) for v in box], fill=_OBJECT_COLORS[index % len(_OBJECT_COLORS)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **({"quality": 92} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return path


Number = float | str  # a value as an annotation file writes it; text is written verbatim (e.g. "inf", "twenty")


def xml_number(value: Number) -> str:
    """How a PASCAL XML writes a number: integers without a point, other floats exactly (repr), text as it is."""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))  # shortest exact form; "inf", "-inf" and "nan" for the non-finite


def voc_xml(
    filename: str,
    size: tuple[Number, Number],
    objects: list[tuple[str, tuple[Number, Number, Number, Number], bool]],
    folder: str = "VOC2012",
) -> str:
    """A PASCAL-style annotation laid out like the distributed files; objects are (name, xyxy box, difficult)."""
    width, height = (xml_number(side) for side in size)
    object_xml = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>{int(difficult)}</difficult>\n\t\t<bndbox>\n"
        + "".join(
            f"\t\t\t<{tag}>{xml_number(value)}</{tag}>\n" for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box)
        )
        + "\t\t</bndbox>\n\t</object>\n"
        for name, box, difficult in objects
    )
    return (
        f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
        "\t<source>\n\t\t<database>The VOC2012 Database</database>\n\t\t<annotation>PASCAL VOC2012</annotation>\n"
        "\t\t<image>flickr</image>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{object_xml}</annotation>\n"
    )


# VOC images: id -> (split, size, objects as (name, box in the file's 1-based pixels, difficult)).
_VOC_IMAGES = {
    # a difficult object first: when it is left out, the horse is still object 2 in the mask file but box 0
    "2008_000008": ("train", (96, 72), [("person", (64, 4, 90, 40), True), ("horse", (10, 12, 60, 66), False)]),
    "2008_000015": ("val", (80, 64), [("bottle", (5, 5, 20, 50), False)]),
    "2008_000019": (
        "val",
        (100, 80),
        [("dog", (4, 10, 40, 70), False), ("dog", (50, 30, 90, 75), False), ("person", (60, 2, 98, 20), False)],
    ),
    "2008_000023": ("val", (64, 48), [("person", (8, 6, 30, 40), True)]),  # only a difficult object
}
VOC_MASKED_IDS = ("2008_000008", "2008_000019")  # listed in ImageSets/Segmentation, with SegmentationObject PNGs
_VOC_MASK_BORDER = 255


def _voc_mask(size: tuple[int, int], boxes: list[tuple[float, float, float, float]]) -> Image.Image:
    """A SegmentationObject-style palette PNG: object i (1-based, XML order) fills its box, outlined in 255."""
    mask = Image.new("P", size, 0)
    mask.putpalette([0, 0, 0] + [128, 0, 0] * 254 + [224, 224, 192])
    draw = ImageDraw.Draw(mask)
    for object_id, (xmin, ymin, xmax, ymax) in enumerate(boxes, start=1):
        draw.rectangle([xmin - 1, ymin - 1, xmax - 1, ymax - 1], fill=object_id, outline=_VOC_MASK_BORDER)
    return mask


def write_voc(root: Path) -> dict[str, FixtureSample]:
    """A VOC2012 folder: 5 images over train/val, one the real sample annotation, masks for two of them."""
    samples = {VOC_SAMPLE_ID: FixtureSample("train", (335, 500), [FixtureObject(18, (139, 200, 207, 301))])}
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / f"{VOC_SAMPLE_ID}.xml").write_text(VOC_SAMPLE_XML)
    write_image(root / "JPEGImages" / f"{VOC_SAMPLE_ID}.jpg", (335, 500), [(138, 199, 206, 300)])
    for image_id, (split, size, objects) in _VOC_IMAGES.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", size, objects))
        boxes = [box for _, box, _ in objects]
        write_image(root / "JPEGImages" / f"{image_id}.jpg", size, [tuple(v - 1 for v in box) for box in boxes])
        if image_id in VOC_MASKED_IDS:
            (root / "SegmentationObject").mkdir(exist_ok=True)
            _voc_mask(size, boxes).save(root / "SegmentationObject" / f"{image_id}.png")
        fixture_objects = [FixtureObject(VOC_CLASS_INDEX[name], box, difficult) for name, box, difficult in objects]
        samples[image_id] = FixtureSample(split, size, fixture_objects)
    for image_sets, ids in (("Main", list(samples)), ("Segmentation", list(VOC_MASKED_IDS))):
        (root / "ImageSets" / image_sets).mkdir(parents=True)
        for split in ("train", "val"):
            listed = [image_id for image_id in ids if samples[image_id].split == split]
            (root / "ImageSets" / image_sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in listed))
    return samples


# ImageNet val images: name -> (size, wnid index, boxes).
_IMAGENET_VAL = {
    "ILSVRC2012_val_00000001": ((80, 60), 1, [(10, 8, 50, 40)]),
    "ILSVRC2012_val_00000002": ((96, 72), 3, [(4, 6, 30, 40), (36, 20, 90, 70)]),
    "ILSVRC2012_val_00000003": ((64, 64), 0, [(0, 0, 63, 63)]),
}
_IMAGENET_TRAIN = {0: 2, 1: 2, 2: 1}  # class index -> image count
IMAGENET_DIRS = {
    "flat": {"train": "train", "val": "val", "xml": "Annotations/CLS-LOC/val"},
    "ilsvrc": {
        "train": "ILSVRC/Data/CLS-LOC/train",
        "val": "ILSVRC/Data/CLS-LOC/val",
        "xml": "ILSVRC/Annotations/CLS-LOC/val",
    },
}


def write_imagenet(root: Path, layout: str = "flat", xml: bool = True, csv: bool = True) -> dict[str, FixtureSample]:
    """An ILSVRC 2012 folder (`layout` "flat" or "ilsvrc") with train class folders and val boxes in XML and/or CSV."""
    dirs = IMAGENET_DIRS[layout]
    root.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} {names}\n" for wnid, names in IMAGENET_SYNSETS))
    samples = {}
    for label, count in _IMAGENET_TRAIN.items():
        wnid = IMAGENET_SYNSETS[label][0]
        for number in range(1, count + 1):
            image_id = f"{wnid}_{number}"
            write_image(root / dirs["train"] / wnid / f"{image_id}.JPEG", (48, 40), [(8, 8, 30, 30)])
            samples[image_id] = FixtureSample("train", (48, 40), label=label)
    csv_rows = ["ImageId,PredictionString"]
    for image_id, (size, label, boxes) in _IMAGENET_VAL.items():
        wnid = IMAGENET_SYNSETS[label][0]
        write_image(root / dirs["val"] / f"{image_id}.JPEG", size, boxes)
        if xml:
            xml_path = root / dirs["xml"] / f"{image_id}.xml"
            xml_path.parent.mkdir(parents=True, exist_ok=True)
            xml_path.write_text(voc_xml(image_id, size, [(wnid, box, False) for box in boxes], folder="val"))
        csv_rows.append(f"{image_id}," + "".join(f"{wnid} {' '.join(str(v) for v in box)} " for box in boxes))
        samples[image_id] = FixtureSample("val", size, [FixtureObject(label, box) for box in boxes], label)
    if csv:
        (root / "LOC_val_solution.csv").write_text("\n".join(csv_rows) + "\n")
    return samples


# CUB images: image id -> (class id, is_train, size, box as x y width height).
_CUB_IMAGES = {
    1: (1, 1, (80, 60), (10.0, 8.5, 40.0, 30.25)),
    2: (1, 0, (72, 72), (5.5, 5.5, 50.0, 60.0)),
    3: (2, 1, (96, 64), (20.0, 10.0, 70.0, 44.0)),
    4: (2, 0, (64, 80), (0.0, 12.0, 63.0, 40.5)),
    5: (3, 1, (80, 60), (30.0, 20.0, 25.0, 25.0)),
    6: (3, 0, (60, 60), (12.0, 14.0, 30.0, 30.0)),
}
CUB_MASK_FRINGE = 102  # gray level drawn around each bird: below the reader's threshold, so background


def cub_image_path(image_id: int) -> str:
    """images.txt's relative path of a fixture image."""
    class_dir = CUB_CLASSES[_CUB_IMAGES[image_id][0] - 1]
    return f"{class_dir}/{class_dir.split('.')[1]}_{image_id:04d}_{100 + image_id}.jpg"


def write_cub(root: Path) -> dict[str, FixtureSample]:
    """A CUB_200_2011 folder: 3 classes, 6 images (3 train, 3 test), float boxes, segmentation PNGs."""
    root.mkdir(parents=True)
    tables = {
        name: [] for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")
    }
    tables["classes.txt"] = [f"{class_id} {name}" for class_id, name in enumerate(CUB_CLASSES, start=1)]
    samples = {}
    for image_id, (class_id, is_train, size, (x, y, width, height)) in _CUB_IMAGES.items():
        relative_path = cub_image_path(image_id)
        box = (x, y, x + width, y + height)
        write_image(root / "images" / relative_path, size, [box])
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).rectangle([x, y, x + width, y + height], fill=255, outline=CUB_MASK_FRINGE, width=2)
        (root / "segmentations" / relative_path).parent.mkdir(parents=True, exist_ok=True)
        mask.save((root / "segmentations" / relative_path).with_suffix(".png"))
        tables["images.txt"].append(f"{image_id} {relative_path}")
        tables["image_class_labels.txt"].append(f"{image_id} {class_id}")
        tables["train_test_split.txt"].append(f"{image_id} {is_train}")
        tables["bounding_boxes.txt"].append(f"{image_id} {x} {y} {width} {height}")
        split = "train" if is_train else "test"
        samples[Path(relative_path).stem] = FixtureSample(split, size, [FixtureObject(class_id - 1, box)], class_id - 1)
    for name, lines in tables.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return samples


# COCO images: file name -> (split, size, annotations as (category id, bbox x y width height)).
_COCO_IMAGES = {
    "cat_and_dog.jpg": ("train", (96, 80), [(7, (10, 10, 60, 50)), (3, (70, 5, 20, 20))]),
    "bird.jpg": ("train", (64, 64), [(12, (8, 8, 40, 30))]),
    "two_dogs.jpg": ("train", (80, 60), [(3, (2, 2, 30, 30)), (3, (40, 20, 35, 35))]),
    "nested/bird_and_cat.png": ("val", (90, 70), [(12, (5, 5, 70, 50)), (7, (76, 40, 10, 20))]),
    "dog.jpg": ("val", (72, 54), [(3, (20, 10, 30, 30))]),
}


def write_coco(root: Path) -> dict[str, FixtureSample]:
    """An image folder plus annotations/{train,val}.json in COCO format; `label` is the largest box's class."""
    samples, documents = {}, {}
    annotation_id = 100
    for image_number, (file_name, (split, size, objects_written)) in enumerate(_COCO_IMAGES.items(), start=1):
        boxes = [(x, y, x + w, y + h) for _, (x, y, w, h) in objects_written]
        write_image(root / "images" / file_name, size, boxes)
        document = documents.setdefault(split, {"images": [], "annotations": [], "categories": list(COCO_CATEGORIES)})
        document["images"].append({"id": image_number, "file_name": file_name, "width": size[0], "height": size[1]})
        for category_id, bbox in objects_written:
            annotation_id += 1
            document["annotations"].append(
                {
                    "id": annotation_id,
                    "image_id": image_number,
                    "category_id": category_id,
                    "bbox": list(bbox),
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
        objects = [FixtureObject(COCO_CLASS_INDEX[category], box) for (category, _), box in zip(objects_written, boxes)]
        largest = max(objects, key=lambda obj: (obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1]))
        samples[file_name] = FixtureSample(split, size, objects, largest.label)
    (root / "annotations").mkdir()
    for split, document in documents.items():
        (root / "annotations" / f"{split}.json").write_text(json.dumps(document, indent=1))
    return samples


FOLDER_FILES = ("a.jpg", "sub/b.png", "sub/deeper/c.JPEG", "sub/d.webp")


def write_folder(root: Path) -> list[Path]:
    """A folder of unlabelled images in nested folders (plus a text file to ignore); returns the image paths."""
    paths = [write_image(root / name, (40 + 4 * i, 32), [(4, 4, 20, 20)]) for i, name in enumerate(FOLDER_FILES)]
    (root / "sub" / "notes.txt").write_text("not an image\n")
    return sorted(paths)


def box_array(objects: list[FixtureObject]) -> np.ndarray:
    """(n, 4) float32 boxes of `objects`, the reader's dtype."""
    return np.array([obj.box for obj in objects], np.float32).reshape(-1, 4)


# Class folders: (split, class, file name, size, boxes xyxy as the side file states them, category as written).
# Sizes are non-square; extensions vary in case; the fox image in val has no side-file row (unboxed).
CLASS_FOLDER_CLASSES = ("cat", "dog", "fox")
CLASS_FOLDER_IMAGES = (
    ("train", "cat", "c1.jpg", (64, 40), [(4, 4, 30, 30)], ["cat"]),
    ("train", "cat", "sub/c2.JPG", (50, 70), [], []),
    ("train", "dog", "d1.png", (72, 48), [(10, 5, 40.5, 25)], [1]),
    ("train", "fox", "f1.jpeg", (40, 60), [], []),
    ("val", "cat", "c3.jpg", (80, 50), [(10, 5, 40.5, 25), (50, 10, 70, 40)], [0, None]),
    ("val", "dog", "d2.PNG", (60, 90), [(0, 30, 59, 89)], ["dog"]),
    ("val", "fox", "f2.jpg", (56, 44), [], []),
)


def write_class_folders(root: Path, box_format: str | None = "jsonl") -> dict[str, FixtureSample]:
    """train/<class>/ and val/<class>/ images, boxes in each split's metadata.jsonl ("jsonl"), boxes.csv ("csv")
    or none (None), plus a hidden image and a text file that readers must ignore. Keys are "<split>/<image id>"."""
    samples = {}
    rows: dict[str, list[str]] = {}
    for split, class_name, file_name, size, boxes, categories in CLASS_FOLDER_IMAGES:
        label = CLASS_FOLDER_CLASSES.index(class_name)
        image_id = f"{class_name}/{file_name}"
        write_image(root / split / image_id, size, boxes)
        samples[f"{split}/{image_id}"] = FixtureSample(split, size, [FixtureObject(label, box) for box in boxes], label)
        lines = rows.setdefault(split, [])
        if box_format == "jsonl" and (boxes or class_name == "fox" and split == "train"):  # train fox: empty objects
            bbox = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes]
            objects = {"bbox": bbox, "categories": categories} if boxes else {}
            lines.append(json.dumps({"file_name": image_id, "objects": objects}))
        elif box_format == "csv":
            for box, category in zip(boxes, categories):
                lines.append(",".join([image_id, *(f"{v:g}" for v in box), "" if category is None else str(category)]))
    for split, lines in rows.items():
        (root / split / "cat" / ".hidden.jpg").write_bytes(b"not read")
        (root / split / "notes.txt").write_text("not an image\n")
        if box_format == "jsonl":
            (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        elif box_format == "csv":
            (root / split / "boxes.csv").write_text("\n".join(["file_name,xmin,ymin,xmax,ymax,label", *lines]) + "\n")
    return samples


def write_class_tree(
    root: Path, classes: int = 4, per_class: int = 4, splits: tuple[str, ...] = ("train", "val"), boxed: bool = True
) -> None:
    """A class-ordered tree root/<split>/class_<k>/<n>.jpg of small non-square JPEGs, each with one drawn box, and
    (with `boxed`) each split's metadata.jsonl giving it as [x, y, w, h] with the class index as its category."""
    for split in splits:
        rows = []
        for label in range(classes):
            for number in range(per_class):
                width, height = 40 + 4 * number, 30 + 2 * label
                box = (4 + number, 3 + label, 24 + number, 20 + label)
                file_name = f"class_{label}/{number:02d}.jpg"
                write_image(root / split / file_name, (width, height), [box])
                bbox = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
                rows.append(json.dumps({"file_name": file_name, "objects": {"bbox": [bbox], "categories": [label]}}))
        if boxed:
            (root / split / "metadata.jsonl").write_text("\n".join(rows) + "\n")


HF_CLASSES = ["apple", "pear", "plum"]


def write_hf(root, parquet=False, image="image", label="label", objects="objects", val_name="validation"):
    """A Hugging Face DatasetDict (save_to_disk, or parquet files): two splits of 6 small non-square images, rows 0
    and 1 boxed ([x, y, w, h]), the rest unboxed."""
    import datasets  # the hf extra

    features = datasets.Features(
        {
            image: datasets.Image(),
            label: datasets.ClassLabel(names=HF_CLASSES),
            objects: datasets.Sequence(
                {"bbox": datasets.Sequence(datasets.Value("float32"), length=4), "category": datasets.Value("int64")}
            ),
        }
    )
    rows = {image: [], label: [], objects: []}
    for index in range(6):
        rows[image].append(Image.new("RGB", (40 + 2 * index, 28), (30 * index, 90, 160)))
        rows[label].append(index % 3)
        boxed = index < 2
        bbox = [[2.0, 3.0, 10.5, 8.0], [20.0, 1.0, 6.0, 6.0]] if index == 0 else [[0.0, 0.0, 4.0, 4.0]]
        rows[objects].append({"bbox": bbox if boxed else [], "category": [index % 3] * len(bbox) if boxed else []})
    dataset = datasets.Dataset.from_dict(rows, features=features)
    splits = datasets.DatasetDict({"train": dataset, val_name: dataset})
    if parquet:
        root.mkdir(parents=True)
        for name, split in splits.items():
            split.to_parquet(str(root / f"{name}.parquet"))
    else:
        splits.save_to_disk(str(root))
    return root
