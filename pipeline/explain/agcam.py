"""Attention Guided CAM (Leem & Seo, AAAI 2024) at about the cost of one forward pass.

M_c = sum over blocks, heads and readout rows r of ReLU(dy_c / dA[r, patches]) * sigmoid(S[r, patches]), where S
are the pre-softmax attention scores (with the model's rotary embedding and relative position bias), A =
softmax(S), and the input of every attention module is detached, so gradients reach A only through the residual
stream and the MLPs of later blocks.

That detach is what makes this cheap. Tokens exchange information only through attention, and with the
attention input detached no gradient crosses between tokens: the gradient of a logit flows along the tokens the
readout reads, each in its own residual stream, and reaches only their own attention rows.

- Class-token readout (the paper's case, r = 0): after one no-grad forward (timm's fused kernel included) the
  class token alone is replayed through the blocks with its attention rows as autograd leaves; its backward is
  1/T of a full backward and touches no weight gradient. K target classes replay as K copies of the class token.
  The forward can be the validation step's own (`record_batch`): the training callback then pays the replay only.
- Pooled readouts (avg/max/avgmax, or timm's attention-pool probe 'map'): every pooled token's row gets a
  gradient. One forward keeps the residual stream in the graph with each block's attention context
  C = softmax(S) V (from the fused kernel) as a leaf, and S only for the pooled rows over the patch columns; then
  dy/dA[r] = dy/dC[r] V^T (V is a constant of the detached input), for all rows from one activation-only backward.
  For 'map' the probe is one more attention layer whose single query row is the readout: its own row enters the
  map, and its attention over tokens is the readout's weights (gradient reaches the blocks through the probe's
  values, its attention held fixed like the blocks').
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._family import Family, Heads, ReadOut, check_images, resolve_targets
from pipeline.explain._forward import ForwardRecorder, GraphMode, run_recorded
from pipeline.explain.base import ReplayingExplainer, as_patch_grid

RowWeighting = Literal["sum", "readout"]


class AGCAM(ReplayingExplainer):
    """Attention Guided CAM; see the module docstring for how it stays near the one-forward cost floor.

    Args:
        model: a timm ViT, Eva or Beit.
        row_weighting: how the rows of a pooled readout combine. "sum" adds ReLU(dy/dA[r]) * sigmoid(S[r]) over
            the pooled rows r (each row's gradient already carries the row's share of the readout); "readout"
            weighs each row once more by its share: 1/N for average pooling (the same map up to scale), the
            probe's attention for 'map'. Class-token models have one row: both give the paper's map.
    """

    def __init__(self, model: torch.nn.Module, row_weighting: RowWeighting = "sum") -> None:
        super().__init__(model)
        if row_weighting not in ("sum", "readout"):
            raise ValueError(f"row_weighting must be 'sum' or 'readout', got {row_weighting!r}")
        self.row_weighting = row_weighting

    def recorder(self) -> ForwardRecorder:
        if self.family.readout_kind == "token":
            return RowRecorder(self.family, graph="none")
        return ContextRecorder(self.family)

    def _replay(self, recorder: ForwardRecorder, target: torch.Tensor | None) -> torch.Tensor:
        if isinstance(recorder, RowRecorder):
            return self._replayed_maps(recorder, target)
        assert isinstance(recorder, ContextRecorder)
        return self._pooled_maps(recorder, target)

    def differentiable_maps(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """AG-CAM maps whose autograd graph reaches the model's weights, for a loss on the maps (e.g. guidance).

        Same shapes and, in eval mode, the same values as `explainer(images, target)`. The graph runs through the
        scores S and through the attention gradient dy/dA alike: the forward is recorded in the graph, the readout
        tokens are replayed (the detached attention input stays a constant of the replay only) and dy/dA is taken
        with create_graph=True. Unlike a call, this leaves the model's train/eval mode and any autocast as they
        are; in train mode dropout draws its own masks in the replay, so values then differ from the forward's.
        Costs about three forwards plus a double backward. Never touches `.grad`.
        """
        check_images(self.model, images)
        if self.family.gather.sharded:
            raise UnsupportedModelError(
                "differentiable_maps needs the weights whole for a later backward; the model is sharded with "
                "fully_shard (FSDP2), which only the maps of a call (explainer(images)) support."
            )
        if torch.is_inference_mode_enabled():
            raise RuntimeError("differentiable_maps needs autograd: call it outside torch.inference_mode().")
        recorder = RowRecorder(self.family, graph="full")
        run_recorded(self.family, images, [recorder])
        maps = self._replayed_maps(recorder, target)  # (B, K, P)
        rows, cols = self.model.patch_embed.dynamic_feat_size(tuple(images.shape[-2:]))
        if maps.shape[-1] != rows * cols:
            raise ValueError(f"{maps.shape[-1]} patch tokens for a {rows}x{cols} grid: is patch dropout active?")
        return as_patch_grid(self.model, images, maps, target)

    def _replayed_maps(self, record: RowRecorder, target: torch.Tensor | None) -> torch.Tensor:
        """Replay the readout rows of a recorded forward with their attention rows as the gradient's inputs.

        With the forward recorded in the graph (`graph="full"`) the maps keep a graph to the weights.
        """
        family, prefix, rows = self.family, self.family.num_prefix_tokens, self.family.readout_rows
        create_graph = record.graph == "full"
        row_scores, probe_scores, kept = record.row_scores, record.probe_scores, record.kept
        targets = resolve_targets(record.readout.logits.detach(), target)  # (B, K)
        batch, num_targets = targets.shape
        num_rows = record.first_rows.shape[1]

        with torch.enable_grad():
            # One attention row per target copy of each readout token: (B, H, K * R, T), copy-major.
            row_probs = [scores.softmax(dim=-1).repeat(1, 1, num_targets, 1).requires_grad_() for scores in row_scores]
            probe_probs = [s.softmax(dim=-1).repeat_interleave(num_targets, 0).requires_grad_() for s in probe_scores]

            def attend_replay(index: int, _normed: torch.Tensor) -> torch.Tensor:
                context = row_probs[index] @ record.values[index]
                return family.attention_output(index, context, record.row_inputs[index].repeat(1, num_targets, 1))

            copies = family.run_blocks(record.first_rows.repeat(1, num_targets, 1), attend_replay)  # (B, K * R, D)
            replayed = copies.reshape(batch * num_targets, num_rows, -1)  # (B * K, R, D)
            others = kept.repeat_interleave(num_targets, dim=0)  # (B * K, T', D)
            readout_input = torch.cat([others[:, : rows.start], replayed, others[:, rows.start + num_rows :]], dim=1)
            replay_logits = family.read_out(readout_input, lambda heads: probe_probs[0] @ heads.v).logits
            target_logits = replay_logits.gather(1, targets.reshape(-1, 1))
            grads = torch.autograd.grad(target_logits.sum(), row_probs + probe_probs, create_graph=create_graph)

        row_weights = record.readout.weights[:, rows]  # (B, R)
        maps: torch.Tensor | int = 0  # int only until the first term (there is always one)
        for scores, grad in zip(row_scores, grads):
            grad = grad.unflatten(2, (num_targets, num_rows))  # (B, H, K, R, T)
            term = grad[..., prefix:].relu() * scores[..., prefix:].sigmoid().unsqueeze(2)  # (B, H, K, R, P)
            if self.row_weighting == "readout":
                term = term * row_weights[:, None, None, :, None]
            maps = maps + term.sum(dim=3).sum(dim=1)
        for scores, grad in zip(probe_scores, grads[len(row_scores) :]):
            maps = maps + self._probe_term(scores, grad.unflatten(0, (batch, num_targets)).transpose(1, 2))
        assert isinstance(maps, torch.Tensor)
        return maps  # (B, K, P)

    def _pooled_maps(self, record: ContextRecorder, target: torch.Tensor | None) -> torch.Tensor:
        """Pooled readouts: from the forward with the attention contexts as leaves, one backward per target class."""
        rows = self.family.readout_rows
        readout, contexts, probe_probs = record.readout, record.contexts, record.probe_probs
        targets = resolve_targets(readout.logits.detach(), target)  # (B, K)
        row_weights = readout.weights[:, rows]  # (B, R)
        per_target = []
        for column in range(targets.shape[1]):
            selected = readout.logits.gather(1, targets[:, column : column + 1]).sum()
            grads = torch.autograd.grad(selected, contexts + probe_probs, retain_graph=column + 1 < targets.shape[1])
            with torch.no_grad():
                maps: torch.Tensor | int = 0  # int only until the first term (there is always one)
                for context_grad, sigmoids, v in zip(grads, record.row_sigmoids, record.patch_values):
                    attn_grad = context_grad[:, :, rows] @ v.transpose(-2, -1)  # (B, H, R, P) = dy/dA
                    term = attn_grad.relu_().mul_(sigmoids)  # in place: this runs over every (row, patch)
                    if self.row_weighting == "readout":
                        term = term.mul_(row_weights[:, None, :, None])
                    maps = maps + term.flatten(1, 2).sum(dim=1)
                for scores, grad in zip(record.probe_scores, grads[len(contexts) :]):
                    maps = maps + self._probe_term(scores, grad.unsqueeze(2))[:, 0]
            assert isinstance(maps, torch.Tensor)
            per_target.append(maps)
        return torch.stack(per_target, dim=1)  # (B, K, P)

    def _probe_term(self, scores: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The probe's own layer: ReLU(dy/da) * sigmoid(S) over its patch columns, summed over heads.

        scores (B, H, 1, N), grad (B, H, K, 1, N) -> (B, K, P).
        """
        patches = slice(self.family.num_prefix_tokens - self.family.readout_first_row, None)
        return (grad[..., 0, patches].relu() * scores[:, :, None, 0, patches].sigmoid()).sum(dim=1)


class RowRecorder(ForwardRecorder):
    """Token readout (and `differentiable_maps`): what the replay of the readout rows needs from the forward.

    Per block the readout rows' scores (B, H, R, T), the values (B, H, T, d) and the rows' attention inputs
    (B, R, D); the rows entering the first block, the readout's input and the readout; for 'map', the probe's
    scores. The forward keeps the model's own attention (fused where the model fuses).
    """

    def __init__(self, family: Family, graph: GraphMode) -> None:
        self.family, self.graph, self.rows = family, graph, family.readout_rows
        self.row_scores: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.row_inputs: list[torch.Tensor] = []
        self.probe_scores: list[torch.Tensor] = []  # 'map' readout: the probe's (B, H, 1, N)

    def embedded(self, tokens: torch.Tensor) -> None:
        self.first_rows = tokens[:, self.rows]  # (B, R, D)

    def attend(self, index: int, heads: Heads, attn_input: torch.Tensor) -> torch.Tensor:
        self.row_scores.append(heads.scores(self.rows))
        self.values.append(heads.v)
        self.row_inputs.append(attn_input[:, self.rows])
        return heads.context(self.family.fused(index), self.family.attention_dropout(index))

    def attend_probe(self, heads: Heads) -> torch.Tensor:
        self.probe_scores.append(heads.scores())
        return self.probe_scores[-1].softmax(dim=-1) @ heads.v

    def read(self, tokens: torch.Tensor, readout: ReadOut) -> None:
        self.kept = self.family.readout_tokens(tokens)  # (B, T', D): the prefix tokens alone for token readout
        self.readout = readout


class ContextRecorder(ForwardRecorder):
    """Pooled readouts: the residual stream in the graph, each block's attention context C = softmax(S) V a leaf.

    Per block the sigmoid of the pooled rows' scores over the patches (B, H, R, P) and the patch values
    (B, H, P, d); for 'map', the probe's scores and its attention as a leaf.
    """

    graph: GraphMode = "detached"

    def __init__(self, family: Family) -> None:
        self.rows, self.prefix = family.readout_rows, family.num_prefix_tokens
        self.patches = slice(self.prefix, None)
        self.contexts: list[torch.Tensor] = []
        self.row_sigmoids: list[torch.Tensor] = []
        self.patch_values: list[torch.Tensor] = []
        self.probe_scores: list[torch.Tensor] = []
        self.probe_probs: list[torch.Tensor] = []

    def attend(self, index: int, heads: Heads, attn_input: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the attention input is detached: S, A and V are constants
            scores = heads.scores(self.rows, scale_queries=True, columns=self.patches)  # (B, H, R, P)
            self.row_sigmoids.append(scores.sigmoid_())  # S itself is not needed any more
            values = heads.v.contiguous()  # one copy serves the kernel and dy/dA (a strided V slows its matmul 2x)
            context = F.scaled_dot_product_attention(heads.q, heads.k, values, attn_mask=heads.bias)  # fused
        self.patch_values.append(values[:, :, self.prefix :])
        self.contexts.append(context.requires_grad_())
        return context

    def attend_probe(self, heads: Heads) -> torch.Tensor:  # the probe's attention held fixed, its values in the graph
        with torch.no_grad():
            self.probe_scores.append(heads.scores())
        self.probe_probs.append(self.probe_scores[-1].softmax(dim=-1).requires_grad_())
        return self.probe_probs[-1] @ heads.v

    def read(self, tokens: torch.Tensor, readout: ReadOut) -> None:
        self.readout = readout
