"""Callbacks that interrupt a fit at a chosen point, for tests that run `agcam fit` in a subprocess.

Signals and kills are sent by the process to itself (or its process group) at an exact step, so the test knows
which step was interrupted; Lightning and the pipeline see them exactly as they would a scheduler's.
"""

import os
import signal

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    """Send `signal_name` after training batch `step` (global step), to this process or to its whole group."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", process_group: bool = False) -> None:
        self.step, self.signum, self.process_group = step, signal.Signals[signal_name], process_group

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            if self.process_group:
                os.killpg(os.getpgid(0), self.signum)
            else:
                os.kill(os.getpid(), self.signum)


class KillAt(pl.Callback):
    """SIGKILL this process when epoch `epoch` starts (after the previous epoch's checkpoints were written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
