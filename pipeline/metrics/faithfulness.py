"""Dataset-level ABPC (area between perturbation curves), summed so DDP gives the single-process result."""

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from pipeline.metrics.functional import abpc


class ABPC(Metric):
    """Mean ABPC and mean MoRF / LeRF curves of explanation heatmaps (docs/method.md, "Faithfulness: ABPC").

    ``compute()`` returns ``abpc`` (mean), ``lerf`` and ``morf`` (mean curves, (steps,)) and ``count``; when
    nothing was added it returns the count only, so a logger never sees NaN or a made-up zero.

    Args:
        steps: number of removal fractions from 0 to 1, both included.
        batch_size: perturbed images per forward pass.
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    abpc_sum: Tensor  # torchmetrics sum states
    lerf_sum: Tensor
    morf_sum: Tensor
    count: Tensor

    def __init__(self, steps: int = 11, batch_size: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps = steps
        self.batch_size = batch_size
        self.add_state("abpc_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("lerf_sum", torch.zeros(steps, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("morf_sum", torch.zeros(steps, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, model: nn.Module, images: Tensor, heatmaps: Tensor, target: Tensor) -> None:
        """Add a batch: see :func:`pipeline.metrics.functional.abpc` for the arguments."""
        curves = abpc(model, images, heatmaps, target, steps=self.steps, batch_size=self.batch_size)
        self.abpc_sum += curves["abpc"].double().sum().to(self.abpc_sum.device)
        self.lerf_sum += curves["lerf"].double().sum(dim=0).to(self.lerf_sum.device)
        self.morf_sum += curves["morf"].double().sum(dim=0).to(self.morf_sum.device)
        self.count += len(images)

    def compute(self) -> dict[str, Tensor]:
        """Mean ABPC and mean curves (float64) with the count; the count only when nothing was added."""
        if self.count == 0:
            return {"count": self.count}
        return {
            "abpc": self.abpc_sum / self.count,
            "lerf": self.lerf_sum / self.count,
            "morf": self.morf_sum / self.count,
            "count": self.count,
        }
