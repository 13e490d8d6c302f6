"""Models behind a wrapper: see through those that keep whole parameters, gather FSDP2 shards one block at a time.

`torch.distributed.fsdp.fully_shard` keeps on each process a shard of every parameter (DTensors) and puts a
module's whole parameters in place only while FSDP runs that module's forward. The explainers run the blocks'
sub-modules themselves, so `ParameterGather` does what FSDP's forward would: it gathers a module's parameters
(`FSDPModule.unshard`) for that module's own step and releases them (`reshard`) when the next one starts. The
backward passes need them again: saved-tensor hooks note which module was gathered when autograd saved a
tensor and gather it again when autograd unpacks it. The backward visits the blocks last to first, so one
block's parameters are whole at a time, forward or backward.

Gathering is a collective: every process must make the same explainer calls, with the same number of targets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from pipeline.explain._errors import UnsupportedModelError

try:
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
except ImportError:  # torch built without distributed support: nothing can be sharded

    class FSDPModule:  # type: ignore[no-redef]
        pass

    class FullyShardedDataParallel:  # type: ignore[no-redef]
        pass


# Wrappers whose `.module` / `._orig_mod` is the model itself, with whole parameters: explained through.
SEE_THROUGH = {"DistributedDataParallel": "module", "DataParallel": "module", "OptimizedModule": "_orig_mod"}
SUPPORTED_WRAPPERS = (
    "supported: the plain timm model, fully_shard (FSDP2) on its blocks and root, torch.compile, DataParallel and "
    "DistributedDataParallel"
)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside wrappers that keep its parameters whole; a one-line refusal for those that do not."""
    while type(model).__name__ in SEE_THROUGH:
        model = getattr(model, SEE_THROUGH[type(model).__name__])
    refuse_wrapper(model, "the model")
    return model


def refuse_wrapper(module: nn.Module, what: str) -> None:
    """Raise UnsupportedModelError if `module` is a wrapper that hides or flattens its parameters."""
    name = type(module).__name__
    if isinstance(module, FullyShardedDataParallel):
        raise UnsupportedModelError(
            f"{what} is wrapped in FullyShardedDataParallel (FSDP1), whose flat parameters the explainers cannot "
            f"gather one block at a time; shard with torch.distributed.fsdp.fully_shard instead ({SUPPORTED_WRAPPERS})."
        )
    if name == "DeepSpeedEngine" or type(module).__module__.startswith("deepspeed"):
        raise UnsupportedModelError(
            f"{what} is wrapped in DeepSpeed's {name}; pass engine.module when its parameters are whole (ZeRO "
            f"stage 0-2) ({SUPPORTED_WRAPPERS})."
        )
    if name in SEE_THROUGH:
        raise UnsupportedModelError(f"{what} is wrapped in {name} inside the model ({SUPPORTED_WRAPPERS}).")


def plain_type(module: object) -> type:
    """The module's own class: fully_shard swaps in a subclass FSDP<Name>(FSDPModule, <Name>)."""
    cls = type(module)
    if isinstance(module, FSDPModule):
        return next(base for base in cls.__mro__[1:] if not issubclass(base, FSDPModule))
    return cls


class ParameterGather:
    """Whole parameters for one FSDP2 module at a time: the root's (embedding, readout) or one block's.

    Whether the model is sharded is looked up on each call: Lightning shards it in `configure_model`, after the
    callbacks have built their explainers.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[nn.Module]) -> None:
        self.model = model
        self.blocks = blocks
        self.current: FSDPModule | None = None  # the module whose parameters are whole now

    @property
    def root(self) -> FSDPModule | None:
        return self.model if isinstance(self.model, FSDPModule) else None

    @property
    def sharded(self) -> bool:
        return self.root is not None or any(isinstance(block, FSDPModule) for block in self.blocks)

    def check(self) -> None:
        """Raise UnsupportedModelError for a module sharded on its own other than a block or the root."""
        allowed = {id(self.model), *(id(block) for block in self.blocks)}
        for name, module in self.model.named_modules():
            if isinstance(module, FSDPModule) and id(module) not in allowed:
                raise UnsupportedModelError(
                    f"{name} ({plain_type(module).__name__}) is sharded on its own; the explainers gather "
                    "parameters per block and for the root, so apply fully_shard to the blocks and the root only."
                )

    def owner(self, index: int | None) -> FSDPModule | None:
        """The FSDP module holding block `index`'s parameters (the root's for None): itself, else the root."""
        module = None if index is None else self.blocks[index]
        return module if isinstance(module, FSDPModule) else self.root

    def switch(self, owner: FSDPModule | None) -> None:
        """Release the parameters gathered now and gather `owner`'s (nothing for None)."""
        if owner is self.current:
            return
        if self.current is not None:
            self.current.reshard()
        self.current = owner
        if owner is not None:
            owner.unshard()

    @contextmanager
    def gathering(self) -> Iterator[None]:
        """The root's parameters whole inside, blocks gathered by `Family.run_blocks`, all released on exit."""
        if not self.sharded:
            yield
            return
        self.check()

        def pack(tensor: torch.Tensor) -> tuple[FSDPModule | None, torch.Tensor]:
            return self.current, tensor

        def unpack(packed: tuple[FSDPModule | None, torch.Tensor]) -> torch.Tensor:
            owner, tensor = packed
            if owner is not None:  # saved while `owner` was gathered: it may hold its parameters
                self.switch(owner)
            return tensor

        self.switch(self.root)
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                yield
        finally:
            self.switch(None)
