"""LightningCLI's fit / validate / test / predict over ViTClassifier and ViTDataModule (`agcam fit ...`)."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.cli import LightningCLI

from pipeline.explained import read_lightning_checkpoint
from pipeline.lightning.datamodule import ViTDataModule
from pipeline.lightning.module import ViTClassifier
from pipeline.lightning.summary import WANDB_ID_KEY, RunSummary


class AgcamCLI(LightningCLI):
    """Links what model and data share, and lets `fit --ckpt_path` go on in the checkpoint's W&B run."""

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

    def before_validate(self) -> None:
        self.datamodule.index("validate")

    def before_test(self) -> None:
        self.datamodule.index("test")

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit" or self.resumed_wandb_id is None:
            return  # validate/test/predict from a checkpoint log to a run of their own
        logger = self.config[self.subcommand].trainer.logger
        if str(getattr(logger, "class_path", "")).endswith("WandbLogger") and logger.init_args.get("id") is None:
            logger.init_args["id"] = self.resumed_wandb_id
            logger.init_args["resume"] = "allow"


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
