"""LightningCLI's fit / validate / test / predict over ViTClassifier and ViTDataModule (`agcam fit ...`)."""

from __future__ import annotations

import torch
from pytorch_lightning.cli import LightningCLI

from pipeline.commands.cli import COMMANDS
from pipeline.lightning.datamodule import ViTDataModule
from pipeline.lightning.module import ViTClassifier
from pipeline.lightning.summary import WANDB_ID_KEY, RunSummary


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


def run_lightning_cli(args: list[str] | None = None) -> AgcamCLI:
    """LightningCLI over ViTClassifier and ViTDataModule, with the run summary; `args` None reads sys.argv."""
    return AgcamCLI(
        ViTClassifier,
        ViTDataModule,
        args=args,
        trainer_defaults={"callbacks": [RunSummary()]},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": f"Explained checkpoints: agcam {{{','.join(COMMANDS)}}} --help"},
    )
