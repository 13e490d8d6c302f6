"""Every supported timm family against the authors' way (scripts/oracle.py); the refused ones say why."""

import pytest
import timm
import torch

from pipeline.explain import (
    AGCAM,
    METHODS,
    AttentionRollout,
    GradientRollout,
    TransformerAttribution,
    UnsupportedModelError,
    build_explainer,
    check_explainable,
)
from scripts.oracle import agcam_oracle_batch, capture_attention, relative_error

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=5)
FAMILIES = {  # name -> (timm model, constructor overrides, input (H, W))
    "eva02": ("eva02_small_patch14_224", {}, (32, 32)),  # SwiGLU (GluMlp), RoPE, avg with a class token
    "dinov3": ("vit_base_patch16_dinov3", {}, (48, 32)),  # RoPE, 4 registers, avg, dynamic image size
    "pe_core": ("vit_pe_core_base_patch16_224", {}, (32, 32)),  # RoPE, attention-pool probe over all tokens
    "rope_vit": ("vit_base_patch16_rope_224", {}, (32, 32)),  # RoPE, class-token readout
    "beit": ("beit_base_patch16_224", {}, (32, 32)),  # relative position bias, avg
    "siglip": ("vit_base_patch16_siglip_224", {}, (32, 32)),  # no class token, attention-pool probe
    "vit_gap": ("vit_medium_patch16_gap_256", {}, (32, 32)),  # no class token, avg
    "vit_reg_gap": ("vit_betwixt_patch16_reg4_gap_256", {}, (32, 32)),  # registers, avg
    "eva02_non_square": ("eva02_small_patch14_224", dict(img_size=(32, 48)), (32, 48)),
    "eva_post_norm": ("eva02_small_patch14_224", dict(use_post_norm=True, scale_mlp=True), (32, 32)),
    "eva_grouped_query": (
        "vit_base_patch16_rope_224",
        dict(num_heads=4, num_kv_heads=2, qkv_fused=False, global_pool="max"),
        (32, 32),
    ),
    "rope_mixed": ("vit_base_patch16_rope_mixed_224", {}, (32, 32)),
    "beit_shared_bias": ("beit_base_patch16_224", dict(use_shared_rel_pos_bias=True, global_pool="token"), (32, 32)),
    "vit_map_registers": ("vit_base_patch16_siglip_224", dict(reg_tokens=2, qk_norm=True), (32, 32)),
    "vit_avgmax_with_prefix": ("vit_small_patch16_224", dict(global_pool="avgmax", pool_include_prefix=True), (32, 32)),
}
POOLED = [name for name in FAMILIES if name not in ("rope_vit", "rope_mixed", "beit_shared_bias")]


def tiny_family(name: str) -> torch.nn.Module:
    """The family's tiny random model, with the parameters timm initializes to (near) zero drawn at random.

    Relative position biases start at zero, Eva's and Beit's heads at 1e-3 scale and DINOv3's LayerScale at 1e-5;
    left so, they would hide a wrong bias, head or LayerScale behind tiny numbers.
    """
    model_name, overrides, _ = FAMILIES[name]
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, **{**TINY, **overrides}).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if any(key in param_name for key in ("relative_position_bias_table", "gamma", "head.", "latent")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


def images_for(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *FAMILIES[name][2], generator=torch.Generator().manual_seed(2))


def set_fused_attention(model: torch.nn.Module, fused: bool) -> torch.nn.Module:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    return model


def supported_methods(model: torch.nn.Module) -> list[str]:
    lrp = type(model).__name__ == "VisionTransformer" and model.global_pool in ("token", "avg")
    return [method for method in METHODS if method != "lrp" or lrp]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", FAMILIES)
def test_agcam_matches_the_authors_way(name, fused):
    model = set_fused_attention(tiny_family(name), fused)
    images = images_for(name)
    with torch.no_grad():
        ranked = model(images).argsort(dim=-1, descending=True)
    targets = ranked[:, :2]  # the predicted class and another one, from one call
    maps = AGCAM(model)(images, targets)
    assert maps.shape == (2, 2, *model.patch_embed.dynamic_feat_size(FAMILIES[name][2]))
    rows = "class" if model.global_pool == "token" else "all"
    for column in range(2):
        reference = agcam_oracle_batch(model, images, targets[:, column], rows=rows)
        assert relative_error(maps[:, column].flatten(1), reference) <= 1e-5


@pytest.mark.parametrize("name", ["eva02", "dinov3", "pe_core", "siglip", "vit_reg_gap", "beit"])
def test_readout_row_weighting_matches_the_authors_way(name):
    model = tiny_family(name)
    images = images_for(name)
    target = torch.tensor([1, 3])
    maps = AGCAM(model, row_weighting="readout")(images, target).flatten(1)
    tokens = model.num_prefix_tokens + maps.shape[1]
    if model.global_pool == "map":
        weights = "probe"
    else:
        weights = torch.zeros(tokens)
        weights[model.num_prefix_tokens :] = 1.0 / maps.shape[1]
    reference = agcam_oracle_batch(model, images, target, rows="all", row_weights=weights)
    assert relative_error(maps, reference) <= 1e-5
    if model.global_pool == "avg":  # 1/N on every averaged row: the "sum" map up to scale
        plain = AGCAM(model, row_weighting="sum")(images, target).flatten(1)
        assert relative_error(maps * maps.shape[1], plain) <= 1e-5


@pytest.mark.parametrize("name", ["eva02", "pe_core", "beit", "siglip", "vit_reg_gap", "rope_vit"])
def test_every_method_gives_the_same_maps_batched_and_per_image(name):
    model = tiny_family(name)
    images = images_for(name, batch=3)
    for method in supported_methods(model):
        explainer = build_explainer(method, model)
        batched = explainer(images)
        single = torch.cat([explainer(images[i : i + 1]) for i in range(3)])
        assert relative_error(batched, single) < 1e-5, method  # of the map's max: batch shapes change rounding


@pytest.mark.parametrize("name", ["dinov3", "pe_core", "beit_shared_bias", "vit_map_registers"])
def test_explaining_leaves_every_family_as_found(name):
    model = tiny_family(name)
    model.train()
    model.blocks[0].eval()
    model.blocks[1].attn.fused_attn = False  # mixed kernels must come back as they were
    next(model.parameters()).requires_grad_(False)
    images = images_for(name)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    modes = {key: module.training for key, module in model.named_modules()}
    fused = {key: module.fused_attn for key, module in model.named_modules() if hasattr(module, "fused_attn")}
    requires_grad = {key: param.requires_grad for key, param in model.named_parameters()}
    for method in supported_methods(model):
        build_explainer(method, model)(images)
    AGCAM(model).differentiable_maps(images)[0].sum()  # its graph is dropped unused
    assert {key: module.training for key, module in model.named_modules()} == modes
    assert {key: m.fused_attn for key, m in model.named_modules() if hasattr(m, "fused_attn")} == fused
    assert {key: param.requires_grad for key, param in model.named_parameters()} == requires_grad
    assert all(param.grad is None for param in model.parameters())
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


def readout_weights(model: torch.nn.Module, capture, tokens: int, patches: int) -> torch.Tensor:
    """Each token's share of the prediction, written out per readout: (T,)."""
    weights = torch.zeros(tokens)
    if model.global_pool == "token":
        weights[0] = 1.0
    elif model.global_pool == "map":
        probe = capture.probs[-1].detach()[0, :, 0].mean(0)  # (N,) the probe reads the last N tokens
        weights[tokens - len(probe) :] = probe
    else:
        weights[tokens - patches :] = 1.0 / patches
    return weights


@pytest.mark.parametrize("name", ["eva02", "pe_core", "siglip", "vit_reg_gap", "beit", "rope_vit"])
def test_rollouts_read_the_rows_of_the_models_own_readout(name):
    model = tiny_family(name)
    images = images_for(name)
    rollout_maps, gradient_maps = AttentionRollout(model)(images), GradientRollout(model)(images)
    for index, image in enumerate(images):
        capture, logits = capture_attention(model, image[None], detach=False)
        block_probs = [probs for probs in capture.probs if probs.shape[-2] > 1]  # (1, H, T, T) each
        tokens, patches = block_probs[0].shape[-1], rollout_maps[index].numel()
        weights = readout_weights(model, capture, tokens, patches)
        rollout = torch.eye(tokens)
        for probs in block_probs:
            flow = (probs[0].detach().mean(0) + torch.eye(tokens)) / 2
            rollout = (flow / flow.sum(-1, keepdim=True)) @ rollout
        expected = (weights @ rollout)[-patches:].reshape(rollout_maps[index].shape)
        assert torch.allclose(rollout_maps[index], expected, atol=1e-6)

        grads = torch.autograd.grad(logits[0, logits[0].argmax()], block_probs)
        rollout = torch.eye(tokens)
        for probs, grad in zip(block_probs, grads):
            rollout = rollout + (grad[0] * probs[0].detach()).clamp(min=0).mean(0) @ rollout
        expected = (weights @ rollout)[-patches:].reshape(gradient_maps[index].shape)
        assert relative_error(gradient_maps[index], expected) <= 1e-5


@pytest.mark.parametrize("name", ["rope_vit", "eva02", "pe_core", "vit_gap"])
def test_differentiable_maps_equal_the_maps_and_reach_the_weights(name):
    model = tiny_family(name)
    images = images_for(name)
    target = torch.tensor([[1, 2], [3, 0]])
    maps = AGCAM(model).differentiable_maps(images, target)
    assert relative_error(maps.detach(), AGCAM(model)(images, target)) < 1e-5
    qkv = model.blocks[0].attn.qkv.weight  # reaches S (sigmoid) and, through V, dy/dA
    head_grad, qkv_grad = torch.autograd.grad(maps.square().sum(), [model.head.weight, qkv])
    for grad in (head_grad, qkv_grad):  # the head reaches the maps through dy/dA only
        assert torch.isfinite(grad).all() and grad.abs().max() > 0
    assert all(param.grad is None for param in model.parameters())


def test_differentiable_maps_keep_train_mode_and_need_autograd():
    model = tiny_family("vit_gap").train()
    images = images_for("vit_gap")
    maps = AGCAM(model).differentiable_maps(images)  # drop rates are 0: train mode gives the eval values
    assert model.training and all(module.training for module in model.modules())
    assert relative_error(maps.detach(), AGCAM(model)(images)) < 1e-5
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        AGCAM(model).differentiable_maps(images)


REFUSED = {  # cut-down constructors; (error type, words of the reason)
    "swin_tiny_patch4_window7_224": (dict(depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), embed_dim=32), "no global"),
    "xcit_tiny_12_p16_224": (dict(depth=1, embed_dim=48, num_heads=2), "feature channels, not between tokens"),
    "cait_xxs24_224": (dict(depth=1, depth_token_only=1, embed_dim=48, num_heads=2), "talking-heads"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_architectures_without_global_token_attention_are_refused_with_the_reason(name):
    kwargs, reason = REFUSED[name]
    model = timm.create_model(name, pretrained=False, **kwargs)
    for method in METHODS:
        with pytest.raises(UnsupportedModelError, match=reason):
            build_explainer(method, model)
    with pytest.raises(UnsupportedModelError, match=reason):
        check_explainable(model)


def test_unsupported_options_are_refused_by_name_with_the_family_s_reason():
    with pytest.raises(UnsupportedModelError, match="EvaBlock.*rotary position embedding") as refusal:
        TransformerAttribution(tiny_family("rope_vit"))
    assert "relative position bias" not in str(refusal.value)
    with pytest.raises(UnsupportedModelError, match="Beit.*relative position bias") as refusal:
        TransformerAttribution(tiny_family("beit"))
    assert "rotary" not in str(refusal.value)
    with pytest.raises(UnsupportedModelError, match="global_pool='map'"):
        TransformerAttribution(tiny_family("siglip"))
    with pytest.raises(UnsupportedModelError, match="Block 0 uses GluMlp"):
        TransformerAttribution(timm.create_model("vit_small_patch16_224", **TINY, mlp_layer=timm.layers.GluMlp))
    with pytest.raises(UnsupportedModelError, match="global_pool=''"):
        AGCAM(timm.create_model("vit_small_patch16_224", **TINY, global_pool=""))
    with pytest.raises(UnsupportedModelError, match="global_pool=.prr."):
        AGCAM(timm.create_model("vit_small_patch16_224", **TINY, global_pool="prr"))
    with pytest.raises(UnsupportedModelError, match="ParallelScalingBlock"):
        AGCAM(
            timm.create_model(
                "vit_small_patch16_224", **TINY, block_fn=timm.models.vision_transformer.ParallelScalingBlock
            )
        )
    with pytest.raises(ValueError, match="row_weighting"):
        AGCAM(tiny_family("vit_gap"), row_weighting="mean")
