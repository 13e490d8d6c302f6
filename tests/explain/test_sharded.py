"""Explainers on FSDP2 models (fully_shard on every block and the root, two CPU processes over gloo).

Each process explains its own images; its maps must equal the unsharded model's, and while a block runs only
that block's parameters (and the root's at the ends) may be whole.
"""

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.explain import (
    AGCAM,
    AttentionRollout,
    GradientRollout,
    TransformerAttribution,
    UnsupportedModelError,
    build_explainer,
)
from scripts.bench_fsdp import free_port
from scripts.oracle import relative_error

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2, num_classes=5)
MODELS = {  # name -> timm model, overrides: every AG-CAM readout, and a rotary (Eva) and a relative-bias (Beit) family
    "token": ("vit_small_patch16_224", {}),
    "avg": ("vit_small_patch16_224", dict(class_token=False, global_pool="avg")),
    "max": ("vit_small_patch16_224", dict(global_pool="max")),
    "avgmax": ("vit_small_patch16_224", dict(global_pool="avgmax", reg_tokens=2)),
    "map": ("vit_base_patch16_siglip_224", {}),
    "rope": ("vit_base_patch16_rope_224", {}),
    "beit": ("beit_base_patch16_224", {}),
}
BASELINES = {"rollout": AttentionRollout, "grad_rollout": GradientRollout}  # on the class-token and the GAP ViT


def build(name: str) -> nn.Module:
    model_name, overrides = MODELS[name]
    torch.manual_seed(0)
    return timm.create_model(model_name, pretrained=False, **{**TINY, **overrides}).eval()


def whole_parameter_count(model: nn.Module) -> int:
    """Parameters currently whole (plain tensors with storage) rather than DTensor shards."""
    return sum(
        1
        for param in model.parameters()
        if not isinstance(param, torch.distributed.tensor.DTensor) and param.untyped_storage().size() > 0
    )


def explain_sharded_and_whole(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

        images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(10 + rank))  # its own images
        targets = torch.tensor([[0, 3], [1, 2], [4, 0]])
        for name in MODELS:
            whole, sharded = build(name), build(name)
            for block in sharded.blocks:
                fully_shard(block)
            fully_shard(sharded)
            block_params = sum(1 for _ in sharded.blocks[0].parameters())
            peak = []  # whole parameters seen while each block runs

            def record_whole(module, args, sharded=sharded, peak=peak):
                peak.append(whole_parameter_count(sharded))

            hooks = [block.mlp.register_forward_pre_hook(record_whole) for block in sharded.blocks]
            methods = {"agcam": AGCAM, **(BASELINES if name in ("token", "avg") else {})}
            for method, make in methods.items():
                for target in (None, targets):
                    expected, got = make(whole)(images, target), make(sharded)(images, target)
                    assert relative_error(got, expected) < 1e-5, (name, method, target is not None)
            for hook in hooks:
                hook.remove()
            assert peak and max(peak) == block_params, (name, max(peak), block_params)
            assert whole_parameter_count(sharded) == 0  # everything released after each call
            assert all(param.grad is None for param in sharded.parameters())
        vit = build("token")
        for block in vit.blocks:
            fully_shard(block)
        fully_shard(vit)
        with pytest.raises(UnsupportedModelError, match="VisionTransformer is sharded with fully_shard"):
            TransformerAttribution(vit)(images)
        with pytest.raises(UnsupportedModelError, match="differentiable_maps"):
            AGCAM(vit).differentiable_maps(images)
        fsdp1 = FullyShardedDataParallel(build("token"), device_id=torch.device("cpu"))
        with pytest.raises(
            UnsupportedModelError, match=r"FullyShardedDataParallel \(FSDP1\).*with torch.distributed.fsdp.fully_shard"
        ):
            AGCAM(fsdp1)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_sharded_maps_equal_whole_model_maps_one_block_gathered_at_a_time():
    mp.spawn(explain_sharded_and_whole, args=(free_port(),), nprocs=2, join=True)


def test_wrappers_are_seen_through_or_refused_in_one_line():
    model = build("token")
    images = torch.randn(2, 3, 32, 32)
    expected = AGCAM(model)(images)
    compiled = torch.compile(model)  # explained with its own (uncompiled) modules
    assert relative_error(AGCAM(compiled)(images), expected) < 1e-6
    assert relative_error(build_explainer("lrp", compiled)(images), TransformerAttribution(model)(images)) < 1e-6
    assert relative_error(AGCAM(nn.DataParallel(model))(images), expected) < 1e-6

    class DeepSpeedEngine(nn.Module):  # stands in for deepspeed.DeepSpeedEngine (matched by name)
        def __init__(self, module):
            super().__init__()
            self.module = module

    for wrapped, words in ((DeepSpeedEngine(model), "DeepSpeed's DeepSpeedEngine; pass engine.module"),):
        with pytest.raises(UnsupportedModelError, match=words) as refusal:
            AGCAM(wrapped)
        assert "\n" not in str(refusal.value) and "supported: " in str(refusal.value)
    model.blocks[1] = torch.compile(model.blocks[1])
    with pytest.raises(UnsupportedModelError, match="block 1 is wrapped in OptimizedModule"):
        AGCAM(model)
