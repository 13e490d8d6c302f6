"""LocalizationWatch: a plain rule over the logged history flags accuracy without localization, and says so."""

import pytest
import pytorch_lightning as pl
import torch

from pipeline.lightning import LocalizationWatch
from pipeline.lightning.watch import shortcut_verdict


@pytest.mark.parametrize(
    "history, suspected",
    [
        ([(0.5, 0.6), (0.9, 0.7), (1.0, 0.75)], None),  # both rise: fine
        ([(0.5, 0.2), (0.99, 0.15)], "below 0.3"),  # right answers, relevance elsewhere: stays low
        ([(0.6, 0.7), (0.8, 0.55), (0.95, 0.45)], "fell from 0.700"),  # falls while accuracy rises
        ([(0.9, 0.7), (0.5, 0.5)], None),  # both fall: a bad model, not a shortcut
        ([(0.5, 0.2)], None),  # low localization, low accuracy: still learning
        ([], None),
    ],
)
def test_the_rule(history, suspected):
    verdict = shortcut_verdict(history, min_drop=0.1, low=0.3, high_accuracy=0.9)
    assert (verdict is None) is (suspected is None)
    assert suspected is None or suspected in verdict


class FakeTrainer:
    sanity_checking = False
    logger = None

    def __init__(self):
        self.callback_metrics = {}


def test_the_watch_reads_the_logged_metrics_and_warns_at_the_end(caplog):
    watch = LocalizationWatch(localization="val/loc/agcam/mass_in_box", low=0.3)
    trainer = FakeTrainer()
    for accuracy, mass in [(0.6, 0.4), (0.97, 0.2)]:
        trainer.callback_metrics = {"val/acc": torch.tensor(accuracy), "val/loc/agcam/mass_in_box": torch.tensor(mass)}
        watch.on_validation_end(trainer, None)
    assert watch.history == [pytest.approx((0.6, 0.4)), pytest.approx((0.97, 0.2))]
    with pytest.warns(UserWarning, match="Right for the wrong reason"):
        watch.on_fit_end(trainer, None)
    (record,) = [r for r in caplog.records if r.name == "pipeline.lightning.watch"]  # logged as well as warned
    assert record.levelname == "WARNING" and "val/loc/agcam/mass_in_box" in record.getMessage()


def test_the_watch_ignores_epochs_without_the_metrics():
    watch = LocalizationWatch()
    trainer = FakeTrainer()
    trainer.callback_metrics = {"val/acc": torch.tensor(1.0)}  # the localization callback skipped this epoch
    watch.on_validation_end(trainer, None)
    assert watch.history == [] and watch.verdict is None
    assert isinstance(watch, pl.Callback)


def test_the_history_survives_a_resume_and_the_fall_it_shows_is_still_reported():
    before = LocalizationWatch(localization="val/loc/agcam/mass_in_box")
    trainer = FakeTrainer()
    trainer.callback_metrics = {"val/acc": torch.tensor(0.8), "val/loc/agcam/mass_in_box": torch.tensor(0.66)}
    before.on_validation_end(trainer, None)
    after = LocalizationWatch(localization="val/loc/agcam/mass_in_box")  # a new process, resumed from a checkpoint
    after.load_state_dict(before.state_dict())
    trainer.callback_metrics = {"val/acc": torch.tensor(0.9), "val/loc/agcam/mass_in_box": torch.tensor(0.536)}
    after.on_validation_end(trainer, None)
    assert after.verdict is not None and "fell from 0.660 (epoch 0) to 0.536" in after.verdict
