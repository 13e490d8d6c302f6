"""Attention Guided CAM (Leem & Seo, AAAI 2024) at the cost of one forward pass.

M_c = sum over blocks and heads of ReLU(dy_c / dA[0, patches]) * sigmoid(S[0, patches]), where S are the
pre-softmax attention scores, A = softmax(S), and the input of every attention module is detached, so
gradients reach A only through the residual stream and the MLPs of later blocks.

That detach is what makes this cheap. Tokens exchange information only through attention, and with
the attention input detached no gradient crosses between tokens: the gradient of the class logit
flows along the class token alone. So after one no-grad forward over all tokens (timm's fused kernel
included) the class token is replayed through the blocks with the attention rows as autograd leaves;
its backward is 1/T of a full backward and touches no weight gradient. K target classes replay as
K copies of the class token in one pass.
"""

from __future__ import annotations

import torch

from pipeline.explain._vit import (
    attention_scores,
    embed,
    logits_from_prefix,
    project_heads,
    resolve_targets,
    run_block,
    split_heads,
)
from pipeline.explain.base import Explainer


class AGCAM(Explainer):
    """Attention Guided CAM; see the module docstring for how it reaches the one-forward cost floor."""

    def _explain(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        prefix = model.num_prefix_tokens
        class_scores, values, class_inputs = [], [], []  # per block: (B, H, 1, T), (B, H, T, d), (B, 1, D)

        def attend_and_record(attn, x):
            q, k, v = split_heads(attn, x)
            class_scores.append(attention_scores(attn, q[:, :, :1], k))
            values.append(v)
            class_inputs.append(x[:, :1])
            if attn.fused_attn:
                context = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            else:
                context = attention_scores(attn, q, k).softmax(dim=-1) @ v
            return project_heads(attn, context, x)

        with torch.no_grad():
            tokens = embed(model, images)
            class_token = tokens[:, :1]  # (B, 1, D)
            for block in model.blocks:
                tokens = run_block(block, tokens, attend_and_record)
            logits = logits_from_prefix(model, tokens[:, :prefix])
        targets = resolve_targets(logits, target)  # (B, K)
        batch, num_targets = targets.shape

        with torch.enable_grad():
            # One attention row per target copy of the class token: (B, H, K, T) leaves.
            class_probs = [
                scores.softmax(dim=-1).expand(-1, -1, num_targets, -1).clone().requires_grad_()
                for scores in class_scores
            ]
            copies = class_token.expand(-1, num_targets, -1)  # (B, K, D)
            for block, probs, v, x in zip(model.blocks, class_probs, values, class_inputs):

                def attend_replay(attn, _normed, probs=probs, v=v, x=x):
                    return project_heads(attn, probs @ v, x.expand(-1, num_targets, -1))

                copies = run_block(block, copies, attend_replay)
            other_prefix = tokens[:, 1:prefix].repeat_interleave(num_targets, dim=0)  # (B*K, prefix-1, D)
            readout = torch.cat([copies.reshape(batch * num_targets, 1, -1), other_prefix], dim=1)
            target_logits = logits_from_prefix(model, readout).gather(1, targets.reshape(-1, 1))
            grads = torch.autograd.grad(target_logits.sum(), class_probs)

        maps = 0
        for scores, grad in zip(class_scores, grads):
            # scores (B, H, 1, T) broadcast over the K rows of grad (B, H, K, T)
            maps = maps + (grad[..., prefix:].relu() * scores[..., prefix:].sigmoid()).sum(dim=1)
        return maps  # (B, K, P)
