"""The explainers reproduce the official code's maps (tests/data/public_config.npz) in one batched call."""

import pytest
import torch
from conftest import build_reference_model

from pipeline.explain import AGCAM, AttentionRollout, TransformerAttribution


def relative_error(mine: torch.Tensor, ref: torch.Tensor) -> float:
    return ((mine.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.fixture(scope="module")
def inputs(reference):
    images = torch.from_numpy(reference["images"])
    pred = torch.from_numpy(reference["pred"])
    other = torch.from_numpy(reference["other_cls"])
    return images, pred, other


@pytest.mark.parametrize("fused_attn", [False, True])
def test_logits_match_reference(reference, inputs, fused_attn):
    model = build_reference_model(reference, fused_attn)
    with torch.no_grad():
        logits = model(inputs[0])
    assert (logits - torch.from_numpy(reference["logits"])).abs().max() < 1e-4
    assert torch.equal(logits.argmax(-1), inputs[1])


@pytest.mark.parametrize("fused_attn", [False, True])
def test_agcam_reproduces_reference_for_predicted_and_other_class(reference, inputs, fused_attn):
    images, pred, other = inputs
    model = build_reference_model(reference, fused_attn)
    explainer = AGCAM(model)
    predicted = explainer(images)  # default target: the predicted class
    both = explainer(images, torch.stack([pred, other], dim=1))  # (6, 2, 14, 14) from one forward
    assert predicted.shape == (6, 14, 14) and both.shape == (6, 2, 14, 14)
    for mine in (predicted, both[:, 0]):
        assert relative_error(mine, torch.from_numpy(reference["agcam_pred"])) < 1e-4
    assert relative_error(both[:, 1], torch.from_numpy(reference["agcam_other"])) < 1e-4
    assert relative_error(explainer(images, other), torch.from_numpy(reference["agcam_other"])) < 1e-4


def test_agcam_batched_equals_per_image(reference, inputs):
    images, _, other = inputs
    explainer = AGCAM(build_reference_model(reference))
    batched = explainer(images, other)
    single = torch.cat([explainer(images[i : i + 1], other[i : i + 1]) for i in range(len(images))])
    assert relative_error(batched, single) < 1e-5


@pytest.mark.parametrize("fused_attn", [False, True])
def test_rollout_reproduces_reference(reference, inputs, fused_attn):
    maps = AttentionRollout(build_reference_model(reference, fused_attn))(inputs[0])
    assert relative_error(maps, torch.from_numpy(reference["rollout"])) < 1e-4
    single = torch.cat([AttentionRollout(build_reference_model(reference))(inputs[0][i : i + 1]) for i in range(6)])
    assert relative_error(maps, single) < 1e-5


def test_lrp_reproduces_reference_within_its_float32_noise(reference, inputs):
    """Chefer's LRP divides by sums that nearly cancel, so its float32 maps move with kernel rounding.

    Measured here: the same code in float32 and float64 differs by up to 3% of the map's max (image 0),
    and this CPU's plain timm logits already differ from the reference machine's by 2e-5. No float32
    implementation can match the reference to 1e-4 on every image, the official one run here included.
    So the float64 maps (exact arithmetic up to 1e-12) must lie within the float32 noise of the reference:
    max(1e-4, 3 x |float32 - float64|) relative, per map. Broken variants (no residual renormalization,
    no halving at the matrix products, alpha 2 / beta 1) miss by 10% to 1000% and fail this.
    """
    images, pred, other = inputs
    targets = torch.stack([pred, other], dim=1)
    maps32 = TransformerAttribution(build_reference_model(reference))(images, targets)
    maps64 = TransformerAttribution(build_reference_model(reference).double())(images.double(), targets)
    for column, key in enumerate(["lrp_pred_eps1e6", "lrp_other_eps1e6"]):
        ref = torch.from_numpy(reference[key])
        for image in range(len(images)):
            noise = relative_error(maps32[image, column], maps64[image, column])
            error = relative_error(maps64[image, column], ref[image])
            assert error <= max(1e-4, 3 * noise), f"{key}[{image}]: error {error:.2e}, float32 noise {noise:.2e}"
    # Chefer's own final norm uses eps 1e-5; the difference is far below that noise.
    assert (
        relative_error(torch.from_numpy(reference["lrp_pred"]), torch.from_numpy(reference["lrp_pred_eps1e6"])) < 1e-5
    )


def test_lrp_batched_equals_per_image(reference, inputs):
    images, _, other = inputs
    explainer = TransformerAttribution(build_reference_model(reference).double())
    batched = explainer(images.double(), other)
    single = torch.cat([explainer(images[i : i + 1].double(), other[i : i + 1]) for i in range(len(images))])
    assert relative_error(batched, single) < 1e-9
