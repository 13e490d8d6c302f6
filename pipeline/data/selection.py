"""Which validation samples to explain or show: a seeded, class-stratified order, fixed for a whole run.

Explaining every image of a large split each epoch is costly, and "the first N batches" of a class-ordered split
(class folders, CUB) covers only its first classes. `class_round_robin` orders samples by taking one of each class in
turn (classes in index order, each class's samples in a seeded shuffle), so any prefix of the order is as balanced
over classes as the split allows and the same on every epoch and every process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_round_robin(classes: Sequence[int | None], seed: int = 0) -> list[int]:
    """Positions of `classes` in class round-robin order: one sample of each class in turn, shuffled within a class.

    Args:
        classes: each sample's class (None: no class, e.g. a multi-label image with no label; served last).
        seed: the shuffle within each class.

    >>> class_round_robin([0, 0, 0, 1, 1, 2], seed=0)  # one of each class, then the next of each
    [2, 4, 5, 0, 3, 1]
    """
    by_class: dict[int | None, list[int]] = {}
    for position, label in enumerate(classes):
        by_class.setdefault(label, []).append(position)
    rng = np.random.default_rng(seed)
    queues = [
        list(rng.permutation(by_class[label]))
        for label in sorted(by_class, key=lambda label: (label is None, label if label is not None else 0))
    ]
    order: list[int] = []
    for turn in range(max((len(queue) for queue in queues), default=0)):
        order.extend(int(queue[turn]) for queue in queues if turn < len(queue))
    return order
