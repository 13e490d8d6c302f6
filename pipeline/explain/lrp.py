"""Transformer attribution (Chefer, Gur & Wolf, CVPR 2021): LRP relevance times attention gradient, rolled out.

Relevance starts as the one-hot target at the logits and flows down through the head, the final norm
and every block. Linear layers use the LRP alpha-beta rule with alpha = 1, beta = 0 (only positive
contributions, bias ignored). LayerNorm, GELU, softmax, dropout and LayerScale pass relevance through
unchanged. A residual addition splits relevance between its operands in proportion to their
contributions and re-normalizes each part so that the total is conserved; a matrix product gives each
operand its contribution and the attention product halves both. Per block the relevance at the
post-softmax attention, R_A, is multiplied by the plain gradient dy_c/dA, clamped at 0 and averaged
over heads; the blocks are rolled out with the identity added: R = R + A_bar R.

All relevance tensors carry a target axis: (B, K, ...), with activations broadcast as (B, 1, ...), so K
classes per image share one forward and one relevance pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from timm.layers import Mlp

from pipeline.explain._errors import UnsupportedModelError
from pipeline.explain._family import Family, resolve_targets
from pipeline.explain._recorded import gradients_per_target, residual_rollout
from pipeline.explain._sharded import plain_type
from pipeline.explain._vit import ViTFamily
from pipeline.explain.base import Explainer, read_rows

EPS = 1e-9


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, stabilised by EPS, and 0 where the denominator is exactly 0 (as in LRP)."""
    shifted = denominator + EPS
    shifted = shifted + shifted.eq(0).to(shifted.dtype) * EPS
    return numerator / shifted * denominator.ne(0).to(denominator.dtype)


def sum_per_case(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the (B, K) axes, kept broadcastable."""
    return tensor.flatten(2).sum(-1).reshape(tensor.shape[:2] + (1,) * (tensor.ndim - 2))


def linear_relevance(relevance: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Alpha-beta rule (alpha 1, beta 0) through y = x W^T: relevance at x for relevance at y."""
    pos_w, neg_w = weight.clamp(min=0), weight.clamp(max=0)
    pos_x, neg_x = inputs.clamp(min=0), inputs.clamp(max=0)
    positive_part = pos_x @ pos_w.T + neg_x @ neg_w.T
    scaled = safe_divide(relevance, positive_part)
    return pos_x * (scaled @ pos_w) + neg_x * (scaled @ neg_w)


def residual_relevance(
    relevance: torch.Tensor, first: torch.Tensor, second: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split relevance at first + second by contribution, each part rescaled so their total is conserved."""
    scaled = safe_divide(relevance, first + second)
    first_part, second_part = first * scaled, second * scaled
    first_total, second_total = sum_per_case(first_part), sum_per_case(second_part)
    both = first_total.abs() + second_total.abs()
    total = sum_per_case(relevance)
    first_share = safe_divide(first_total.abs(), both) * total
    second_share = safe_divide(second_total.abs(), both) * total
    return first_part * safe_divide(first_share, first_total), second_part * safe_divide(second_share, second_total)


def branch_relevance(relevances: tuple[torch.Tensor, torch.Tensor], tensor: torch.Tensor) -> torch.Tensor:
    """Relevance at a tensor that fed two branches (the residual and the normed path): the sum of both."""
    return tensor * (safe_divide(relevances[0], tensor) + safe_divide(relevances[1], tensor))


def matmul_relevance(
    relevance: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance at both operands of left @ right, each operand credited with its contribution."""
    scaled = safe_divide(relevance, left @ right)
    return left * (scaled @ right.transpose(-2, -1)), right * (left.transpose(-2, -1) @ scaled)


@dataclass
class BlockRecord:
    """One block's forward, named after the tensors of x -> x + attn(norm1(x)) -> mid + mlp(norm2(mid))."""

    block_input: torch.Tensor  # (B, T, D)
    normed1: torch.Tensor  # (B, T, D), input of qkv
    q: torch.Tensor  # (B, H, T, d)
    k: torch.Tensor
    v: torch.Tensor
    attn_probs: torch.Tensor  # (B, H, T, T), post-softmax
    merged_heads: torch.Tensor  # (B, T, H*d), input of proj
    attn_branch: torch.Tensor  # (B, T, D), added to block_input
    mid: torch.Tensor  # (B, T, D) = block_input + attn_branch
    normed2: torch.Tensor  # (B, T, D), input of fc1
    hidden: torch.Tensor  # (B, T, hidden), input of fc2
    mlp_branch: torch.Tensor  # (B, T, D), added to mid


@dataclass
class RecordedForward:
    blocks: list[BlockRecord]
    final_tokens: torch.Tensor  # (B, T, D), after the final norm
    logits: torch.Tensor  # (B, C)


def check_lrp_rules(family: Family) -> None:
    """LRP needs a rule for every layer: timm's VisionTransformer Block with plain Mlp, class-token or avg readout."""
    model = family.model
    if not isinstance(family, ViTFamily):
        block = family.blocks[0]
        raise UnsupportedModelError(
            "TransformerAttribution's LRP rules are written for timm VisionTransformer blocks; "
            f"{plain_type(model).__name__} blocks ({plain_type(block).__name__} with {type(block.attn).__name__}) "
            f"have {family.block_differences}, for which there is no LRP rule here."
        )
    for index, block in enumerate(family.blocks):
        if type(block.mlp) is not Mlp:
            raise UnsupportedModelError(
                f"Block {index} uses {type(block.mlp).__name__}; TransformerAttribution's LRP rules are defined "
                "for timm's plain Mlp (fc1, activation, fc2) only."
            )
    if family.readout_kind not in ("token", "avg"):
        raise UnsupportedModelError(
            f"TransformerAttribution has no LRP rule for global_pool={family.readout_kind!r}; it supports the "
            "class-token readout and average pooling."
        )


def record_forward(family: Family, images: torch.Tensor) -> RecordedForward:
    """Run the model with grad enabled, keeping every block's tensors (see BlockRecord)."""
    model = family.model
    records = []
    x, positions = family.embed(images)
    for index, block in enumerate(family.blocks):
        attn, mlp = cast(torch.nn.Module, block.attn), block.mlp
        normed1 = block.norm1(x)
        heads = family.heads(index, normed1, positions)
        attn_probs = heads.scores().softmax(dim=-1)
        merged_heads = attn.norm((attn_probs @ heads.v).transpose(1, 2).flatten(2))  # (B, T, H*d)
        if attn.gate is not None:
            merged_heads = merged_heads * attn.gate(normed1).sigmoid()
        attn_branch = block.drop_path1(block.ls1(attn.proj_drop(attn.proj(merged_heads))))
        mid = x + attn_branch
        normed2 = block.norm2(mid)
        hidden = mlp.norm(mlp.drop1(mlp.act(mlp.fc1(normed2))))
        mlp_branch = block.drop_path2(block.ls2(mlp.drop2(mlp.fc2(hidden))))
        records.append(
            BlockRecord(
                x,
                normed1,
                heads.q,
                heads.k,
                heads.v,
                attn_probs,
                merged_heads,
                attn_branch,
                mid,
                normed2,
                hidden,
                mlp_branch,
            )
        )
        x = mid + mlp_branch
    final_tokens = model.norm(x)
    logits = model.forward_head(final_tokens)
    return RecordedForward(records, final_tokens, logits)


def block_relevance(block, record: BlockRecord, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate relevance (B, K, T, D) from a block's output to its input; also return R at the attention."""
    unsqueezed = {name: getattr(record, name).unsqueeze(1) for name in record.__dataclass_fields__}
    mid_part, mlp_part = residual_relevance(relevance, unsqueezed["mid"], unsqueezed["mlp_branch"])
    hidden_part = linear_relevance(mlp_part, unsqueezed["hidden"], block.mlp.fc2.weight)
    normed2_part = linear_relevance(hidden_part, unsqueezed["normed2"], block.mlp.fc1.weight)
    mid_relevance = branch_relevance((mid_part, normed2_part), unsqueezed["mid"])

    input_part, attn_part = residual_relevance(mid_relevance, unsqueezed["block_input"], unsqueezed["attn_branch"])
    merged_part = linear_relevance(attn_part, unsqueezed["merged_heads"], block.attn.proj.weight)
    batch, targets, tokens, _ = merged_part.shape
    context_part = merged_part.reshape(batch, targets, tokens, block.attn.num_heads, -1).transpose(2, 3)
    probs_part, v_part = matmul_relevance(context_part, unsqueezed["attn_probs"], unsqueezed["v"])
    probs_part, v_part = probs_part / 2, v_part / 2
    q_part, k_transposed_part = matmul_relevance(probs_part, unsqueezed["q"], unsqueezed["k"].transpose(-2, -1))
    qkv_part = torch.stack([q_part / 2, k_transposed_part.transpose(-2, -1) / 2, v_part], dim=2)  # (B, K, 3, H, T, d)
    qkv_part = qkv_part.permute(0, 1, 4, 2, 3, 5).flatten(3)  # (B, K, T, 3*H*d), timm's qkv channel order
    normed1_part = linear_relevance(qkv_part, unsqueezed["normed1"], block.attn.qkv.weight)
    return branch_relevance((input_part, normed1_part), unsqueezed["block_input"]), probs_part


class TransformerAttribution(Explainer):
    """Chefer et al.'s LRP-based transformer attribution (see the module docstring)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        check_lrp_rules(self.family)

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        if self.family.gather.sharded:  # checked per call: Lightning shards the model after building callbacks
            raise UnsupportedModelError(
                "TransformerAttribution reads every block's weights in its relevance pass and does not gather "
                f"FSDP shards; {plain_type(model).__name__} is sharded with fully_shard. AG-CAM, rollout and "
                "gradient rollout explain sharded models."
            )
        with torch.enable_grad():
            recorded = record_forward(self.family, images)
            targets = resolve_targets(recorded.logits.detach(), target)  # (B, K)
            attn_grads = gradients_per_target(recorded.logits, targets, [r.attn_probs for r in recorded.blocks])
        with torch.no_grad():
            relevance, readout_weights = self._token_relevance(recorded.final_tokens, targets)
            attn_relevances = []
            for block, record in zip(reversed(self.family.blocks), reversed(recorded.blocks)):
                relevance, attn_relevance = block_relevance(block, record, relevance)
                attn_relevances.append(attn_relevance)
            weighted = [
                (grads * attn_relevance).clamp(min=0).mean(dim=2)  # (B, K, T, T)
                for grads, attn_relevance in zip(attn_grads, reversed(attn_relevances))
            ]
            rollout = residual_rollout(weighted)
        return read_rows(rollout, readout_weights, self.family.num_prefix_tokens)

    def _token_relevance(self, final_tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance (B, K, T, D) at the final norm output, and the readout's weights (B, T) for the rollout.

        The one-hot target goes through the head to the tokens it reads. Distilled DeiT averages a class-token
        head and a distillation-token head; relevance is split between the two like a residual addition, each half
        then goes through its own head. Average pooling is a linear layer over tokens with weights 1/N.
        """
        model = self.model
        batch, tokens, _ = final_tokens.shape
        one_hot = torch.zeros(
            *targets.shape, cast(int, model.num_classes), device=targets.device, dtype=final_tokens.dtype
        )
        one_hot.scatter_(2, targets.unsqueeze(-1), 1.0)  # (B, K, C)
        relevance = torch.zeros(*targets.shape, *final_tokens.shape[1:], device=targets.device, dtype=one_hot.dtype)
        weights = final_tokens.new_zeros(batch, tokens)
        if self.family.readout_kind == "avg":
            first = self.family.readout_first_row
            pooled_tokens = final_tokens[:, first:]  # (B, N, D)
            pooled = pooled_tokens.mean(dim=1, keepdim=True)  # (B, 1, D)
            pooled_relevance = linear_relevance(
                one_hot, model.fc_norm(pooled), cast(torch.Tensor, model.head.weight)
            )  # (B, K, D)
            pooled_relevance = pooled * safe_divide(pooled_relevance, pooled)  # through fc_norm unchanged
            averaging = pooled_tokens.new_full((1, pooled_tokens.shape[1]), 1.0 / pooled_tokens.shape[1])
            per_token = linear_relevance(  # (B, K, D, N): the mean as a linear layer over the token axis
                pooled_relevance.unsqueeze(-1), pooled_tokens.transpose(1, 2).unsqueeze(1), averaging
            )
            relevance[:, :, first:] = per_token.transpose(2, 3)
            weights[:, first:] = 1.0 / pooled_tokens.shape[1]
            return relevance, weights
        readouts = [(0, model.head)]
        head_relevances = [one_hot]
        if hasattr(model, "head_dist"):
            readouts.append((1, model.head_dist))
            class_half = model.head(final_tokens[:, :1]) / 2  # (B, 1, C)
            dist_half = model.head_dist(final_tokens[:, 1:2]) / 2
            head_relevances = list(residual_relevance(one_hot, class_half, dist_half))
        for (token, head), head_relevance in zip(readouts, head_relevances):
            token_features = final_tokens[:, token : token + 1]  # (B, 1, D)
            pooled = linear_relevance(
                head_relevance, model.fc_norm(token_features), cast(torch.Tensor, head.weight)
            )  # (B, K, D)
            relevance[:, :, token] = token_features * safe_divide(pooled, token_features)
        weights[:, 0] = 1.0
        return relevance, weights
