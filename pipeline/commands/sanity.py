"""Sanity checks of the explainers (Adebayo et al., NeurIPS 2018; Quantus' model parameter randomization test).

The model's transformer blocks are re-initialized cumulatively from the top (the last block first, then the one
below it, ... until every block is random); after each step every method explains the same images for the same
classes again, and its maps are compared with the trained model's: the Spearman rank correlation of the raw maps and
the SSIM of the normalized heatmaps, per image, averaged. An explanation that depends on what the model learned
falls towards 0 as the weights are destroyed; one that stays near 1 shows the input (edges, the patch grid), not
the model, and fails.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.functional.regression import spearman_corrcoef

from pipeline.explain import build_explainer
from pipeline.metrics import normalize_heatmaps

FAIL_SPEARMAN = 0.5  # with every block random, a mean rank correlation at least this is a failed check


def model_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The transformer blocks that the check randomizes, or a clear error when the model has none."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise ValueError(
            f"--sanity randomizes the model's transformer blocks (a timm ViT's `blocks`); {type(model).__name__} "
            "has none: give a timm ViT (or a family of pipeline.explain) or leave --sanity out"
        )
    return blocks


def randomize_block(block: nn.Module, seed: int) -> None:
    """Re-initialize every sub-module of `block` that can (`reset_parameters`: linear layers, norms), seeded."""
    resettable = [module for module in block.modules() if hasattr(module, "reset_parameters")]
    if not resettable:
        raise ValueError(
            f"--sanity cannot randomize the block {type(block).__name__}: none of its layers has reset_parameters"
        )
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in resettable:
            module.reset_parameters()


def map_similarity(original: torch.Tensor, randomized: torch.Tensor, image_size: tuple[int, int]) -> dict:
    """Per image: Spearman of the raw (B, gh, gw) maps (0 where a map is constant: no ranking) and SSIM of the
    normalized heatmaps at `image_size` (data range 1). Returns {"spearman": (B,), "ssim": (B,)}."""
    spearman = spearman_corrcoef(randomized.flatten(1).T.double(), original.flatten(1).T.double())
    spearman = torch.nan_to_num(spearman.reshape(-1), nan=0.0)
    randomized_heatmaps, original_heatmaps = (
        normalize_heatmaps(maps, image_size)[:, None].double() for maps in (randomized, original)
    )
    ssim = structural_similarity_index_measure(randomized_heatmaps, original_heatmaps, data_range=1.0, reduction="none")
    return {"spearman": spearman.float(), "ssim": ssim.float()}


def sanity_check(
    model: nn.Module, images: torch.Tensor, methods: Sequence[str], seed: int = 0
) -> dict[str, list[dict[str, float]]]:
    """Cascading randomization from the top block; per method, one row per step.

    Args:
        model: the timm ViT (left as it is: the check randomizes a copy).
        images: (B, C, H, W) inputs; each is explained for the class the trained model predicts.
        methods: keys of pipeline.explain.METHODS.
        seed: the re-initialization's seed.

    Returns:
        {method: [{"randomized_blocks": k, "spearman": mean, "ssim": mean}, ...]} for k = 0 (the trained model:
        both 1) to the number of blocks.
    """
    randomized = copy.deepcopy(model).eval()
    blocks = model_blocks(randomized)
    with torch.no_grad():
        targets = model(images).argmax(dim=-1)
    image_size = (images.shape[-2], images.shape[-1])
    original = {method: build_explainer(method, model)(images, targets) for method in methods}
    rows: dict[str, list[dict[str, float]]] = {method: [] for method in methods}
    for step in range(len(blocks) + 1):
        if step:
            randomize_block(blocks[len(blocks) - step], seed + step)
        for method in methods:
            maps = original[method] if step == 0 else build_explainer(method, randomized)(images, targets)
            similarity = map_similarity(original[method], maps, image_size)
            rows[method].append(
                {"randomized_blocks": step, **{name: value.mean().item() for name, value in similarity.items()}}
            )
    return rows


def format_sanity(rows: dict[str, list[dict[str, float]]]) -> str:
    """A table per score: one line per method, one column per step (top blocks randomized), and the verdict."""
    steps = [row["randomized_blocks"] for row in next(iter(rows.values()))]
    lines = []
    for score in ("spearman", "ssim"):
        header = f"{score.upper():<14}" + "".join(f"{f'top {k}' if k else 'trained':>10}" for k in steps)
        lines.append(header + ("     check" if score == "spearman" else ""))
        for method, method_rows in rows.items():
            cells = "".join(f"{row[score]:>10.3f}" for row in method_rows)
            verdict = ""
            if score == "spearman":
                verdict = "      FAIL" if method_rows[-1]["spearman"] >= FAIL_SPEARMAN else "      pass"
            lines.append(f"{method:<14}{cells}{verdict}")
    return "\n".join(lines)
