"""LightningCLI's fit / validate / test / predict over ViTClassifier and ViTDataModule (`agcam fit ...`)."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path

import torch
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from pipeline.explained import read_lightning_checkpoint
from pipeline.lightning.config_origins import architecture_note, carried_over
from pipeline.lightning.datamodule import ViTDataModule
from pipeline.lightning.module import ViTClassifier
from pipeline.lightning.summary import WANDB_ID_KEY, RunSummary


class AgcamCLI(LightningCLI):
    """Links what model and data share, and lets `fit --ckpt_path` go on in the checkpoint's W&B run. Before a run
    it indexes the data (a bad layout stops it before any folder exists) and names settings carried over from an
    earlier config than the one that chose their class (`pipeline.lightning.config_origins`)."""

    def __init__(self, *args, **kwargs) -> None:
        given = kwargs.get("args")
        self.argv = list(sys.argv[1:] if given is None else given)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for shared in ("num_classes", "multi_label", "class_names"):
            parser.link_arguments(f"data.{shared}", f"model.{shared}", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then read a `--ckpt_path` file once, with a clear error for a file that is no checkpoint."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self.resumed_wandb_id = None
        if ckpt_path and Path(ckpt_path).is_file():  # not Lightning's "last", "best", ...
            self.resumed_wandb_id = read_lightning_checkpoint(ckpt_path).get(WANDB_ID_KEY)
        elif ckpt_path and (Path(ckpt_path) / "meta.pt").is_file():  # sharded (ModelParallelStrategy): shards + meta
            meta = torch.load(Path(ckpt_path) / "meta.pt", map_location="cpu", weights_only=True)
            self.resumed_wandb_id = meta.get(WANDB_ID_KEY) if isinstance(meta, dict) else None

    def before_fit(self) -> None:
        self.datamodule.index("fit")
        hparams = self.model.hparams
        parameters = sum(parameter.numel() for parameter in self.model.model.parameters())
        note = architecture_note(hparams.model_name, hparams.model_kwargs, parameters, hparams.num_classes)
        if note:
            rank_zero_info(note)

    def before_validate(self) -> None:
        self.datamodule.index("validate")

    def before_test(self) -> None:
        self.datamodule.index("test")

    def before_instantiate_classes(self) -> None:
        self._warn_carried_over()
        if self.subcommand != "fit" or self.resumed_wandb_id is None:
            return  # validate/test/predict from a checkpoint log to a run of their own
        logger = self.config[self.subcommand].trainer.logger
        if str(getattr(logger, "class_path", "")).endswith("WandbLogger") and logger.init_args.get("id") is None:
            logger.init_args["id"] = self.resumed_wandb_id
            logger.init_args["resume"] = "allow"

    def _warn_carried_over(self) -> None:
        """Name data-source init_args and model_kwargs set before the config that chose their class."""
        config = self.config[self.subcommand]
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


def run_lightning_cli(args: list[str] | None = None, epilog: str | None = None) -> AgcamCLI:
    """LightningCLI over ViTClassifier and ViTDataModule, with the run summary.

    Args:
        args: the command line after `agcam`; None reads sys.argv.
        epilog: the help's closing line (`agcam` names its offline commands there).
    """
    return AgcamCLI(
        ViTClassifier,
        ViTDataModule,
        args=args,
        trainer_defaults={"callbacks": [RunSummary()]},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": epilog},
    )
