"""The `agcam` command: LightningCLI's fit / validate / test / predict over ViTClassifier and ViTDataModule, and the
export / explain / evaluate commands of pipeline.commands."""

from __future__ import annotations

import sys

import torch
from pytorch_lightning.cli import LightningCLI

from pipeline.commands import COMMANDS, run_command
from pipeline.data.datamodule import ViTDataModule
from pipeline.model import ViTClassifier
from pipeline.summary import WANDB_ID_KEY, RunSummary


class AgcamCLI(LightningCLI):
    """Links what model and data share, and lets `fit --ckpt_path` go on in the checkpoint's W&B run."""

    def add_arguments_to_parser(self, parser) -> None:
        for shared in ("num_classes", "multi_label", "class_names"):
            parser.link_arguments(f"data.{shared}", f"model.{shared}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit":
            return  # validate/test/predict from a checkpoint log to a run of their own
        config = self.config[self.subcommand]
        logger, ckpt_path = config.trainer.logger, config.get("ckpt_path")
        if not ckpt_path or not str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
            return
        if logger.init_args.get("id") is None:
            run_id = torch.load(ckpt_path, map_location="cpu", weights_only=True).get(WANDB_ID_KEY)
            if run_id is not None:
                logger.init_args["id"] = run_id
                logger.init_args["resume"] = "allow"


def main(args: list[str] | None = None) -> None:
    """Entry point of `agcam` and `python -m pipeline`; tests call it with an argument list."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        exit_code = run_command(argv)
        if exit_code:
            raise SystemExit(exit_code)
        return
    AgcamCLI(
        ViTClassifier,
        ViTDataModule,
        args=args,
        trainer_defaults={"callbacks": [RunSummary()]},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": f"Explained checkpoints: agcam {{{','.join(COMMANDS)}}} --help"},
    )
