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


def reliance_verdict(
    accuracy: float, object_erased: float, chance: float, *, high_accuracy: float, retained: float
) -> str | None:
    """The explainer-independent rule: right answers that survive erasing the objects; the reason in words, or None.

    Suspected when accuracy is at least `high_accuracy` and the accuracy with the objects erased keeps at least
    `retained` of the accuracy's margin over `chance` (the best constant answer): (erased - chance) >= retained *
    (accuracy - chance). A model that reads the object falls to about chance when it is erased. The thresholds
    have one default, `LocalizationWatch`'s.
    """
    if accuracy < high_accuracy or accuracy <= chance:
        return None
    share = (object_erased - chance) / (accuracy - chance)
    if share < retained:
        return None
    return (
        f"accuracy {accuracy:.3f} stays {object_erased:.3f} with the objects erased (chance {chance:.3f}: "
        f"{share:.0%} of the margin over chance kept, at least {retained:.0%})"
    )


class LocalizationWatch(pl.Callback):
    """Watch two signals beside accuracy; warn (terminal and `val/shortcut_suspected`) when either says "shortcut".

    Accuracy alone cannot tell a model that looks at the object from one that reads a watermark or a tag. After
    every validation epoch two rules run: `shortcut_verdict` over the history of a localization metric (what the
    explainer shows), and `reliance_verdict` on the object-erased accuracy of the LocalizationCallback's
    `reliance: true` (what the model does: an explainer can be satisfied by a model that hides its shortcut from
    it). Each needs its metrics logged and is skipped otherwise. A suspicion is logged as `val/shortcut_suspected` =
    1 (and `val/shortcut_signal/localization`, `val/shortcut_signal/reliance` per signal) and printed at the end of
    fit, naming the signal(s) that fired. It sees only logged metrics, nothing of the data.

    Args:
        localization: the logged localization metric to watch: the pointing game by default (threshold-free, and
            its chance level is the share of the image inside the boxes, so a low value means "elsewhere").
        accuracy: the logged accuracy metric.
        min_drop: a fall of the localization metric from its best epoch this large, with accuracy not falling.
        low: or a final localization below this ...
        high_accuracy: ... with a final accuracy at least this (for both signals).
        reliance: the prefix of the logged object reliance metrics (`<reliance>/acc`, `/acc_object_erased`,
            `/chance`); None ignores them.
        retained: the reliance signal fires when the object-erased accuracy keeps at least this share of the
            accuracy's margin over chance (`reliance_verdict`).
    """

    def __init__(
        self,
        *,
        localization: str = "val/loc/agcam/pointing_game",
        accuracy: str = "val/acc",
        min_drop: float = 0.1,
        low: float = 0.5,
        high_accuracy: float = 0.9,
        reliance: str | None = "val/reliance",
        retained: float = 0.5,
    ) -> None:
        if not 0.0 < retained <= 1.0:
            raise ValueError(f"retained must be in (0, 1], got {retained}")
        self.localization = localization
        self.accuracy = accuracy
        self.min_drop, self.low, self.high_accuracy = min_drop, low, high_accuracy
        self.reliance, self.retained = reliance, retained
        self.history: list[tuple[float, float]] = []
        self.signals: dict[str, str | None] = {"localization": None, "reliance": None}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        pair = _finite(metrics, self.accuracy, self.localization)
        if pair is not None:
            self.history.append((pair[0], pair[1]))
            self.signals["localization"] = shortcut_verdict(
                self.history, min_drop=self.min_drop, low=self.low, high_accuracy=self.high_accuracy
            )
        if self.reliance is not None:
            names = (f"{self.reliance}/acc", f"{self.reliance}/acc_object_erased", f"{self.reliance}/chance")
            measured = _finite(metrics, *names)
            if measured is not None:
                self.signals["reliance"] = reliance_verdict(
                    *measured, high_accuracy=self.high_accuracy, retained=self.retained
                )
        if trainer.logger is not None:
            flags = {f"val/shortcut_signal/{name}": float(reason is not None) for name, reason in self.signals.items()}
            flags["val/shortcut_suspected"] = float(self.verdict is not None)
            trainer.logger.log_metrics(flags, trainer.global_step)

    @property
    def verdict(self) -> str | None:
        """The signals that fired, in words ("localization: ...; reliance: ..."), or None."""
        fired = [f"{signal}: {reason}" for signal, reason in self.signals.items() if reason is not None]
        return "; ".join(fired) or None

    def state_dict(self) -> dict[str, Any]:
        """The history and the signals so far, saved in every checkpoint: a resumed run judges the whole run, not
        its tail, and keeps a signal that its next validation cannot re-check (no reliance metrics that epoch)."""
        return {"history": [list(pair) for pair in self.history], "signals": dict(self.signals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [(float(accuracy), float(localization)) for accuracy, localization in state_dict["history"]]
        self.signals.update(state_dict.get("signals", {}))  # checkpoints written before signals were kept: none

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.verdict is not None:
            message = (
                f"Right for the wrong reason? {self.verdict} ({self.accuracy}, {self.localization}, "
                f"{self.reliance}). Look at the heatmap panel and the class atlas: the model may use a shortcut (a "
                "marker, a watermark, the background)."
            )
            warnings.warn(message, UserWarning, stacklevel=1)
            log.warning(message)  # also where warnings are filtered


def _finite(metrics: dict, *names: str) -> tuple[float, ...] | None:
    """The named logged metrics as floats, or None when one is missing or not finite."""
    if not all(name in metrics for name in names):
        return None
    values = tuple(float(metrics[name]) for name in names)
    return values if all(math.isfinite(value) for value in values) else None
