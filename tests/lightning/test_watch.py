"""LocalizationWatch: a plain rule over the logged history flags accuracy without localization, and says so."""

import pytest
import pytorch_lightning as pl
import torch

from pipeline.lightning import LocalizationWatch
from pipeline.lightning.watch import reliance_verdict, shortcut_verdict


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


def test_a_reliance_signal_survives_a_resume_into_an_epoch_without_reliance_metrics():
    before = LocalizationWatch()
    trainer = FakeTrainer()
    reliance = {"val/reliance/acc": 0.95, "val/reliance/acc_object_erased": 0.9, "val/reliance/chance": 0.2}
    trainer.callback_metrics = {name: torch.tensor(value) for name, value in reliance.items()}
    before.on_validation_end(trainer, None)
    assert before.signals["reliance"] is not None
    after = LocalizationWatch()
    after.load_state_dict(before.state_dict())
    trainer.callback_metrics = {}  # the resumed run's next validation logged no reliance
    after.on_validation_end(trainer, None)
    assert after.signals == before.signals and after.verdict == before.verdict


@pytest.mark.parametrize(
    "accuracy, erased, chance, fires",
    [
        (1.0, 0.95, 0.17, True),  # right with the objects erased: something else decides
        (1.0, 0.625, 0.25, True),  # exactly half of the margin over chance kept
        (1.0, 0.62, 0.25, False),
        (1.0, 0.2, 0.2, False),  # erased objects: back to chance
        (0.8, 0.8, 0.2, False),  # accuracy below high_accuracy: still learning
        (0.95, 0.95, 0.95, False),  # chance is already this high: nothing to tell
    ],
)
def test_the_reliance_rule(accuracy, erased, chance, fires):
    verdict = reliance_verdict(accuracy, erased, chance, high_accuracy=0.9, retained=0.5)
    assert (verdict is not None) is fires
    assert not fires or f"stays {erased:.3f} with the objects erased" in verdict


def reliance_metrics(accuracy, pointing, erased, chance=0.17):
    return {
        "val/acc": torch.tensor(accuracy),
        "val/loc/agcam/pointing_game": torch.tensor(pointing),
        "val/reliance/acc": torch.tensor(accuracy),
        "val/reliance/acc_object_erased": torch.tensor(erased),
        "val/reliance/chance": torch.tensor(chance),
    }


@pytest.mark.parametrize(
    "pointing, erased, fired",
    [
        (0.9, 0.95, ["reliance"]),  # the map looks right, the decision does not need the object
        (0.1, 0.2, ["localization"]),  # the map is elsewhere, the decision still needs the object
        (0.1, 0.95, ["localization", "reliance"]),
        (0.9, 0.2, []),
    ],
)
def test_the_watch_reads_both_signals_and_says_which_fired(pointing, erased, fired, capsys):
    watch = LocalizationWatch()
    trainer = FakeTrainer()
    trainer.callback_metrics = reliance_metrics(0.99, pointing, erased)
    watch.on_validation_end(trainer, None)
    assert [signal for signal, reason in watch.signals.items() if reason is not None] == fired
    if not fired:
        assert watch.verdict is None
        return
    with pytest.warns(UserWarning, match="Right for the wrong reason") as warned:
        watch.on_fit_end(trainer, None)
    message = str(warned[0].message)
    for signal in ("localization", "reliance"):
        assert (f"{signal}: " in message) is (signal in fired)


def test_the_reliance_signal_alone_needs_no_localization_metric():
    watch = LocalizationWatch(reliance="val/reliance")
    trainer = FakeTrainer()
    metrics = reliance_metrics(1.0, 0.0, 1.0)
    del metrics["val/loc/agcam/pointing_game"]
    trainer.callback_metrics = metrics
    watch.on_validation_end(trainer, None)
    assert watch.history == [] and watch.signals["reliance"] is not None and watch.signals["localization"] is None
    with pytest.raises(ValueError, match=r"retained must be in \(0, 1\]"):
        LocalizationWatch(retained=0.0)
