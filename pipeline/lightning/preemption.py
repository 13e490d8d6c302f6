"""Preemption: SIGTERM, SIGINT or SIGUSR1 end a fit with a resumable checkpoint, one line and exit 128 + signal.

Lightning 2.6 stops at the next step boundary on SIGTERM (it raises `SIGTERMException` from its loops) but saves
nothing and exits 0; SIGUSR1 kills the process unless Lightning's SLURM requeue handler runs. Here all three
signals take Lightning's SIGTERM path, and when Lightning stops, the current step is saved as `preempted.ckpt` beside
`last.ckpt` (atomically, through the trainer's CheckpointIO), the W&B run is marked preempting and finished, and one
line gives the checkpoint and the command that resumes it. A signal during validation lets that validation finish
first, so a resumed run never scores half a validation set. Under SLURM with auto-requeue, Lightning keeps SIGUSR1:
it saves `hpc_ckpt_<n>.ckpt` into the trainer's `default_root_dir` (the run folder, see `pipeline.lightning.cli`)
and requeues the job; the later SIGTERM still ends here.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from pipeline.lightning.run import run_folder, wandb_logger

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preemption(pl.Callback):
    """Stop at the next step on SIGTERM/SIGINT/SIGUSR1, save the step in the run folder, say how to resume.

    Args:
        filename: the checkpoint written beside the run's other checkpoints.
    """

    def __init__(self, filename: str = "preempted.ckpt") -> None:
        self.filename = filename
        self.received: int | None = None  # the first stop signal of this fit
        self.checkpoint: Path | None = None
        self._stop_lightning: Callable[[int, FrameType | None], Any] | None = (
            None  # Lightning's SIGTERM handler: it sets the stop flag
        )
        self._trainer: pl.Trainer | None = None
        self._deferred = False

    @property
    def exit_code(self) -> int | None:
        """128 + the signal number (the shell's convention for "ended by signal N"), None if no signal came."""
        return None if self.received is None else 128 + self.received

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)  # Lightning registered its own handlers just before

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._deferred:
            self._deferred = False
            self._stop()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.received is None or not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        checkpoint = trainer.checkpoint_callback
        folder = Path(checkpoint.dirpath) if checkpoint is not None and checkpoint.dirpath else run_folder(trainer)
        self.checkpoint = folder / self.filename
        trainer.save_checkpoint(self.checkpoint, weights_only=False)  # every process takes part; rank 0 writes
        self._finish_wandb(trainer)
        self._report(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_lightning, self._trainer, self._deferred = None, None, False  # Lightning restored the handlers

    def _install(self, trainer: pl.Trainer) -> None:
        if self._stop_lightning is not None or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if not callable(current):
            return  # Lightning installed nothing to stop its loops with
        self._stop_lightning, self._trainer = current, trainer
        for signum in STOP_SIGNALS:
            if signum == signal.SIGUSR1 and signal.getsignal(signum) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                continue  # Lightning's SLURM requeue handler (or the user's own) keeps SIGUSR1
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl+C: stop at once
            return
        self.received = signum
        trainer = self._trainer
        if trainer is not None and trainer.validating and not trainer.sanity_checking:
            self._deferred = True  # stop once this validation is whole
            return
        self._stop()

    def _stop(self) -> None:
        if callable(self._stop_lightning):
            self._stop_lightning(signal.SIGTERM, None)

    def _finish_wandb(self, trainer: pl.Trainer) -> None:
        logger = wandb_logger(trainer)
        if logger is None or getattr(logger, "_experiment", None) is None or trainer.global_rank != 0:
            return
        run = logger.experiment
        run.mark_preempting()
        run.finish(exit_code=self.exit_code)

    @rank_zero_only
    def _report(self, trainer: pl.Trainer) -> None:
        if self.received is None or self.checkpoint is None:
            return  # no signal stopped this fit
        name = signal.Signals(self.received).name
        print(
            f"{name}: stopped at epoch {trainer.current_epoch}, step {trainer.global_step}; saved {self.checkpoint}. "
            f"Resume with: {resume_command(self.checkpoint)}",
            flush=True,
        )


def resume_command(checkpoint: Path, argv: list[str] | None = None) -> str:
    """This process's `agcam fit` command line with `--ckpt_path checkpoint` (instead of any earlier one)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if not arg.startswith("--ckpt_path="):
            kept.append(arg)
    return shlex.join(["agcam", *kept, "--ckpt_path", str(checkpoint)])
