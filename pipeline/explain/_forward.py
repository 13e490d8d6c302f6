"""One forward through a model family, shared by the explainers that each keep what they need of it.

An explainer's `recorder()` says what it keeps of every block's attention and of the readout; `run_recorded` runs
the model once with any number of recorders and returns the prediction. That is how an explainer makes its own
forward, and how the validation step's forward can also serve the explainers (`base.record_batch`): the logits are
the model's, and each explainer then replays from what it recorded instead of running the model again.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import torch

from pipeline.explain._family import Family, Heads, ReadOut

# How much of the forward autograd records: nothing; the residual stream with the attention inputs detached (the
# attention quantities are constants); or all of it (for a loss on the maps).
GraphMode = Literal["none", "detached", "full"]
GRAPH_ORDER: tuple[GraphMode, ...] = ("none", "detached", "full")


class ForwardRecorder:
    """What one explainer keeps of a forward. The base records nothing and leaves the model's attention as it is."""

    graph: GraphMode = "none"

    def embedded(self, tokens: torch.Tensor) -> None:
        """Keep what the method needs of the tokens (B, T, D) entering the first block."""

    def attend(self, index: int, heads: Heads, attn_input: torch.Tensor) -> torch.Tensor | None:
        """Keep what the method needs of block `index`'s attention of `attn_input` (B, T, D); return the context
        softmax(S) V (B, H, T, d) to use in the forward, or None for the model's own (fused when the model fuses)."""
        return None

    def attend_probe(self, heads: Heads) -> torch.Tensor | None:
        """As `attend`, for the attention-pool probe of a 'map' readout: its context (B, H, 1, d) or None."""
        return None

    def read(self, tokens: torch.Tensor, readout: ReadOut) -> None:
        """Keep what the method needs of the last block's tokens (B, T, D) and of the readout."""


def run_recorded(family: Family, images: torch.Tensor, recorders: Sequence[ForwardRecorder]) -> ReadOut:
    """The model's prediction for `images`, from one forward that shows every recorder each attention and the readout.

    The first recorder that returns a context decides a block's attention; autograd records as much of the forward
    as the most demanding recorder asks (see `GraphMode`).
    """
    graph = max((recorder.graph for recorder in recorders), key=GRAPH_ORDER.index, default="none")
    constants = nullcontext if graph == "full" else torch.no_grad  # the attention inputs and what they give

    def first_context(contexts: list[torch.Tensor | None]) -> torch.Tensor | None:
        return next((context for context in contexts if context is not None), None)

    def probe_attend(heads: Heads) -> torch.Tensor:
        context = first_context([recorder.attend_probe(heads) for recorder in recorders])
        return heads.scores().softmax(dim=-1) @ heads.v if context is None else context

    with torch.no_grad() if graph == "none" else torch.enable_grad():
        with constants():
            tokens, positions = family.embed(images)
        for recorder in recorders:
            recorder.embedded(tokens)

        def attend(index: int, x: torch.Tensor) -> torch.Tensor:
            with constants():
                heads = family.heads(index, x, positions)
            context = first_context([recorder.attend(index, heads, x) for recorder in recorders])
            if context is None:
                with constants():
                    context = heads.context(family.fused(index), family.attention_dropout(index))
            return family.attention_output(index, context, x if graph == "full" else x.detach())

        tokens = family.run_blocks(tokens, attend)
        readout = family.read_out(tokens, probe_attend)
    for recorder in recorders:
        recorder.read(tokens, readout)
    return readout
