"""AG-CAM the authors' way, for any timm family, written independently of pipeline.explain.

The model runs its own forward (timm's code, unfused attention), one image at a time. A forward pre-hook detaches
the input of every block's attention module, as the reference code's `x = x.detach()`. Every attention softmax
is intercepted by a TorchFunctionMode: its input is the score matrix S exactly as timm computed it (rotary
embedding and relative position bias included) and its output A is swapped for a detached leaf, whose gradient
after one full backward of the target logit is dy/dA. For block attention the swap changes nothing (its input is
already detached); for an attention-pool probe it holds the probe's attention fixed while gradient flows through
its values, which is how the explainers define the 'map' readout.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

SOFTMAXES = (torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax)


class AttentionCapture(TorchFunctionMode):
    """Record (scores, probs) of every 4-D softmax; with `as_leaves` the probs returned are fresh leaves."""

    def __init__(self, as_leaves: bool = True) -> None:
        super().__init__()
        self.as_leaves = as_leaves
        self.scores: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in SOFTMAXES and isinstance(out, torch.Tensor) and out.ndim == 4:
            if self.as_leaves:
                out = out.detach().requires_grad_()
            self.scores.append(args[0].detach())
            self.probs.append(out)
        return out


@contextmanager
def unfused_attention(model: nn.Module):
    """Every attention module (blocks and probe) on its explicit softmax path; the flags restored on exit."""
    flags = {module: module.fused_attn for module in model.modules() if hasattr(module, "fused_attn")}
    for module in flags:
        module.fused_attn = False
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.fused_attn = flag


def detach_first_input(_module: nn.Module, args: tuple) -> tuple:
    return (args[0].detach(), *args[1:])


@contextmanager
def detached_attention_inputs(model: nn.Module):
    hooks = [
        block.attn.register_forward_pre_hook(lambda module, args: (args[0].detach(), *args[1:]))
        for block in model.blocks
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def capture_attention(
    model: nn.Module, image: torch.Tensor, detach: bool = True
) -> tuple[AttentionCapture, torch.Tensor]:
    """Run timm's own forward on `image` (1, C, H, W) in eval mode; the capture and the logits (1, C)."""
    was_training = model.training
    model.eval()
    try:
        with unfused_attention(model), torch.enable_grad():
            if detach:
                with detached_attention_inputs(model), AttentionCapture() as capture:
                    logits = model(image)
            else:
                with AttentionCapture(as_leaves=False) as capture:
                    logits = model(image)
    finally:
        model.train(was_training)
    expected = len(model.blocks) + (getattr(model, "attn_pool", None) is not None)
    assert len(capture.probs) == expected, f"captured {len(capture.probs)} softmaxes, expected {expected}"
    return capture, logits


def agcam_oracle(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    rows: str = "class",
    row_weights: torch.Tensor | str | None = None,
    full_backward: bool = False,
) -> torch.Tensor:
    """AG-CAM map (P,) for one image (1, C, H, W) and one class, by the authors' recipe.

    Args:
        full_backward: run `logit.backward()` into every parameter's `.grad`, as the authors' code does (what the
            benchmark times), instead of `autograd.grad` to the attention leaves only; `.grad` is cleared after.
        rows: "class": the class token's row only (the paper); "all": every query row (rows the readout does not
            read get zero gradient anyway).
        row_weights: None sums the rows; a (T,) tensor weighs them; "probe" weighs them by the attention-pool
            probe's attention (mean over heads) over the tokens it reads (the last N tokens).
    """
    grid = model.patch_embed.dynamic_feat_size(tuple(image.shape[-2:]))
    patches = grid[0] * grid[1]
    capture, logits = capture_attention(model, image)
    if full_backward:
        model.zero_grad(set_to_none=True)
        logits[0, target].backward()
        grads = [probs.grad for probs in capture.probs]
        model.zero_grad(set_to_none=True)
    else:
        grads = torch.autograd.grad(logits[0, target], capture.probs)
    block_layers = [(s, g) for s, g in zip(capture.scores, grads) if s.shape[-2] > 1]
    probe_layers = [(s, g) for s, g in zip(capture.scores, grads) if s.shape[-2] == 1]
    tokens = block_layers[0][0].shape[-1]
    if isinstance(row_weights, str):
        probe_probs = capture.probs[-1].detach()[0, :, 0].mean(0)  # (N,)
        row_weights = torch.cat([probe_probs.new_zeros(tokens - len(probe_probs)), probe_probs])
    total = torch.zeros(patches, dtype=image.dtype)
    for scores, grad in block_layers:
        terms = grad[0, :, :, -patches:].relu() * scores[0, :, :, -patches:].sigmoid()  # (H, T, P)
        if rows == "class":
            terms = terms[:, :1]
        elif row_weights is not None:
            terms = terms * row_weights[None, :, None]
        total = total + terms.sum(dim=(0, 1))
    for scores, grad in probe_layers:
        total = total + (grad[0, :, 0, -patches:].relu() * scores[0, :, 0, -patches:].sigmoid()).sum(0)
    return total.detach()


def agcam_oracle_batch(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, **options) -> torch.Tensor:
    """`agcam_oracle` image by image: (B, C, H, W), (B,) -> (B, P)."""
    return torch.stack([agcam_oracle(model, image[None], int(cls), **options) for image, cls in zip(images, targets)])


def relative_error(mine: torch.Tensor, reference: torch.Tensor) -> float:
    """max |mine - reference| / max |reference|."""
    return ((mine.double() - reference.double()).abs().max() / reference.double().abs().max()).item()
