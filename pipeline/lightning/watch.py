"""LocalizationWatch: say in words when a model gets right answers while looking at the wrong place."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def shortcut_verdict(
    history: Sequence[tuple[float, float]], *, min_drop: float, low: float, high_accuracy: float
) -> str | None:
    """A plain rule over (accuracy, localization) per validation epoch; the reason in words, or None.

    The thresholds have one default, `LocalizationWatch`'s.

    Suspected when accuracy ends at least `high_accuracy` while localization ends below `low` ("stays low"), or when
    localization fell by at least `min_drop` from its best epoch while accuracy did not fall ("falls").
    """
    if not history:
        return None
    accuracy, localization = history[-1]
    best_epoch = max(range(len(history)), key=lambda epoch: history[epoch][1])
    best_accuracy, best_localization = history[best_epoch]
    if accuracy >= high_accuracy and localization < low:
        return f"accuracy {accuracy:.3f} but localization only {localization:.3f} (below {low})"
    if best_localization - localization >= min_drop and accuracy >= best_accuracy:
        return (
            f"localization fell from {best_localization:.3f} (epoch {best_epoch}) to {localization:.3f} while "
            f"accuracy rose from {best_accuracy:.3f} to {accuracy:.3f}"
        )
    return None


class LocalizationWatch(pl.Callback):
    """Watch a localization metric beside accuracy; warn (terminal and `val/shortcut_suspected`) when they part.

    Accuracy alone cannot tell a model that looks at the object from one that reads a watermark or a tag. After
    every validation epoch the rule of `shortcut_verdict` runs over the logged history; a suspicion is logged as
    `val/shortcut_suspected` = 1 and printed at the end of fit. It sees only logged metrics, nothing of the data.

    Args:
        localization: the logged localization metric to watch: the pointing game by default (threshold-free, and
            its chance level is the share of the image inside the boxes, so a low value means "elsewhere").
        accuracy: the logged accuracy metric.
        min_drop: a fall of the localization metric from its best epoch this large, with accuracy not falling.
        low: or a final localization below this ...
        high_accuracy: ... with a final accuracy at least this.
    """

    def __init__(
        self,
        *,
        localization: str = "val/loc/agcam/pointing_game",
        accuracy: str = "val/acc",
        min_drop: float = 0.1,
        low: float = 0.5,
        high_accuracy: float = 0.9,
    ) -> None:
        self.localization = localization
        self.accuracy = accuracy
        self.min_drop, self.low, self.high_accuracy = min_drop, low, high_accuracy
        self.history: list[tuple[float, float]] = []
        self.verdict: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or self.localization not in metrics or self.accuracy not in metrics:
            return
        pair = (float(metrics[self.accuracy]), float(metrics[self.localization]))
        if not all(math.isfinite(value) for value in pair):
            return
        self.history.append(pair)
        self.verdict = shortcut_verdict(
            self.history, min_drop=self.min_drop, low=self.low, high_accuracy=self.high_accuracy
        )
        if trainer.logger is not None:
            trainer.logger.log_metrics({"val/shortcut_suspected": float(self.verdict is not None)}, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        """The history so far, saved in every checkpoint: a resumed run judges the whole run, not its tail."""
        return {"history": [list(pair) for pair in self.history], "verdict": self.verdict}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [(float(accuracy), float(localization)) for accuracy, localization in state_dict["history"]]
        self.verdict = state_dict["verdict"]

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.verdict is not None:
            message = (
                f"Right for the wrong reason? {self.verdict} ({self.accuracy}, {self.localization}). Look at the "
                "heatmap panel: the model may use a shortcut (a marker, a watermark, the background)."
            )
            warnings.warn(message, UserWarning, stacklevel=1)
            log.warning(message)  # also where warnings are filtered
