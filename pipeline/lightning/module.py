"""ViTClassifier: a LightningModule holding a plain timm ViT, trained single- or multi-label."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from timm.optim import create_optimizer_v2
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MultilabelAccuracy, MultilabelAveragePrecision

from pipeline.guidance import AUTO, AutoWeight, Guidance, guidance_loss, object_erased_counts
from pipeline.inputs import InputConfig
from pipeline.models import create_vit, model_input_config


class ViTClassifier(pl.LightningModule):
    """Fine-tune (or train from scratch) a timm ViT; the explanation lives in LocalizationCallback.

    Args:
        model_name: timm model name, e.g. "vit_small_patch16_224" or "deit_tiny_patch16_224".
        num_classes: size of the head; linked from the data module in the CLI.
        multi_label: BCE-with-logits over independent classes (Pascal VOC) instead of cross-entropy.
        class_names: names of the classes (linked from the data; stored in checkpoints and explained exports).
        pretrained: load timm's hub weights (downloads; never in the default config).
        weights_path: a local weights file to start from instead of the hub.
        model_kwargs: extra timm constructor arguments (img_size, patch_size, embed_dim, depth, num_heads, ...).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay (norms, biases and embeddings excluded, as timm does).
        warmup_epochs: linear warm-up length in epochs (fractions allowed) before the cosine decay.
        min_lr_ratio: the cosine decays to lr * min_lr_ratio.
        label_smoothing: cross-entropy label smoothing (single-label only).
        layer_decay: layer-wise learning-rate decay factor (e.g. 0.75 for fine-tuning); None turns it off.
        guidance_weight: guided training (`pipeline.guidance`): weight of the loss that makes the model answer from
            the labelled objects; 0 trains on the labels alone; "auto" sets it every step from the training batch's
            accuracy with its objects erased (`pipeline.guidance.AutoWeight`, bounds [1, 100]). The weight used is
            logged as `train/guidance_weight`.
        guidance_method: "context_swap" (each labelled object on another image's context, cross-entropy with its
            label; removes both shortcuts of scripts/shortcut_study.py), "input_gradients" (Ross et al.: the input
            gradient's share outside the boxes) or "agcam" (differentiable AG-CAM; the model can route around it).
        guidance_annotations: the allowed region: the label's "boxes" or its object "masks".
        sharded_param_dtype: under Lightning's ModelParallelStrategy (configs/fsdp.yaml), FSDP2's mixed precision:
            parameters are gathered for forward and backward in this dtype ("bfloat16" or "float16") while the
            shards, optimizer and gradient reduction stay float32; None keeps float32 throughout.
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        num_classes: int = 1000,
        *,
        multi_label: bool = False,
        class_names: list[str] | None = None,
        pretrained: bool = False,
        weights_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        layer_decay: float | None = None,
        guidance_weight: float | str = 0.0,
        guidance_method: Literal["context_swap", "input_gradients", "agcam"] = "context_swap",
        guidance_annotations: Literal["boxes", "masks"] = "boxes",
        sharded_param_dtype: Literal["bfloat16", "float16"] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(
                f"num_classes must be >= 1, got {num_classes}: for unlabelled images (predict on a folder) give "
                "the data source the checkpoint's class_names"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}")
        self.guidance = Guidance(guidance_weight, guidance_method, guidance_annotations)
        if guidance_weight and multi_label:
            raise ValueError("guidance_weight is for single-label data (one labelled class per image); set it to 0")
        self.save_hyperparameters()
        self.model = create_vit(model_name, num_classes, pretrained, weights_path, model_kwargs)
        self.train_accuracy, self.val_accuracy, self.test_accuracy = (self._accuracy() for _ in range(3))
        self.val_map = MultilabelAveragePrecision(num_classes) if multi_label else None
        # Set by a callback that explains the batch (LocalizationCallback) to a forward that returns the logits and
        # records what its explainers need, so they do not run the model again; None: the plain forward.
        self.evaluation_forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.auto_weight = AutoWeight() if guidance_weight == AUTO else None

    @property
    def input_config(self) -> InputConfig:
        """The input the model expects (timm's pretrained config, at the size it was built for)."""
        return model_input_config(self.model)

    def setup(self, stage: str) -> None:
        data_classes = getattr(self.trainer.datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.hparams.num_classes:
            raise ValueError(
                f"The model has num_classes={self.hparams.num_classes} but the data has {data_classes} classes; "
                "let the CLI link them (do not set model.num_classes) or make them equal."
            )

    def configure_model(self) -> None:
        """Under ModelParallelStrategy: FSDP2 (`fully_shard`) on every block, then on the root, over the data-parallel
        mesh, so a process holds its shard plus one block's whole parameters at a time (the explainers gather the
        same way). Other strategies give no device mesh: nothing to do."""
        mesh = self.device_mesh
        if mesh is None or isinstance(self.model, FSDPModule):  # validate/test after fit configure it again
            return
        if mesh["tensor_parallel"].size() != 1:
            raise ValueError(
                f"ModelParallelStrategy with tensor_parallel_size={mesh['tensor_parallel'].size()}: this module "
                "shards data-parallel only; set tensor_parallel_size: 1 and data_parallel_size to the process count"
            )
        if self.guidance.weight:
            raise ValueError(
                "guidance_weight must be 0 under ModelParallelStrategy (FSDP2): guided training is built and tested "
                "for DDP only (input gradients need a double backward through parameters FSDP frees after each "
                "forward, AG-CAM needs them whole); train guided with DDP (configs/ddp.yaml)"
            )
        dtype = self.hparams.get("sharded_param_dtype")
        policy = MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32) if dtype else None
        data_parallel, mp_policy = mesh["data_parallel"], policy or MixedPrecisionPolicy()
        for block in self.model.blocks:
            fully_shard(block, mesh=data_parallel, mp_policy=mp_policy)
        fully_shard(self.model, mesh=data_parallel, mp_policy=mp_policy)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self._loss(logits, batch["target"])
        self.train_accuracy(logits, batch["target"].long())
        batch_size = len(logits)
        if self.guidance.weight:
            weight = self._guidance_weight(batch)
            outside, guided, unguided = guidance_loss(self.model, batch["image"], batch, self.guidance)
            self.log("train/guidance_loss", outside, prog_bar=True, batch_size=max(1, guided))
            self.log_dict(
                {"train/guided_images": float(guided), "train/unguided_images": float(unguided)},
                on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, batch_size=batch_size,
            )  # fmt: skip
            self.log("train/guidance_weight", weight, batch_size=batch_size)
            loss = loss + weight * outside
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/acc", self.train_accuracy, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def _guidance_weight(self, batch: dict) -> float:
        """The fixed weight, or the auto rule's step on this batch's object-erased accuracy (summed over processes)."""
        if self.auto_weight is None:
            return float(self.guidance.weight)
        counts = object_erased_counts(
            self.model, batch["image"], batch, self.guidance.annotations, self.hparams.num_classes
        ).float()
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        right, images, per_class = counts[0], counts[1], counts[2:]
        if images == 0:
            return self.auto_weight.value
        erased_accuracy = float(right / images)
        self.log("train/object_erased_acc", erased_accuracy, batch_size=int(images))
        return self.auto_weight.step(erased_accuracy, float(per_class.max() / images))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.auto_weight is not None:
            checkpoint["guidance_auto_weight"] = self.auto_weight.value

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.auto_weight is not None and "guidance_auto_weight" in checkpoint:
            self.auto_weight.value = float(checkpoint["guidance_auto_weight"])

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "val", self.val_accuracy)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test", self.test_accuracy)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        logits = self(batch["image"])
        probs = logits.sigmoid() if self.hparams.multi_label else logits.softmax(dim=-1)
        return {"image_id": batch["image_id"], "probs": probs, "pred": probs.argmax(dim=-1)}

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp = self.hparams
        optimizer = create_optimizer_v2(
            self.model, opt="adamw", lr=hp.lr, weight_decay=hp.weight_decay, layer_decay=hp.layer_decay
        )
        total_steps = max(1, self.trainer.estimated_stepping_batches)
        steps_per_epoch = total_steps / max(1, self.trainer.max_epochs or 1)
        warmup_steps = min(total_steps - 1, int(hp.warmup_epochs * steps_per_epoch))

        def lr_factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _evaluate(self, batch: dict, stage: str, accuracy: Metric) -> dict[str, torch.Tensor]:
        """Loss and accuracy of a val/test batch; logits go to callbacks (the localization callback uses them)."""
        logits = (self.evaluation_forward or self)(batch["image"])
        batch_size = len(logits)
        self.log(
            f"{stage}/loss", self._loss(logits, batch["target"]), prog_bar=True, sync_dist=True, batch_size=batch_size
        )
        accuracy(logits, batch["target"].long())
        self.log(f"{stage}/acc", accuracy, prog_bar=True, batch_size=batch_size)
        if self.val_map is not None and stage == "val":
            self.val_map(logits, batch["target"].long())
            self.log("val/mAP", self.val_map, batch_size=batch_size)
        return {"logits": logits.detach()}

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)

    def _accuracy(self) -> Metric:
        num_classes = self.hparams.num_classes
        if self.hparams.multi_label:
            return MultilabelAccuracy(num_labels=num_classes)
        return MulticlassAccuracy(num_classes=num_classes, average="micro")
