"""Everything that imports Lightning: the LightningModule, the data module, the callbacks, the panel and the CLI."""

from pipeline.lightning.datamodule import ViTDataModule
from pipeline.lightning.export import ExportExplained
from pipeline.lightning.localization import LocalizationCallback
from pipeline.lightning.module import ViTClassifier
from pipeline.lightning.summary import RunSummary
from pipeline.lightning.watch import LocalizationWatch

__all__ = [
    "ExportExplained",
    "LocalizationCallback",
    "LocalizationWatch",
    "RunSummary",
    "ViTClassifier",
    "ViTDataModule",
]
