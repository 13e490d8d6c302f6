"""The internal fast path: one forward gives the model's logits and records what the explainers replay from."""

from contextlib import nullcontext

import pytest
import torch

from pipeline.explain import AGCAM, AttentionRollout, GradientRollout
from pipeline.explain.base import record_batch
from scripts.oracle import relative_error
from tests.helpers.models import tiny_vit

READOUTS = {
    "class token": {},
    "avg": dict(global_pool="avg", class_token=False),
    "map": dict(global_pool="map"),
}


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("bf16_autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_one_forward_gives_the_models_logits_and_a_plain_calls_maps(readout, bf16_autocast):
    model = tiny_vit(**READOUTS[readout])
    assert all(block.attn.fused_attn for block in model.blocks)  # timm's own forward runs the fused kernel
    explainers = [AGCAM(model), AttentionRollout(model), GradientRollout(model)]
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1], [2, 3], [4, 0]])
    with torch.no_grad():
        timm_logits = model(images)
    standalone = [explainer(images, targets) for explainer in explainers]

    forwards = []
    model.patch_embed.register_forward_hook(lambda *args: forwards.append(1))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16_autocast else nullcontext()
    with torch.inference_mode(), autocast:  # as in a Lightning validation step under bf16-mixed
        batch = images.clone()
        recorded = record_batch(explainers, batch)
        replayed = [explainer(batch, targets, recorded) for explainer in explainers[:2]]
        assert len(forwards) == 1  # AG-CAM and rollout replay from the recorded forward
        replayed.append(explainers[2](batch, targets, recorded))
        assert len(forwards) == 2  # gradient rollout needs a forward of its own
        assert recorded.recorder_for(explainers[0], batch.clone()) is None  # a record explains its own images only

    assert recorded.logits.dtype == torch.float32 and not recorded.logits.requires_grad
    torch.testing.assert_close(recorded.logits, timm_logits, rtol=1e-5, atol=1e-5)
    assert relative_error(replayed[0], standalone[0]) <= 1e-6  # AG-CAM: the maps of a plain call
    assert relative_error(replayed[1], standalone[1]) <= 1e-6  # rollout, with AG-CAM's (fused) attention in the forward
    assert torch.equal(replayed[2], standalone[2])
