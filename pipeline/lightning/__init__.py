"""Everything that imports Lightning: the LightningModule, the data module, the callbacks, the panel and the CLI."""

from pipeline.lightning.checkpoint_io import AtomicCheckpointIO
from pipeline.lightning.datamodule import ViTDataModule
from pipeline.lightning.export import ExportExplained
from pipeline.lightning.localization import LocalizationCallback
from pipeline.lightning.module import ViTClassifier
from pipeline.lightning.preemption import Preemption
from pipeline.lightning.summary import RunSummary
from pipeline.lightning.watch import LocalizationWatch

__all__ = [
    "AtomicCheckpointIO",
    "ExportExplained",
    "LocalizationCallback",
    "LocalizationWatch",
    "Preemption",
    "RunSummary",
    "ViTClassifier",
    "ViTDataModule",
]
