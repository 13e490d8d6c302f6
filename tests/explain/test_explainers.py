"""Explainer behaviour on timm ViTs: model state untouched, exact batching, no leaks, clear errors.

Other families (Eva, Beit, pooled readouts) are covered in test_families.py.
"""

import gc

import numpy as np
import pytest
import timm
import torch
from torch import nn

from pipeline.explain import (
    AGCAM,
    METHODS,
    AttentionRollout,
    TransformerAttribution,
    UnsupportedModelError,
    build_explainer,
)
from pipeline.render import render_overlay, save_png
from scripts.oracle import agcam_oracle_batch, relative_error
from tests.helpers.models import tiny_vit


def without_fused_attention(model: nn.Module) -> nn.Module:
    for block in model.blocks:
        block.attn.fused_attn = False
    return model


VARIANTS = {
    "plain": dict(),
    "no_qkv_bias": dict(qkv_bias=False),
    "register_tokens": dict(reg_tokens=4),
    "non_square": dict(img_size=(32, 24)),
    "layer_scale_qk_norm": dict(init_values=0.1, qk_norm=True),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_agcam_matches_the_authors_way_on_model_variants(variant):
    model = without_fused_attention(tiny_vit(**VARIANTS[variant]))
    height, width = model.patch_embed.img_size
    images = torch.randn(3, 3, height, width)
    target = torch.tensor([0, 3, 4])
    maps = AGCAM(model)(images, target)
    assert maps.shape == (3, *model.patch_embed.grid_size)
    reference = agcam_oracle_batch(model, images, target, rows="class").reshape(maps.shape)  # the authors' way
    assert relative_error(maps, reference) < 1e-5


def test_distilled_deit_is_explained_by_every_method():
    torch.manual_seed(0)
    model = timm.models.deit.VisionTransformerDistilled(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5
    ).eval()
    without_fused_attention(model)
    images = torch.randn(2, 3, 32, 32)
    assert model.num_prefix_tokens == 2
    for method in METHODS:
        assert build_explainer(method, model)(images).shape == (2, 4, 4)
    target = torch.tensor([1, 2])
    reference = agcam_oracle_batch(model, images, target, rows="class").reshape(2, 4, 4)
    assert relative_error(AGCAM(model)(images, target), reference) < 1e-5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ["plain", "register_tokens", "non_square"])
def test_fused_attention_gives_the_same_maps_and_stays_on(method, variant):
    fused = tiny_vit(**VARIANTS[variant])
    assert all(block.attn.fused_attn for block in fused.blocks)  # timm's default
    plain = without_fused_attention(tiny_vit(**VARIANTS[variant]))
    images = torch.randn(2, 3, *fused.patch_embed.img_size)
    maps = build_explainer(method, fused)(images)
    assert maps.shape == (2, *fused.patch_embed.grid_size)
    assert relative_error(maps, build_explainer(method, plain)(images)) < 1e-4
    assert all(block.attn.fused_attn for block in fused.blocks)


@pytest.mark.parametrize("method", METHODS)
def test_explaining_leaves_the_model_as_it_found_it(method):
    model = tiny_vit(drop_rate=0.1, attn_drop_rate=0.1)
    model.train()
    model.blocks[0].eval()  # a mixed train/eval state must come back exactly
    model.patch_embed.proj.weight.requires_grad_(False)
    images = torch.randn(4, 3, 32, 32)
    modes = {name: module.training for name, module in model.named_modules()}
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    with torch.no_grad():
        model.eval()
        before = model(images)
        model.train()
        model.blocks[0].eval()

    explainer = build_explainer(method, model)
    maps = explainer(images)
    again = explainer(images)

    assert torch.equal(maps, again)  # explained in eval mode: dropout off
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(images), before)  # bit-identical logits


@pytest.mark.parametrize("method", METHODS)
def test_works_under_inference_mode_as_in_lightning_validation(method):
    model = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    target = torch.tensor([1, 3])
    expected = build_explainer(method, model)(images, target)
    with torch.inference_mode():
        inside = build_explainer(method, model)(images.clone(), target.clone())  # inference tensors, as in Lightning
    assert torch.allclose(inside, expected)


@pytest.mark.parametrize("method", METHODS)
def test_several_targets_per_image_equal_separate_calls(method):
    model = tiny_vit()
    images = torch.randn(3, 3, 32, 32)
    targets = torch.tensor([[0, 1, 2], [4, 4, 0], [3, 1, 2]])
    explainer = build_explainer(method, model)
    together = explainer(images, targets)
    assert together.shape == (3, 3, 4, 4)
    for k in range(3):
        assert relative_error(together[:, k], explainer(images, targets[:, k])) < 1e-5  # of the map's max


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_per_image(method):
    model = tiny_vit()
    images = torch.randn(4, 3, 32, 32)
    explainer = build_explainer(method, model)
    batched = explainer(images)
    single = torch.cat([explainer(images[i : i + 1]) for i in range(4)])
    assert relative_error(batched, single) < 1e-5  # of the map's max: batch shapes change GEMM rounding


def test_agcam_depends_on_the_class_and_on_the_head_weights():
    model = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    explainer = AGCAM(model)
    first, second = explainer(images, torch.tensor([0, 0])), explainer(images, torch.tensor([1, 1]))
    assert relative_error(first, second) > 0.05
    # Model randomization check (Adebayo et al. 2018): a method that ignores the head would pass this unchanged.
    with torch.no_grad():
        model.head.weight.copy_(torch.randn_like(model.head.weight))
    assert relative_error(explainer(images, torch.tensor([0, 0])), first) > 0.05


def test_rollout_variants_match_a_direct_computation_from_timm_attention():
    model = without_fused_attention(tiny_vit(reg_tokens=2))
    images = torch.randn(2, 3, 32, 32)
    captured = []
    hooks = [b.attn.attn_drop.register_forward_hook(lambda m, a, out: captured.append(out)) for b in model.blocks]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    tokens = captured[0].shape[-1]
    for fusion in ("mean", "max", "min"):
        for ratio in (0.0, 0.5):
            rollout = torch.eye(tokens).repeat(2, 1, 1)
            for probs in captured:
                fused = getattr(probs, {"mean": "mean", "max": "amax", "min": "amin"}[fusion])(dim=1)
                for b in range(2):
                    flat = fused[b].flatten().clone()
                    order = [i for i in flat.argsort().tolist() if i % tokens != 0]  # column 0 is never dropped
                    flat[order[: int(tokens * tokens * ratio)]] = 0
                    fused[b] = flat.view(tokens, tokens)
                flow = (fused + torch.eye(tokens)) / 2
                rollout = (flow / flow.sum(-1, keepdim=True)) @ rollout
            expected = rollout[:, 0, 3:].reshape(2, 4, 4)
            maps = AttentionRollout(model, head_fusion=fusion, discard_ratio=ratio)(images)
            assert torch.allclose(maps, expected, atol=1e-6), (fusion, ratio)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches deprecated torch aliases
def test_repeated_calls_leak_no_hooks_and_no_tensors():
    model = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    explainers = [build_explainer(method, model) for method in METHODS]

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))

    for explainer in explainers:
        explainer(images)
    baseline = live_tensors()
    for _ in range(50):  # 4 methods x 50 = 200 calls
        for explainer in explainers:
            explainer(images)
    assert live_tensors() <= baseline
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


def test_unsupported_models_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="global_pool=''"):
        AGCAM(tiny_vit(class_token=False, global_pool=""))
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        AGCAM(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)))
    with pytest.raises(ValueError, match="Unknown explanation method"):
        build_explainer("gradcam", tiny_vit())
    explainer = AGCAM(tiny_vit())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        explainer(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        explainer(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 4\]"):
        explainer(torch.randn(2, 3, 32, 32), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="target must be an integer tensor"):
        explainer(torch.randn(2, 3, 32, 32), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="head_fusion"):
        AttentionRollout(tiny_vit(), head_fusion="median")
    with pytest.raises(ValueError, match="Mlp"):
        TransformerAttribution(tiny_vit(mlp_layer=timm.layers.SwiGLU))


def test_overlay_draws_heat_and_boxes(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    heat = torch.zeros(32, 32)
    heat[8:16, 8:16] = 1.0
    picture = render_overlay(image, heat, gt_boxes=torch.tensor([[2, 2, 28, 28]]), alpha=0.6, caption="cls 0.99")
    assert picture.shape == (32, 32, 3) and picture.dtype == np.uint8
    hot, cold = picture[12, 12], picture[20, 5]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where hot, blue where cold
    assert tuple(picture[27, 2]) != tuple(picture[27, 5]) and picture[27, 2][1] == 255  # green GT edge on the left
    path = save_png(picture, tmp_path / "sub" / "overlay.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), picture)
    with pytest.raises(ValueError, match="does not match"):
        render_overlay(image, torch.zeros(16, 16))
