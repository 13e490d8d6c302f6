"""ViTClassifier.configure_model under a ModelParallelStrategy-style device mesh (one gloo process, in-process)."""

import socket

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule

from pipeline.lightning import ViTClassifier

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


@pytest.fixture
def mesh():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    dist.destroy_process_group()


def module(**kwargs) -> ViTClassifier:
    return ViTClassifier("vit_tiny_patch16_224", 4, model_kwargs=TINY_VIT, **kwargs)


def test_configure_model_shards_every_block_then_the_root_once(mesh):
    plain = module()
    plain.configure_model()  # no device mesh (any other strategy): nothing happens
    assert not any(isinstance(m, FSDPModule) for m in plain.modules())

    classifier = module(sharded_param_dtype="bfloat16")
    classifier._device_mesh = mesh
    classifier.configure_model()
    classifier.configure_model()  # validate/test after fit call it again: no second wrapping
    assert isinstance(classifier.model, FSDPModule)
    assert all(isinstance(block, FSDPModule) for block in classifier.model.blocks)
    assert all(param.dtype == torch.float32 for param in classifier.parameters())  # the shards stay fp32
    assert classifier(torch.randn(2, 3, 32, 32)).dtype == torch.bfloat16  # parameters gathered in bf16


def test_configure_model_refuses_guidance_under_fsdp(mesh):
    classifier = module(guidance_weight=1.0)
    classifier._device_mesh = mesh
    with pytest.raises(ValueError, match="guidance_weight must be 0 under ModelParallelStrategy"):
        classifier.configure_model()
