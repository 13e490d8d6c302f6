"""LightningCLI's fit / validate / test / predict over ViTClassifier and ViTDataModule (`agcam fit ...`).

Every run gets its own folder, decided before anything is built: `<save_dir>/<project>/<W&B run id>` holds its
checkpoints, config.yaml, summary.json and model.agcam, and is the trainer's `default_root_dir`, so Lightning's
SLURM checkpoint (`hpc_ckpt_<n>.ckpt`) lands there too and only a requeue of the same job (the same run id) finds it.
Checkpoints are written atomically through `AtomicCheckpointIO`; `--ckpt_path` is checked (whole, hashed, fitting
the model) before training starts.
"""

from __future__ import annotations

import importlib
import inspect
import os
import secrets
import string
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info

from pipeline.checkpoints import CheckpointError, load_checkpoint_file, mismatched_shapes
from pipeline.files import write_text
from pipeline.lightning.checkpoint_io import AtomicCheckpointIO
from pipeline.lightning.config_origins import architecture_note, carried_over
from pipeline.lightning.datamodule import ViTDataModule
from pipeline.lightning.module import ViTClassifier
from pipeline.lightning.preemption import Preemption
from pipeline.lightning.run import run_folder
from pipeline.lightning.summary import WANDB_ID_KEY, RunSummary

RESUME_KEYS = ("state_dict", "optimizer_states", "loops")  # what `fit --ckpt_path` restores from


class SettingsError(ValueError):
    """A class of the config refused its settings (a ValueError from its constructor): the message names them."""


class RunConfig(SaveConfigCallback):
    """The run's config as config.yaml in its own run folder (atomically), not one file shared by every run."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        write_text(run_folder(trainer) / self.config_filename, self.parser.dump(self.config, skip_none=False))


class AgcamCLI(LightningCLI):
    """Links what model and data share; gives each run its own folder; checks `--ckpt_path` before training. Before
    a run it indexes the data (a bad layout stops it before any folder exists) and names settings carried over from
    an earlier config than the one that chose their class (`pipeline.lightning.config_origins`)."""

    checkpoint_shapes: dict[str, torch.Size] | None = None

    def __init__(self, *args, **kwargs) -> None:
        given = kwargs.get("args")
        self.argv = list(sys.argv[1:] if given is None else given)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for shared in ("num_classes", "multi_label", "class_names"):
            parser.link_arguments(f"data.{shared}", f"model.{shared}", apply_on="instantiate")

    checkpoint_run_id: str | None = None  # the W&B run id `--ckpt_path` was written by

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check `--ckpt_path` (whole, hashed, with what the subcommand needs) before LightningCLI reads
        its hyper-parameters into the config with a bare torch.load; one line names a file that is not."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_dir() and (Path(ckpt_path) / "meta.pt").is_file():
            # sharded (ModelParallelStrategy): shards + meta, read by Lightning's distributed checkpoint loader
            meta = load_checkpoint_file(Path(ckpt_path) / "meta.pt", required=())  # a damaged one: one line
            self.checkpoint_run_id = meta.get(WANDB_ID_KEY)
        elif ckpt_path and ckpt_path not in ("best", "last", "hpc", "registry"):
            required = RESUME_KEYS if subcommand == "fit" else ("state_dict",)
            checkpoint = load_checkpoint_file(ckpt_path, required=required)
            self.checkpoint_shapes = {name: tensor.shape for name, tensor in checkpoint["state_dict"].items()}
            self.checkpoint_run_id = checkpoint.get(WANDB_ID_KEY)

    def before_instantiate_classes(self) -> None:
        self._warn_carried_over()
        config = self._subcommand_config()
        logger = config.trainer.logger
        if self.subcommand != "fit" or not str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
            return  # validate/test/predict from a checkpoint log to a run of their own
        init_args = logger.init_args
        if init_args.get("id") is None:
            resumed_id = self.checkpoint_run_id if config.get("ckpt_path") else None
            init_args["id"] = resumed_id or slurm_run_id() or new_run_id()
            if resumed_id is not None:
                init_args["resume"] = "allow"
        if config.trainer.get("default_root_dir") is None:
            save_dir = init_args.get("save_dir") or init_args.get("dir") or "."
            project = init_args.get("project") or "lightning_logs"
            config.trainer.default_root_dir = str(Path(save_dir) / project / init_args["id"])

    def instantiate_classes(self) -> None:
        """Build the config's classes; a constructor's refusal of a value (guidance_weight, a model timm has not,
        a data option) becomes a `SettingsError` that `agcam` prints as one line."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise SettingsError(str(error)) from error

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: not atomic
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        self._check_checkpoint_fits_model()
        self.datamodule.index("fit")
        hparams = self.model.hparams
        parameters = sum(parameter.numel() for parameter in self.model.model.parameters())
        note = architecture_note(hparams.model_name, hparams.model_kwargs, parameters, hparams.num_classes)
        if note:
            rank_zero_info(note)

    def before_validate(self) -> None:
        self._check_checkpoint_fits_model()
        self.datamodule.index("validate")

    def before_test(self) -> None:
        self._check_checkpoint_fits_model()
        self.datamodule.index("test")

    def before_predict(self) -> None:
        self._check_checkpoint_fits_model()

    def _check_checkpoint_fits_model(self) -> None:
        if self.checkpoint_shapes is None:
            return
        model_shapes = {name: tensor.shape for name, tensor in self.model.state_dict().items()}
        mismatch = mismatched_shapes(self.checkpoint_shapes, model_shapes)
        if mismatch:
            ckpt_path = self.config[self.subcommand].get("ckpt_path")
            raise CheckpointError(ckpt_path, f"was written for another model or config: {mismatch}")

    def _subcommand_config(self) -> Any:
        """The parsed config of this run's subcommand (the whole config when built with run=False)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def _warn_carried_over(self) -> None:
        """Name data-source init_args and model_kwargs set before the config that chose their class."""
        config = self._subcommand_config()
        source_args = getattr(config.data.source, "init_args", None)
        final = {"data": dict(vars(source_args)) if source_args else {}, "model": {"model_kwargs": None}}
        final["model"]["model_kwargs"] = config.model.model_kwargs or None
        defaults = {"data": {}, "model": {"model_kwargs": None}}
        class_path = getattr(config.data.source, "class_path", None)
        if class_path:
            module, _, name = class_path.rpartition(".")
            signature = inspect.signature(getattr(importlib.import_module(module), name))
            defaults["data"] = {key: parameter.default for key, parameter in signature.parameters.items()}
        given = self.argv[1:] if self.argv[:1] == [self.subcommand] else self.argv
        for message in carried_over(given, final, defaults):
            warnings.warn(message, UserWarning, stacklevel=1)


def new_run_id() -> str:
    """A fresh W&B-style run id: 8 lowercase letters and digits."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def slurm_run_id() -> str | None:
    """Under SLURM, the job's id: a requeued job (same id) finds its run folder, W&B run and hpc checkpoint."""
    if not SLURMEnvironment.detect():
        return None
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array_job else os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else None


def run_lightning_cli(args: list[str] | None = None, epilog: str | None = None) -> AgcamCLI:
    """LightningCLI over ViTClassifier and ViTDataModule, with the run summary.

    Args:
        args: the command line after `agcam`; None reads sys.argv.
        epilog: the help's closing line (`agcam` names its offline commands there).

    Raises:
        SystemExit: 128 + the signal number when SIGTERM, SIGINT or SIGUSR1 stopped the fit (see `Preemption`).
    """
    preemption = Preemption()
    try:
        return AgcamCLI(
            ViTClassifier,
            ViTDataModule,
            args=args,
            trainer_defaults={"callbacks": [RunSummary(), preemption]},
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
            parser_kwargs={"epilog": epilog},
        )
    except (SystemExit, KeyboardInterrupt):
        if preemption.exit_code is not None:
            raise SystemExit(preemption.exit_code) from None
        raise
