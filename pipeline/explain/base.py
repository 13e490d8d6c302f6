"""The call protocol every explainer shares; a method implements only `_explain`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.explain._family import Family, check_images, patch_grid
from pipeline.explain._forward import ForwardRecorder, run_recorded
from pipeline.explain._registry import family_of
from pipeline.modes import eval_mode


@contextmanager
def explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode, autograd allowed (also under Lightning's inference_mode), float32; all restored on exit."""
    device_type = next(model.parameters()).device.type
    with eval_mode(model), torch.inference_mode(False), torch.autocast(device_type, enabled=False):
        yield


class Explainer(ABC):
    """Explain a timm ViT's predictions as raw patch-level maps.

    `explainer(images)` explains the predicted class; `explainer(images, target)` the classes in
    `target`: (B,) gives (B, gh, gw) maps, (B, K) gives (B, K, gh, gw). The model's parameters,
    their `.grad`, `requires_grad`, train/eval mode and fused-attention setting are left as found.
    """

    def __init__(self, model: nn.Module) -> None:
        self.family: Family = family_of(model)
        self.model = self.family.model  # without a wrapper such as torch.compile's

    def __call__(
        self, images: torch.Tensor, target: torch.Tensor | None = None, recorded: RecordedBatch | None = None
    ) -> torch.Tensor:
        """Maps for `images`; `recorded` (internal fast path): replay from the forward `record_batch` ran on them."""
        check_images(self.model, images)
        recorder = None if recorded is None else recorded.recorder_for(self, images)
        with explaining(self.model), self.family.gather.gathering():
            images = model_inputs(self.model, images)
            if isinstance(target, torch.Tensor) and target.is_inference():
                target = target.clone()
            maps = self._explain(images, target) if recorder is None else self._replay(recorder, target)  # (B, K, P)
        return as_patch_grid(self.model, images, maps, target)

    @abstractmethod
    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Raw maps (B, K, num_patches) for `images` in eval mode; `target` as given to `__call__`."""

    def _replay(self, recorder: ForwardRecorder, target: torch.Tensor | None) -> torch.Tensor:
        """Raw maps (B, K, num_patches) from what `recorder()` kept of a forward (replaying explainers only)."""
        raise TypeError(f"{type(self).__name__} runs its own forward: it has no recorder to replay from")


class ReplayingExplainer(Explainer):
    """An explainer whose forward can be shared: with the model's own prediction, or with other such explainers."""

    @abstractmethod
    def recorder(self) -> ForwardRecorder:
        """A fresh recorder of what this method needs from one forward (see `pipeline.explain._forward`)."""

    @abstractmethod
    def _replay(self, recorder: ForwardRecorder, target: torch.Tensor | None) -> torch.Tensor:
        """Raw maps (B, K, num_patches) from the recorded forward."""

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        recorder = self.recorder()
        run_recorded(self.family, images, [recorder])
        return self._replay(recorder, target)


def model_inputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """`images` as the explainers feed them: out of inference mode (Lightning validates under it, and such tensors
    cannot enter an autograd graph) and in the parameters' dtype."""
    images = images.clone() if images.is_inference() else images
    return images.to(next(model.parameters()).dtype)


@dataclass
class RecordedBatch:
    """The logits of one forward over `images` and, per explainer that can replay, what it recorded."""

    images: torch.Tensor  # the tensor given to `record_batch` (explain it, and only it, from this record)
    logits: torch.Tensor  # (B, C), detached
    recorders: dict[Explainer, ForwardRecorder]  # what each explainer that replays recorded

    def recorder_for(self, explainer: Explainer, images: torch.Tensor) -> ForwardRecorder | None:
        """The explainer's record of exactly these `images`, or None (then it runs its own forward)."""
        return self.recorders.get(explainer) if images is self.images else None


def record_batch(explainers: Sequence[Explainer], images: torch.Tensor) -> RecordedBatch:
    """The model's logits for `images` from one forward that also records what each replaying explainer needs.

    The internal fast path of a validation step that is explained afterwards: `explainer(images, target,
    recorded)` then replays instead of running the model again (the others run their own forward). The forward is
    the explainers' own (eval mode, float32 without autocast, the model's fused attention where a method allows),
    so the maps equal a plain call's and the logits are the model's within float rounding.
    """
    model, family = explainers[0].model, explainers[0].family
    if any(explainer.model is not model for explainer in explainers):
        raise ValueError("record_batch shares one forward: every explainer must explain the same model")
    check_images(model, images)
    recorders: dict[Explainer, ForwardRecorder] = {
        e: e.recorder() for e in explainers if isinstance(e, ReplayingExplainer)
    }
    with explaining(model), family.gather.gathering():
        readout = run_recorded(family, model_inputs(model, images), list(recorders.values()))
    return RecordedBatch(images, readout.logits.detach(), recorders)


def as_patch_grid(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """(B, K, P) maps as (B, K, gh, gw) for a (B, K) target, else (B, gh, gw)."""
    rows, cols = patch_grid(model, images)
    maps = maps.reshape(images.shape[0], -1, rows, cols)
    return maps if target is not None and target.ndim == 2 else maps[:, 0]


def num_targets(target: torch.Tensor | None) -> int:
    """K: how many maps per image a class-agnostic method must return."""
    return target.shape[1] if target is not None and target.ndim == 2 else 1


def read_rows(rollout: torch.Tensor, weights: torch.Tensor, prefix: int) -> torch.Tensor:
    """Patch columns of the rollout rows the readout reads: (..., T, T) -> (..., P).

    `weights` (B, T) are each token's share of the prediction: one-hot on the class token for token readout
    (the rollout's row 0, as in the papers), uniform over the averaged tokens, the probe's attention for 'map'.
    """
    weights = weights.reshape(weights.shape[0], *(1,) * (rollout.ndim - 3), 1, weights.shape[1])
    return (weights @ rollout)[..., 0, prefix:]
